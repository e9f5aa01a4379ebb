"""Distillation loss (paper eq. 1, weights from distil-whisper).

    loss = ce_weight * CE(student, labels) + kl_weight * T^2 * KL(p_teacher^T || p_student^T)

with p^T = softmax(logits / T). Both terms are means over the target tokens of the whole
(global) batch: positions with label -100 (forced prefix, padding, dropped rows) carry no
loss. All in f32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxwhisper.config import LossConfig

IGNORE = -100


def token_mask(labels: jax.Array) -> jax.Array:
    """1.0 where a position has a target, [batch, len]."""
    return (labels != IGNORE).astype(jnp.float32)


def cross_entropy_sum(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Summed CE over target tokens. logits [batch, len, vocab], labels [batch, len]."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    safe = jnp.where(labels == IGNORE, 0, labels)
    nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    return jnp.sum(nll * token_mask(labels))


def kl_sum(
    student_logits: jax.Array, teacher_logits: jax.Array, labels: jax.Array, temperature: float
) -> jax.Array:
    """Summed KL(teacher || student) of the temperature-softened distributions over target tokens."""
    t = temperature
    log_ps = jax.nn.log_softmax(student_logits.astype(jnp.float32) / t, axis=-1)
    log_pt = jax.nn.log_softmax(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32) / t, axis=-1)
    kl = jnp.sum(jnp.exp(log_pt) * (log_pt - log_ps), axis=-1)
    return jnp.sum(kl * token_mask(labels))


def distillation_loss(
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    labels: jax.Array,
    temperature: float = LossConfig.temperature,
    ce_weight: float = LossConfig.ce_weight,
    kl_weight: float = LossConfig.kl_weight,
) -> tuple[jax.Array, dict]:
    """The loss and its parts, each a mean over the batch's target tokens.

    Under `jit` with a sharded batch the sums and the token count are global, so this is
    the mean over the global batch, whatever the device count.
    """
    n = jnp.maximum(jnp.sum(token_mask(labels)), 1.0)
    ce = cross_entropy_sum(student_logits, labels) / n
    kl = kl_sum(student_logits, teacher_logits, labels, temperature) / n
    loss = ce_weight * ce + kl_weight * temperature**2 * kl
    return loss, {"ce": ce, "kl": kl, "tokens": n}


def hidden_mse(student_hidden: jax.Array, teacher_hidden: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean squared difference of two [batch, len, embed] hidden states, averaged over the
    embedding and over the batch's target tokens (label -100 positions carry none)."""
    mask = token_mask(labels)
    diff = student_hidden.astype(jnp.float32) - teacher_hidden.astype(jnp.float32)
    sq = jnp.mean(jnp.square(diff), axis=-1)
    return jnp.sum(sq * mask) / jnp.maximum(jnp.sum(mask), 1.0)
