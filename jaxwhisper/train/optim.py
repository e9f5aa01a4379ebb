"""AdamW with warm-up and linear decay, clipping and accumulation (paper section 3.3)."""

from __future__ import annotations

import dataclasses

import flax.traverse_util
import optax


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Attributes:
    learning_rate: peak rate after warm-up.
    warmup_steps: linear warm-up from 0 (the paper: 1000).
    total_steps: the rate decays linearly to 0 at this optimizer step.
    b1, b2, eps: AdamW moments (0.9, 0.999, 1e-8).
    weight_decay: decoupled decay on kernels and embeddings; none on biases, norms, gates' bias.
    clip_norm: global gradient-norm clip (0 disables).
    accumulation_steps: micro-batches per optimizer step (optax.MultiSteps).
    """

    learning_rate: float = 1e-4
    warmup_steps: int = 1000
    total_steps: int = 10000
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: float = 1.0
    accumulation_steps: int = 1


def learning_rate_schedule(cfg: OptimizerConfig) -> optax.Schedule:
    warm = max(1, min(cfg.warmup_steps, cfg.total_steps))
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, cfg.learning_rate, warm),
            optax.linear_schedule(cfg.learning_rate, 0.0, max(1, cfg.total_steps - warm)),
        ],
        [warm],
    )


def decay_mask(params) -> dict:
    """True for weight matrices and embeddings; False for biases, LayerNorm scales, positions."""
    flat = flax.traverse_util.flatten_dict(params)
    return flax.traverse_util.unflatten_dict(
        {k: k[-1] in ("kernel", "embedding", "gate_kernel") for k in flat}
    )


def make_optimizer(cfg: OptimizerConfig) -> optax.GradientTransformation:
    tx = optax.adamw(
        learning_rate_schedule(cfg),
        b1=cfg.b1,
        b2=cfg.b2,
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        mask=decay_mask,
    )
    if cfg.clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), tx)
    if cfg.accumulation_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=cfg.accumulation_steps)
    return tx
