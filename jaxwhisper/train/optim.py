"""AdamW with warm-up and linear decay, clipping and accumulation (paper section 3.3).

Parameters fall in three groups by path: frozen ones (no update, no optimizer state), the
gates (their own rate multiplier) and the rest.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import optax

from jaxwhisper.config import OptimizerConfig

FROZEN, GATE, TRAINED = "frozen", "gate", "trained"


def learning_rate_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Linear warm-up to `cfg.learning_rate`, then linear decay to 0 at optimizer step `total_steps`
    (transformers' `get_linear_schedule_with_warmup`); `warmup_steps=0` starts at the peak."""
    warm = min(cfg.warmup_steps, total_steps)
    decay = optax.linear_schedule(cfg.learning_rate, 0.0, max(1, total_steps - warm))
    if warm == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.learning_rate, warm), decay], [warm])


def _names(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", k)) for k in path)


def decay_mask(params) -> dict:
    """True for weight matrices and embeddings; False for biases, LayerNorm scales, positions."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: _names(path)[-1] in ("kernel", "embedding", "gate_kernel"), params
    )


def is_gate(names: tuple[str, ...]) -> bool:
    return any(n.startswith("gate") for n in names)


def param_groups(params, frozen: Optional[Callable[[tuple[str, ...]], bool]] = None):
    """FROZEN / GATE / TRAINED for every leaf of `params`, by its path of names."""

    def group(path, _):
        names = _names(path)
        if frozen is not None and frozen(names):
            return FROZEN
        return GATE if is_gate(names) else TRAINED

    return jax.tree_util.tree_map_with_path(group, params)


def make_optimizer(
    cfg: OptimizerConfig, total_steps: int, frozen: Optional[Callable[[tuple[str, ...]], bool]] = None
) -> optax.GradientTransformation:
    """AdamW (+ clipping, + accumulation) whose rate reaches 0 after `total_steps` updates.

    Args:
      frozen: `path names -> bool`; those parameters are never updated and hold no state.
    """
    schedule = learning_rate_schedule(cfg, total_steps)

    def adamw(rate):
        return optax.adamw(
            rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask
        )

    mult = cfg.gate_learning_rate_multiplier
    gate_rate = schedule if mult == 1.0 else (lambda step: mult * schedule(step))
    tx = optax.multi_transform(
        {TRAINED: adamw(schedule), GATE: adamw(gate_rate), FROZEN: optax.set_to_zero()},
        lambda params: param_groups(params, frozen),
    )
    if cfg.clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), tx)
    if cfg.accumulation_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=cfg.accumulation_steps)
    return tx
