"""Fake quantization of a Whisper without editing it: weights as a pure function of params,
activations through `nn.intercept_methods` at the points named in `jaxwhisper.quant.config`.

    qparams = quantize_params(params, qcfg)                      # weights, once
    with activation_interceptor(ranges, qcfg, config):           # activations, while tracing
        logits = Whisper(config).apply({"params": qparams}, mel, tokens)

`ranges` ({point: (lo, hi)}) come from `calibrate`: batches through the float model, a
running min/max per point with EMA momentum (the first batch initialises). Calibration turns
the encoder's tiled attention off (it records whole tensors); fake quantization keeps it and
quantizes the scores and probabilities a tile at a time (elementwise, so the same values).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Mapping, Optional

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from jaxwhisper.models.attention import Tapped
from jaxwhisper.models.config import WhisperConfig
from jaxwhisper.models.whisper import Whisper
from jaxwhisper.quant import quantizer
from jaxwhisper.quant.config import QuantConfig

Ranges = dict[str, tuple[float, float]]
_IO_MODULES = (nn.Dense, nn.Conv)  # input and output
_OUT_MODULES = (nn.LayerNorm, nn.Embed)  # output (their inputs are other points' outputs)


def _weight_channel_axis(path: tuple[str, ...], per_channel: bool) -> Optional[int]:
    if not per_channel:
        return None
    # Dense [in, out] and Conv [width, in, out] kernels: per output channel; the token
    # embedding (also the tied output projection) and positions: per row.
    return -1 if path[-1] == "kernel" else 0


def is_quantized_weight(path: tuple[str, ...]) -> bool:
    """Weight matrices, convolution kernels and embeddings; not biases, LayerNorm scales or
    gates (biases are int32 in integer inference; gates stay in float, see config)."""
    if any(p.startswith("gate") for p in path):
        return False
    return path[-1] in ("kernel", "embedding") or (path[-1] == "embed_positions" and path[0] == "decoder")


def quantize_params(params: Mapping, qcfg: QuantConfig) -> dict:
    """Params with every quantized weight replaced by its fake-quantized value. Pure."""
    if not qcfg.weight_bits:
        return params
    flat = flax.traverse_util.flatten_dict(params)
    out = {}
    for path, w in flat.items():
        if is_quantized_weight(path):
            axis = _weight_channel_axis(path, qcfg.weight_per_channel)
            w = quantizer.fake_quant_weight(jnp.asarray(w), qcfg.weight_bits, qcfg.weight_symmetric, axis)
        out[path] = w
    return flax.traverse_util.unflatten_dict(out)


def activation_points(next_fun, args, kwargs, context, on_point: Callable):
    """Calls `on_point(point_name, value)` at each activation point; returns its value."""
    module, method = context.module, context.method_name
    path = "/".join(module.path)
    if isinstance(module, Tapped) and method == "tap":
        name, x = args
        return next_fun(name, on_point(f"{path}/{name}", x))
    if method != "__call__":
        return next_fun(*args, **kwargs)
    if isinstance(module, _IO_MODULES):
        x = on_point(f"{path}/input", args[0])
        return on_point(f"{path}/output", next_fun(x, *args[1:], **kwargs))
    if isinstance(module, _OUT_MODULES):
        return on_point(f"{path}/output", next_fun(*args, **kwargs))
    return next_fun(*args, **kwargs)


STATS = "quant_stats"


MAX_SAMPLE = 1 << 20


def _sample(x: jax.Array) -> jax.Array:
    """x flattened, or an evenly strided subsample of at most MAX_SAMPLE values (encoder
    attention scores are 100M+ values a batch; sorting them all 16 times is not worth it)."""
    flat = x.reshape(-1)
    stride = max(1, -(-flat.shape[0] // MAX_SAMPLE))
    return flat[::stride]


MSE_RATIOS = tuple(1.0 - 0.05 * i for i in range(15))


def batch_range(x: jax.Array, qcfg: QuantConfig) -> jax.Array:
    """[lo, hi] of one batch's activation by the configured estimator.

    minmax_ema: the extremes. percentile: the (100 - p)th and pth percentiles (subsampled).
    mse: the extremes scaled by the ratio in {1, 0.95, ..., 0.3} whose fake quantization has
    the least mean squared error on the (subsampled) batch (the best clipping, for this batch).
    """
    x32 = x.astype(jnp.float32)
    if qcfg.estimator == "minmax_ema":
        return jnp.stack([jnp.min(x32), jnp.max(x32)])
    sample = _sample(x32)
    if qcfg.estimator == "percentile":
        return jnp.percentile(sample, jnp.array([100.0 - qcfg.percentile, qcfg.percentile]))
    lo, hi = jnp.min(x32), jnp.max(x32)
    ratios = jnp.asarray(MSE_RATIOS, jnp.float32)

    def err(r):
        p = quantizer.qparams(r * lo, r * hi, qcfg.act_bits or 8, qcfg.act_symmetric)
        return jnp.mean((quantizer.fake_quant(sample, p) - sample) ** 2)

    best = ratios[jnp.argmin(jax.vmap(err)(ratios))]
    return jnp.stack([best * lo, best * hi])


def stats_interceptor(qcfg: QuantConfig):
    """Sows each point's batch [lo, hi] (by the configured estimator) into the `quant_stats`
    collection (of the module that owns the point; keyed by the full point name)."""

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name == "use_blocked_attention":
            return False  # sown values must be whole tensors, outside the tiles' lax.map

        def on_point(point, x):
            context.module.sow(STATS, point, batch_range(x, qcfg))
            return x

        return activation_points(next_fun, args, kwargs, context, on_point)

    return nn.intercept_methods(interceptor)


def point_quantizer(ranges: Mapping[str, tuple[float, float]], qcfg: QuantConfig, config: WhisperConfig):
    """`on_point(point, x)`: x fake-quantized with the point's calibrated range, or x itself
    where the point is excluded."""

    def on_point(point, x):
        if qcfg.is_excluded(point, config.encoder_layers):
            return x
        if point not in ranges:
            raise KeyError(f"no calibrated range for activation point {point!r}: calibrate this model")
        lo, hi = ranges[point]
        return quantizer.fake_quant(x, quantizer.qparams(lo, hi, qcfg.act_bits, qcfg.act_symmetric))

    return on_point


def activation_interceptor(
    ranges: Mapping[str, tuple[float, float]], qcfg: QuantConfig, config: WhisperConfig
):
    """Fake-quantizes every activation point that is not excluded, with its calibrated range."""
    if not qcfg.act_bits:
        return contextlib.nullcontext()
    on_point = point_quantizer(ranges, qcfg, config)

    def interceptor(next_fun, args, kwargs, context):
        return activation_points(next_fun, args, kwargs, context, on_point)

    return nn.intercept_methods(interceptor)


def make_batch_stats(config: WhisperConfig, qcfg: QuantConfig) -> Callable:
    """`stats(params, mel, tokens) -> {point: [lo, hi]}` of one teacher-forced batch, jitted."""
    model = Whisper(config)

    @jax.jit
    def stats(params, mel, tokens):
        with stats_interceptor(qcfg):
            _, cols = model.apply({"params": params}, mel, tokens, mutable=[STATS])
        flat = flax.traverse_util.flatten_dict(cols[STATS])
        out = {}
        for key, values in flat.items():
            point = key[-1]
            stacked = jnp.stack(values)  # a module called several times: its extremes
            out[point] = jnp.stack([stacked[:, 0].min(), stacked[:, 1].max()])
        return out

    return stats


def calibrate(
    config: WhisperConfig, params, batches: Iterable[tuple[np.ndarray, np.ndarray]], qcfg: QuantConfig
) -> Ranges:
    """Running (EMA) min/max of every activation point over `batches` of (mel, tokens).

    mel: [batch, n_mels, frames]; tokens: [batch, len] decoder inputs (the float model's own
    greedy transcripts, so that the decoder sees what it sees when decoding).
    """
    stats = make_batch_stats(config, qcfg)
    state: dict[str, tuple] = {}
    n = 0
    for mel, tokens in batches:
        for point, mm in jax.device_get(stats(params, mel, tokens)).items():
            state[point] = quantizer.ema_update(state.get(point), mm[0], mm[1], qcfg.momentum)
        n += 1
    if not n:
        raise ValueError("calibration needs at least one batch")
    return {p: (float(lo), float(hi)) for p, (lo, hi) in sorted(state.items())}
