"""SmoothQuant (Xiao et al. 2023) for Whisper: migrate activation outliers into the weights
before post-training quantization, without retraining.

Every pre-LN block feeds each LayerNorm's output X [tokens, d_model] only into linear layers
(`X W`). For a per-channel factor s > 0, `(X / s) (diag(s) W) = X W`, and X / s is folded into
the LayerNorm (scale / s, bias / s), so the float model is unchanged while the activation
channels that carry outliers shrink and the matching weight rows grow:

    s_j = max|X_j| ** alpha / max_i |W_ji| ** (1 - alpha)

with max|X_j| over calibration data and W the consumers' kernels side by side (alpha = 0.5 as
in the paper). Smoothed LayerNorms, and their consumers:
  - each block's `self_attn_layer_norm` -> self-attention q/k/v projections (and the gate);
  - each decoder block's `encoder_attn_layer_norm` -> cross-attention q projection (and gate);
  - each block's `final_layer_norm` -> `mlp/fc1`.
Not smoothed: the encoder's final LayerNorm (it feeds every decoder layer's cross-attention
k/v, whose inputs the paper keeps in float) and the decoder's final LayerNorm (its consumer is
the token embedding, which is also the input lookup table).

    absmax = collect_absmax(config, params, batches)     # {layer_norm_path: [d_model]}
    scales = smoothing_scales(config, params, absmax, alpha=0.5)
    params = apply_smoothing(config, params, scales)      # same float function
"""

from __future__ import annotations

from typing import Iterable, Mapping

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from jaxwhisper.models.config import WhisperConfig
from jaxwhisper.models.whisper import Whisper

Scales = dict[str, np.ndarray]
ABSMAX = "smooth_absmax"
# Scales are clipped so that a dead channel (absmax ~ 0) does not blow its weight row up.
MIN_SCALE = 1e-5


def _gate_kernels(attn: str, config: WhisperConfig) -> list[str]:
    if config.gate == "shared":
        return [f"{attn}/gate_proj/kernel"]
    if config.gate == "per_head":
        return [f"{attn}/gate_kernel"]
    return []


def smoothing_groups(config: WhisperConfig) -> dict[str, list[str]]:
    """{LayerNorm path: the kernel paths it feeds}, paths '/'-joined under params."""
    groups = {}
    for side, n, cross in (
        ("encoder", config.encoder_layers, False),
        ("decoder", config.decoder_layers, True),
    ):
        for i in range(n):
            block = f"{side}/layers_{i}"
            attn = f"{block}/self_attn"
            gated = config if side == "decoder" or config.gated_encoder else config.replace(gate="none")
            groups[f"{block}/self_attn_layer_norm"] = [
                f"{attn}/{p}_proj/kernel" for p in "qkv"
            ] + _gate_kernels(attn, gated)
            if cross:
                attn = f"{block}/encoder_attn"
                gated = config if config.gated_cross_attention else config.replace(gate="none")
                groups[f"{block}/encoder_attn_layer_norm"] = [f"{attn}/q_proj/kernel"] + _gate_kernels(
                    attn, gated
                )
            groups[f"{block}/final_layer_norm"] = [f"{block}/mlp/fc1/kernel"]
    return groups


def _absmax_interceptor(groups: Mapping[str, list[str]]):
    def interceptor(next_fun, args, kwargs, context):
        y = next_fun(*args, **kwargs)
        module = context.module
        path = "/".join(module.path)
        if isinstance(module, nn.LayerNorm) and context.method_name == "__call__" and path in groups:
            a = jnp.abs(y.astype(jnp.float32))
            module.sow(ABSMAX, "absmax", jnp.max(a.reshape(-1, a.shape[-1]), axis=0))
        return y

    return nn.intercept_methods(interceptor)


def make_batch_absmax(config: WhisperConfig):
    """`absmax(params, mel, tokens) -> {LayerNorm path: [d_model]}` of one batch, jitted."""
    model = Whisper(config)
    groups = smoothing_groups(config)

    @jax.jit
    def absmax(params, mel, tokens):
        with _absmax_interceptor(groups):
            _, cols = model.apply({"params": params}, mel, tokens, mutable=[ABSMAX])
        flat = flax.traverse_util.flatten_dict(cols[ABSMAX])
        return {"/".join(k[:-1]): jnp.max(jnp.stack(v), axis=0) for k, v in flat.items()}

    return absmax


def collect_absmax(config: WhisperConfig, params, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> Scales:
    """Per-channel max |LayerNorm output| over all `batches` of (mel [b, n_mels, frames],
    tokens [b, len]), for every smoothed LayerNorm."""
    fn = make_batch_absmax(config)
    out: dict[str, np.ndarray] = {}
    for mel, tokens in batches:
        for path, a in jax.device_get(fn(params, mel, tokens)).items():
            out[path] = a if path not in out else np.maximum(out[path], a)
    if not out:
        raise ValueError("SmoothQuant calibration needs at least one batch")
    return out


def _kernel_rows(path: str, w: np.ndarray, config: WhisperConfig) -> np.ndarray:
    """The kernel as [d_model (input channels), outputs]."""
    if path.endswith("gate_kernel"):  # [heads, head_dim]: input channel h * head_dim + d
        return w.reshape(config.d_model, 1)
    return w


def smoothing_scales(
    config: WhisperConfig, params, absmax: Mapping[str, np.ndarray], alpha: float = 0.5
) -> Scales:
    """s per smoothed LayerNorm [d_model] (formula in the module docstring)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"SmoothQuant alpha must be in [0, 1], got {alpha}")
    flat = {
        "/".join(k): np.asarray(v, np.float32) for k, v in flax.traverse_util.flatten_dict(params).items()
    }
    scales = {}
    for ln, kernels in smoothing_groups(config).items():
        if ln not in absmax:
            raise KeyError(f"no activation absmax for {ln}: collect it on this model")
        w_max = np.max(
            np.abs(np.concatenate([_kernel_rows(k, flat[k], config) for k in kernels], axis=1)), axis=1
        )
        a_max = np.asarray(absmax[ln], np.float32)
        s = np.power(np.maximum(a_max, MIN_SCALE), alpha) / np.power(
            np.maximum(w_max, MIN_SCALE), 1.0 - alpha
        )
        scales[ln] = np.clip(s, MIN_SCALE, None).astype(np.float32)
    return scales


def apply_smoothing(config: WhisperConfig, params, scales: Mapping[str, np.ndarray]) -> dict:
    """Params with each LayerNorm's scale and bias divided by s and its consumers' input rows
    multiplied by s: the same float function. Pure."""
    flat = {"/".join(k): v for k, v in flax.traverse_util.flatten_dict(params).items()}
    groups = smoothing_groups(config)
    for ln, s in scales.items():
        if ln not in groups:
            raise KeyError(f"{ln} is not a smoothed LayerNorm of this model")
        s = jnp.asarray(s, jnp.float32)
        for leaf in ("scale", "bias"):
            p = flat[f"{ln}/{leaf}"]
            flat[f"{ln}/{leaf}"] = (p.astype(jnp.float32) / s).astype(p.dtype)
        for k in groups[ln]:
            w = flat[k]
            # Dense kernels [d_model, out] scale rows; the per-head gate kernel [heads,
            # head_dim] is the input channels themselves.
            factor = s.reshape(w.shape) if k.endswith("gate_kernel") else s[:, None]
            flat[k] = (w.astype(jnp.float32) * factor).astype(w.dtype)
    return flax.traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})
