"""Multi-head attention with optional gating and clipped softmax.

Gated attention (paper eq. 4, Bondarenko et al. 2023):
  `Attn(x) = gate(x) * softmax(Q K^T / sqrt(d_head)) V`, applied per token before the heads
  are merged and before the output projection, with
  `gate(x) = sigmoid(G(x)) / pi_init` and `G` initialised with weights ~ N(0, gate_init_std)
  and bias logit(pi_init), so that a student copied from a teacher starts with gates near 1
  (Bondarenko's fine-tuning mode) and the teacher's function is barely disturbed.

Intermediates are sown into the `intermediates` collection (free unless that collection is
mutable): `attn_probs` [batch, heads, q, k], `context` [batch, q, embed] (gated, before the
output projection), `gate` [batch, q, 1 or heads] and `out` [batch, q, embed].
"""

from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxwhisper.models.config import WhisperConfig

KVCache = dict  # {"k": [batch, max_len, heads, head_dim], "v": same}


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def clipped_softmax(scores: jax.Array, gamma: float, zeta: float) -> jax.Array:
    """`clip((zeta - gamma) * softmax(scores) + gamma, 0, 1)` over the last axis (f32)."""
    probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1)
    if gamma == 0.0 and zeta == 1.0:
        return probs
    return jnp.clip((zeta - gamma) * probs + gamma, 0.0, 1.0)


class MultiHeadAttention(nn.Module):
    """Whisper attention: q/v/out projections with bias, key projection without.

    Attributes:
      config: the architecture config (heads, gate, numerics).
      causal: mask future positions (decoder self-attention).
    """

    config: WhisperConfig
    causal: bool = False

    def setup(self):
        c = self.config
        dense = lambda name, bias=True: nn.Dense(  # noqa: E731
            c.d_model, use_bias=bias, dtype=c.dtype, param_dtype=c.param_dtype, name=name
        )
        self.q_proj = dense("q_proj")
        self.k_proj = dense("k_proj", bias=False)
        self.v_proj = dense("v_proj")
        self.out_proj = dense("out_proj")
        kernel_init = nn.initializers.normal(c.gate_init_std)
        bias_init = nn.initializers.constant(_logit(c.gate_pi_init))
        if c.gate == "shared":
            self.gate_proj = nn.Dense(
                1,
                kernel_init=kernel_init,
                bias_init=bias_init,
                dtype=jnp.float32,
                param_dtype=c.param_dtype,
                name="gate_proj",
            )
        elif c.gate == "per_head":
            self.gate_kernel = self.param("gate_kernel", kernel_init, (c.n_heads, c.head_dim), c.param_dtype)
            self.gate_bias = self.param("gate_bias", bias_init, (c.n_heads,), c.param_dtype)

    def _split(self, x: jax.Array) -> jax.Array:
        return x.reshape(*x.shape[:-1], self.config.n_heads, self.config.head_dim)

    def project_kv(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Keys and values of `x` [batch, len, embed] -> two [batch, len, heads, head_dim]."""
        return self._split(self.k_proj(x)), self._split(self.v_proj(x))

    def _gate(self, x: jax.Array) -> Optional[jax.Array]:
        """Gate values [batch, q, 1 or heads] in f32, or None without a gate."""
        c = self.config
        if c.gate == "none":
            return None
        x32 = x.astype(jnp.float32)
        if c.gate == "shared":
            logits = self.gate_proj(x32)
        else:
            logits = jnp.einsum(
                "bqhd,hd->bqh", self._split(x32), self.gate_kernel.astype(jnp.float32)
            ) + self.gate_bias.astype(jnp.float32)
        return jax.nn.sigmoid(logits) / c.gate_pi_init

    def __call__(
        self,
        x: jax.Array,
        kv: Optional[tuple[jax.Array, jax.Array]] = None,
        cache: Optional[KVCache] = None,
        offset: jax.Array | int = 0,
    ) -> tuple[jax.Array, Optional[KVCache]]:
        """Attends from `x` to itself (kv None) or to precomputed keys/values.

        Args:
          x: queries' input [batch, q, embed] (already layer-normed).
          kv: cross-attention keys and values, each [batch, k, heads, head_dim].
          cache: self-attention cache; the keys/values of `x` are written at `offset`.
          offset: position of x[:, 0] in the sequence (decoding with a cache).

        Returns:
          The output [batch, q, embed] and the updated cache (None without one).
        """
        c = self.config
        q = self._split(self.q_proj(x)) * (c.head_dim**-0.5)
        new_cache = None
        if kv is not None:
            k, v = kv
        else:
            k, v = self.project_kv(x)
            if cache is not None:
                start = (0, offset, 0, 0)
                k = jax.lax.dynamic_update_slice(cache["k"], k.astype(cache["k"].dtype), start)
                v = jax.lax.dynamic_update_slice(cache["v"], v.astype(cache["v"].dtype), start)
                new_cache = {"k": k, "v": v}
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k.astype(q.dtype), preferred_element_type=jnp.float32)
        if self.causal:
            q_pos = offset + jnp.arange(x.shape[1])
            k_pos = jnp.arange(k.shape[1])
            visible = k_pos[None, :] <= q_pos[:, None]
            scores = jnp.where(visible, scores, jnp.finfo(jnp.float32).min)
        probs = clipped_softmax(scores, c.softmax_clip_gamma, c.softmax_clip_zeta)
        self.sow("intermediates", "attn_probs", probs)
        ctx = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(c.dtype), v.astype(c.dtype))
        gate = self._gate(x)
        if gate is not None:
            self.sow("intermediates", "gate", gate)
            ctx = (ctx * gate[..., None]).astype(c.dtype)
        ctx = ctx.reshape(*ctx.shape[:2], c.d_model)
        self.sow("intermediates", "context", ctx)
        out = self.out_proj(ctx)
        self.sow("intermediates", "out", out)
        return out, new_cache
