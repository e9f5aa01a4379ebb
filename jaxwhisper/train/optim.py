"""AdamW with warm-up and linear decay, clipping and accumulation (paper section 3.3)."""

from __future__ import annotations

import flax.traverse_util
import optax

from jaxwhisper.config import OptimizerConfig


def learning_rate_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Linear warm-up to `cfg.learning_rate`, then linear decay to 0 at optimizer step `total_steps`."""
    warm = max(1, min(cfg.warmup_steps, total_steps))
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, cfg.learning_rate, warm),
            optax.linear_schedule(cfg.learning_rate, 0.0, max(1, total_steps - warm)),
        ],
        [warm],
    )


def decay_mask(params) -> dict:
    """True for weight matrices and embeddings; False for biases, LayerNorm scales, positions."""
    flat = flax.traverse_util.flatten_dict(params)
    return flax.traverse_util.unflatten_dict(
        {k: k[-1] in ("kernel", "embedding", "gate_kernel") for k in flat}
    )


def make_optimizer(cfg: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
    """AdamW (+ clipping, + accumulation) whose rate reaches 0 after `total_steps` updates."""
    tx = optax.adamw(
        learning_rate_schedule(cfg, total_steps),
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
