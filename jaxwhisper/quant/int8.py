"""Real INT8 linear layers: int8 weights with their scales, int8 x int8 -> int32 `dot_general`.

Each quantized `nn.Dense` kernel is stored as int8 codes with a float scale and an integer
zero point per tensor (or per output channel), from the same ranges as fake quantization.
At run time an interceptor replaces the Dense call: the input is quantized to int8 with its
calibrated range, multiplied by the int8 kernel with int32 accumulation, and dequantized:

    y = s_x * s_w * (sum_k qx qw - zw * sum_k qx - zx * sum_k qw + K * zx * zw) + b

where q = code - 128 and z = zero point - 128 (asymmetric uint8 grids shifted to int8). In
exact arithmetic this equals fake quantization of x and W followed by a float matmul; the
difference is only the float rounding of the latter. Everything else (attention matmuls,
residuals, LayerNorms, convolutions) keeps its fake quantization.
"""

from __future__ import annotations

import io
from typing import Mapping

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from jaxwhisper.models.config import WhisperConfig
from jaxwhisper.quant import fakequant, quantizer
from jaxwhisper.quant.config import QuantConfig

Int8Kernels = dict[str, dict[str, jax.Array]]


def int8_kernels(params: Mapping, qcfg: QuantConfig) -> Int8Kernels:
    """{Dense module path: {"q": int8 [in, out], "scale": f32, "zero": int32, "col_sum": int32 [out]}}
    for every quantized Dense kernel (conv kernels and embeddings are not Dense: fake-quantized)."""
    if qcfg.weight_bits != 8 or qcfg.weight_symmetric:
        raise ValueError("real INT8 execution needs 8-bit asymmetric weights (the paper's w8)")
    out = {}
    for path, w in flax.traverse_util.flatten_dict(params).items():
        if path[-1] != "kernel" or np.ndim(w) != 2 or not fakequant.is_quantized_weight(path):
            continue
        w = jnp.asarray(w, jnp.float32)
        axis = -1 if qcfg.weight_per_channel else None
        p = quantizer.qparams(*quantizer.channel_range(w, axis), 8)
        q = (quantizer.quantize(w, p) - 128).astype(jnp.int8)
        zero = (p.zero_point - 128).astype(jnp.int32).reshape(-1)
        out["/".join(path[:-1])] = {
            "q": q,
            "scale": p.scale.reshape(-1).astype(jnp.float32),
            "zero": zero,
            "col_sum": jnp.sum(q.astype(jnp.int32), axis=0),
        }
    return out


def int8_dense(x: jax.Array, k: Mapping[str, jax.Array], x_range: tuple[float, float], bias) -> jax.Array:
    """The int8 Dense: x [..., in] float -> [..., out] float."""
    px = quantizer.qparams(*x_range, 8)
    qx = (quantizer.quantize(x, px) - 128).astype(jnp.int8)
    zx = (px.zero_point - 128).astype(jnp.int32)
    acc = jax.lax.dot_general(
        qx, k["q"], (((qx.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.int32
    )  # [..., out] int32, exact
    row_sum = jnp.sum(qx.astype(jnp.int32), axis=-1, keepdims=True)
    n_in = qx.shape[-1]
    acc = acc - k["zero"] * row_sum - zx * k["col_sum"] + n_in * zx * k["zero"]
    y = acc.astype(jnp.float32) * (px.scale * k["scale"])
    if bias is not None:
        y = y + bias.astype(jnp.float32)
    return y.astype(x.dtype)


def int8_interceptor(kernels: Int8Kernels, ranges, qcfg: QuantConfig, config: WhisperConfig):
    """Fake quantization everywhere (as `fakequant.activation_interceptor`), except that Dense
    layers with int8 kernels and a quantized input run as int8 x int8 -> int32."""

    def on_point(point, x):
        if qcfg.is_excluded(point, config.encoder_layers):
            return x
        lo, hi = ranges[point]
        return quantizer.fake_quant(x, quantizer.qparams(lo, hi, qcfg.act_bits, qcfg.act_symmetric))

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        path = "/".join(module.path)
        if (
            isinstance(module, nn.Dense)
            and context.method_name == "__call__"
            and path in kernels
            and not qcfg.is_excluded(f"{path}/input", config.encoder_layers)
        ):
            bias = module.variables["params"].get("bias")
            y = int8_dense(args[0], kernels[path], ranges[f"{path}/input"], bias)
            return on_point(f"{path}/output", y)
        return fakequant._points(next_fun, args, kwargs, context, on_point)

    return nn.intercept_methods(interceptor)


def serialized_size(kernels: Int8Kernels, params: Mapping) -> tuple[int, int]:
    """(bytes of the INT8 model, bytes of the float model) as .npz: int8 kernels with their
    scales, zero points and column sums plus every other parameter in float32, against all
    parameters in float32."""

    def nbytes(arrays: dict) -> int:
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        return buf.tell()

    flat = {"/".join(k): v for k, v in flax.traverse_util.flatten_dict(params).items()}
    rest = {k: v for k, v in flat.items() if not (k.endswith("/kernel") and k[: -len("/kernel")] in kernels)}
    int8 = {f"{m}/{name}": v for m, d in kernels.items() for name, v in d.items()}
    return nbytes({**int8, **rest}), nbytes(flat)
