"""Uniform affine quantization (paper eq. 2, Jacob et al. 2018): the math, as pure functions.

    x_q = s * (clamp(round(x / s) + z, q_min, q_max) - z)

Asymmetric (the paper's default): the grid is [0, 2^b - 1] with a zero point z, over a range
[lo, hi] first widened to include 0 (so that 0, padding and ReLU-like zeros, is exact):
s = (hi - lo) / (2^b - 1), z = round(-lo / s). Symmetric: z = 0, the grid is
[-(2^(b-1) - 1), 2^(b-1) - 1] and s = max(|lo|, |hi|) / (2^(b-1) - 1).

Ranges come from the full min/max of a weight tensor (per tensor, or per output channel), or
from calibration for activations (`ema_update`: the first batch initialises, then
`m <- momentum * m + (1 - momentum) * batch_m`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class QParams(NamedTuple):
    """Scale and zero point (broadcastable against the tensor) and the integer grid."""

    scale: jax.Array
    zero_point: jax.Array
    q_min: int
    q_max: int


def grid(bits: int, symmetric: bool) -> tuple[int, int]:
    if not 2 <= bits <= 16:
        raise ValueError(f"bit width must be in [2, 16], got {bits}")
    if symmetric:
        return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def qparams(lo: jax.Array, hi: jax.Array, bits: int, symmetric: bool = False) -> QParams:
    """Scale and zero point of the range [lo, hi] (arrays for per-channel ranges)."""
    q_min, q_max = grid(bits, symmetric)
    lo = jnp.minimum(jnp.asarray(lo, jnp.float32), 0.0)
    hi = jnp.maximum(jnp.asarray(hi, jnp.float32), 0.0)
    if symmetric:
        scale = jnp.maximum(-lo, hi) / q_max
        zero = jnp.zeros_like(scale)
    else:
        scale = (hi - lo) / (q_max - q_min)
        zero = None
    # An all-zero range: any positive scale represents it exactly.
    scale = jnp.where(scale > 0, scale, 1.0)
    if zero is None:
        zero = jnp.clip(jnp.round(-lo / scale), q_min, q_max)
    return QParams(scale, zero, q_min, q_max)


def quantize(x: jax.Array, p: QParams) -> jax.Array:
    """Integer codes (as float32 holding integers) of x on the grid of p."""
    return jnp.clip(jnp.round(x.astype(jnp.float32) / p.scale) + p.zero_point, p.q_min, p.q_max)


def dequantize(q: jax.Array, p: QParams) -> jax.Array:
    return (q - p.zero_point) * p.scale


def fake_quant(x: jax.Array, p: QParams) -> jax.Array:
    """Quantize-dequantize, returned in x's dtype."""
    return dequantize(quantize(x, p), p).astype(x.dtype)


def channel_range(w: jax.Array, channel_axis: int | None) -> tuple[jax.Array, jax.Array]:
    """Full min/max of w, over everything (None) or per index of `channel_axis` (kept as a
    size-1-elsewhere shape so that it broadcasts against w)."""
    if channel_axis is None:
        return jnp.min(w), jnp.max(w)
    axes = tuple(i for i in range(w.ndim) if i != channel_axis % w.ndim)
    return jnp.min(w, axis=axes, keepdims=True), jnp.max(w, axis=axes, keepdims=True)


def fake_quant_weight(w: jax.Array, bits: int, symmetric: bool, channel_axis: int | None) -> jax.Array:
    """Weight quantization over its full range, per tensor or per channel."""
    lo, hi = channel_range(w.astype(jnp.float32), channel_axis)
    return fake_quant(w, qparams(lo, hi, bits, symmetric))


def ema_update(
    state: tuple[jax.Array, jax.Array] | None, batch_min: jax.Array, batch_max: jax.Array, momentum: float
) -> tuple[jax.Array, jax.Array]:
    """Running (min, max): the first batch initialises; then an exponential moving average."""
    if state is None:
        return batch_min, batch_max
    lo, hi = state
    return momentum * lo + (1 - momentum) * batch_min, momentum * hi + (1 - momentum) * batch_max
