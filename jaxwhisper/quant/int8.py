"""Real INT8 linear layers: int8 weights with their scales, int8 x int8 -> int32 `dot_general`.

Each quantized `nn.Dense` kernel is stored as int8 codes with a float scale and an integer
zero point per tensor (or per output channel), from the same ranges as fake quantization.
At run time an interceptor replaces the Dense call: the input is quantized to int8 with its
calibrated range, multiplied by the int8 kernel with int32 accumulation, and dequantized:

    y = s_x * s_w * (sum_k qx qw - zw * sum_k qx - zx * sum_k qw + K * zx * zw) + b

where q = code - 128 and z = zero point - 128 (asymmetric uint8 grids shifted to int8).

Fake quantization of the same Dense layers uses `emulated_dense`: the same integer sum in
float32 on integer-valued operands, which is exact (so bitwise equal to the int8 result) while
partial sums stay below 2^24. Quantize-dequantize followed by a float matmul would differ from
the int8 layer by float rounding, and an 8-bit requantization of the output turns some of
those last-bit differences into whole steps: with tiny.en that changed 28 of 59 greedy
transcripts (WER 21.9 vs 18.7). The decoder's token embedding is stored as int8 too: its
lookup dequantizes rows, and the tied output projection (logits) is an integer Dense whose
input is the final LayerNorm's output. Everything else (attention matmuls, residuals,
LayerNorms, convolutions, positional embeddings) is fake-quantized alike in both.
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


def _shift(symmetric: bool) -> int:
    # Asymmetric grids [0, 2^b - 1] are stored shifted by 128 into int8; symmetric ones fit.
    return 0 if symmetric else 128


# The decoder's token embedding, which is also its output projection (tied), and the
# activation point that projection reads.
EMBEDDING = "decoder/embed_tokens"
LOGITS_INPUT = "decoder/layer_norm/output"


def _kernel(w: jax.Array, qcfg: QuantConfig) -> dict[str, jax.Array]:
    """One Dense-shaped kernel w [in, out] as int8 codes, per tensor or per output channel."""
    shift = _shift(qcfg.weight_symmetric)
    axis = -1 if qcfg.weight_per_channel else None
    p = quantizer.qparams(*quantizer.channel_range(w, axis), qcfg.weight_bits, qcfg.weight_symmetric)
    q = (quantizer.quantize(w, p) - shift).astype(jnp.int8)
    return {
        "q": q,
        "scale": p.scale.reshape(-1).astype(jnp.float32),
        "zero": (p.zero_point - shift).astype(jnp.int32).reshape(-1),
        "col_sum": jnp.sum(q.astype(jnp.int32), axis=0),
    }


def int8_kernels(params: Mapping, qcfg: QuantConfig) -> Int8Kernels:
    """{Dense path: {"q": int8 [in, out], "scale": f32 [out | 1], "zero": int32 [out | 1],
    "col_sum": int32 [out]}} for every quantized Dense kernel (weights of at most 8 bits),
    from the kernel's full range as in `fakequant.quantize_params`; q - zero = code - zero
    point. The decoder's token embedding [vocab, embed] is stored the same way, transposed
    ([embed, vocab], one channel per token, as `fakequant` quantizes its rows): its lookup
    and the tied output projection both read it. Convolution kernels and the positional
    embeddings stay fake-quantized."""
    if not 2 <= qcfg.weight_bits <= 8:
        raise ValueError(f"int8 kernels need weights of 2 to 8 bits, got {qcfg.weight_bits}")
    out = {}
    for path, w in flax.traverse_util.flatten_dict(params).items():
        if not fakequant.is_quantized_weight(path) or np.ndim(w) != 2:
            continue
        name = "/".join(path[:-1])
        if path[-1] == "kernel":
            out[name] = _kernel(jnp.asarray(w, jnp.float32), qcfg)
        elif path[-1] == "embedding" and name == EMBEDDING:
            out[name] = _kernel(jnp.asarray(w, jnp.float32).T, qcfg)
    return out


def embedding_rows(k, tokens: jax.Array, param_dtype, dtype) -> jax.Array:
    """The fake-quantized embedding rows of `tokens` [...] -> [..., embed], from the int8
    codes of `int8_kernels` (bitwise the values `fakequant.quantize_params` gives)."""
    codes = jnp.moveaxis(jnp.take(k["q"], tokens, axis=1), 0, -1).astype(jnp.int32)
    per_token = k["scale"].shape[0] > 1
    zero = jnp.take(k["zero"], tokens)[..., None] if per_token else k["zero"]
    scale = jnp.take(k["scale"], tokens)[..., None] if per_token else k["scale"]
    return ((codes - zero).astype(jnp.float32) * scale).astype(param_dtype).astype(dtype)


def _input_codes(x, x_range, qcfg: QuantConfig):
    px = quantizer.qparams(*x_range, qcfg.act_bits, qcfg.act_symmetric)
    shift = _shift(qcfg.act_symmetric)
    return quantizer.quantize(x, px) - shift, (px.zero_point - shift), px.scale


def _finish(acc_f32, x_scale, k, bias, dtype):
    y = acc_f32 * (x_scale * k["scale"])
    if bias is not None:
        y = y + bias.astype(jnp.float32)
    return y.astype(dtype)


def int8_dense(x: jax.Array, k, x_range: tuple[float, float], bias, qcfg: QuantConfig) -> jax.Array:
    """The real int8 Dense: x [..., in] float -> [..., out] float, int32 accumulation."""
    codes, zx, sx = _input_codes(x, x_range, qcfg)
    qx = codes.astype(jnp.int8)
    zx = zx.astype(jnp.int32)
    acc = jax.lax.dot_general(
        qx, k["q"], (((qx.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.int32
    )
    row_sum = jnp.sum(qx.astype(jnp.int32), axis=-1, keepdims=True)
    acc = acc - k["zero"] * row_sum - zx * k["col_sum"] + qx.shape[-1] * zx * k["zero"]
    return _finish(acc.astype(jnp.float32), sx, k, bias, x.dtype)


def emulated_dense(x: jax.Array, k, x_range: tuple[float, float], bias, qcfg: QuantConfig) -> jax.Array:
    """The same Dense in float32 on integer-valued operands (code - zero point): exact, and so
    bitwise equal to `int8_dense`, while no partial sum exceeds 2^24 in magnitude."""
    codes, zx, sx = _input_codes(x, x_range, qcfg)
    a = codes - zx
    b = k["q"].astype(jnp.float32) - k["zero"].astype(jnp.float32)
    acc = jax.lax.dot_general(a, b, (((a.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.float32)
    return _finish(acc, sx, k, bias, x.dtype)


def integer_dense_interceptor(
    kernels: Int8Kernels, ranges, qcfg: QuantConfig, config: WhisperConfig, real: bool
):
    """Fake quantization everywhere (as `fakequant.activation_interceptor`), except that Dense
    layers with integer kernels and a quantized input compute in the integer domain: as
    int8 x int8 -> int32 (`real`) or emulated exactly in float32."""
    dense = int8_dense if real else emulated_dense
    on_point = fakequant.point_quantizer(ranges, qcfg, config)

    def interceptor(next_fun, args, kwargs, context):
        module, method = context.module, context.method_name
        path = "/".join(module.path)
        if (
            isinstance(module, nn.Dense)
            and method == "__call__"
            and path in kernels
            and not qcfg.is_excluded(f"{path}/input", config.encoder_layers)
        ):
            bias = module.variables["params"].get("bias")
            y = dense(args[0], kernels[path], ranges[f"{path}/input"], bias, qcfg)
            return on_point(f"{path}/output", y)
        if isinstance(module, nn.Embed) and method == "__call__" and path in kernels:
            y = embedding_rows(kernels[path], args[0], module.param_dtype, module.dtype)
            return on_point(f"{path}/output", y)
        if (
            method == "output_logits"
            and f"{path}/embed_tokens" in kernels
            and not qcfg.is_excluded(LOGITS_INPUT, config.encoder_layers)
        ):
            # Its input is the final LayerNorm's output, already on that point's grid.
            x = args[0].astype(jnp.float32)
            return dense(x, kernels[f"{path}/embed_tokens"], ranges[LOGITS_INPUT], None, qcfg)
        return fakequant.activation_points(next_fun, args, kwargs, context, on_point)

    return nn.intercept_methods(interceptor)


def serialized_size(kernels: Int8Kernels, params: Mapping) -> tuple[int, int]:
    """(bytes of the INT8 model, bytes of the float model) as .npz: int8 kernels (the token
    embedding among them) with their scales, zero points and column sums plus every other
    parameter in float32 (the biases of the int8 layers too), against all parameters in
    float32."""

    def nbytes(arrays: dict) -> int:
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        return buf.tell()

    flat = {"/".join(k): v for k, v in flax.traverse_util.flatten_dict(params).items()}
    stored = {f"{m}/{leaf}" for m in kernels for leaf in ("kernel", "embedding")}
    rest = {k: v for k, v in flat.items() if k not in stored}
    int8 = {f"{m}/{name}": v for m, d in kernels.items() for name, v in d.items()}
    return nbytes({**int8, **rest}), nbytes(flat)
