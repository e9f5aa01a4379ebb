"""Low-precision matmuls that accumulate in float32.

A bfloat16 `nn.Dense` as Flax builds it asks XLA for a bfloat16 dot; on CPU that runs below
the float32 rate (81-115 GFLOP/s against 127-173 on tiny.en's shapes, AMD EPYC with
avx512_bf16, jax 0.10.2). The same bfloat16 operands with a float32 result
(`preferred_element_type=float32`) take the fast bf16 x bf16 -> f32 kernel (181-290 GFLOP/s)
and round once, after the sum, instead of returning a bfloat16 sum. tiny.en's encoder
forward, batch 8: f32 2.91 s, Flax's bf16 Dense 2.50 s, this 1.71 s (`bench/bf16_matmul.py`,
one run, interleaved, min of 5). Float32 models are untouched: `dense` then builds the plain
`nn.Dense`.

Backward: both gradients are bf16 x bf16 matmuls with float32 sums too (see
`_dense_dot_bwd`); the kernel's gradient stays float32.

The float32 result is kept, not rounded back to bf16 after the bias: the residual stream,
GELU and the gates then run in float32 and each matmul rounds its operands to bf16 once.
Measured on tiny.en's encoder (batch 8): that was faster than rounding every Dense output to
bf16 (2.65 / 2.53 s against 2.79 / 3.41 s in two runs while other jobs loaded the 2 cores;
f32 3.7-4.2 s, Flax's bf16 Dense 3.7-5.0 s) and closer to float32 (relative L2 distance
of the encoder output 1.0e-2 against 1.3e-2). Keys, values and queries are cast to bf16 by
their callers, as einsum operands.

Layers stay `nn.Dense` instances with the usual `kernel`/`bias` parameters, so checkpoints,
loaders and the quantization interceptors (which match `nn.Dense` calls) see no difference.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxwhisper.models.config import WhisperConfig


def is_low_precision(dtype: Any) -> bool:
    """True for compute dtypes narrower than float32 (bfloat16, float16)."""
    return jnp.dtype(dtype) != jnp.float32


def _dense_dims(ndim: int):
    """Flax Dense's contraction: the last axis of x [..., in] with axis 0 of the kernel."""
    return (((ndim - 1,), (0,)), ((), ()))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _dense_dot(x: jax.Array, kernel: jax.Array, precision) -> jax.Array:
    return _dense_dot_fwd(x, kernel, precision)[0]


def _dense_dot_fwd(x, kernel, precision):
    k = kernel.astype(x.dtype)
    if math.prod(x.shape[:-1]) == 1:
        # A single row gets a second (zero) one, and the product is kept whole: XLA:CPU
        # computes a bf16 matrix-vector product by converting the whole kernel to float32
        # at every call (tiny.en's decoder, prefilled for one long-form window at a time,
        # converted 8 ms of weights per window).
        flat = jnp.pad(x.reshape(1, x.shape[-1]), ((0, 1), (0, 0)))
        y = jax.lax.dot_general(
            flat, k, _dense_dims(2), precision=precision, preferred_element_type=jnp.float32
        )
        y = jax.lax.optimization_barrier(y)[:1].reshape(*x.shape[:-1], k.shape[-1])
    else:
        y = jax.lax.dot_general(
            x, k, _dense_dims(x.ndim), precision=precision, preferred_element_type=jnp.float32
        )
    return y, (x, k, jnp.zeros((0,), kernel.dtype))


def _dense_dot_bwd(precision, res, g):
    # The cotangent is rounded to the compute dtype, so that the two backward matmuls are
    # bf16 x bf16 with float32 sums as well. JAX's own transpose of a dot with a float32
    # result multiplies the float32 cotangent by the bf16 operand, which XLA runs at the
    # float32 rate: the bf16 MLP's forward + backward was slower (0.77 s) than with Flax's
    # bf16 Dense (0.61 s); this way 0.48 s (f32 0.82 s; [8, 1500, 384] input, 2 cores).
    x, k, kernel_like = res
    g = g.astype(x.dtype)
    lead = tuple(range(x.ndim - 1))
    dx = jax.lax.dot_general(
        g, k, (((x.ndim - 1,), (1,)), ((), ())), precision=precision, preferred_element_type=jnp.float32
    )
    # Summed over every row in float32, and kept so for a float32 kernel: the weight
    # gradient is not rounded to bf16.
    dk = jax.lax.dot_general(
        x, g, ((lead, lead), ((), ())), precision=precision, preferred_element_type=jnp.float32
    )
    return dx.astype(x.dtype), dk.astype(kernel_like.dtype)


_dense_dot.defvjp(_dense_dot_fwd, _dense_dot_bwd)


def f32_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """`jax.lax.dot_general` with a float32 result (products summed in float32), for Flax's
    Dense: the kernel `rhs` is cast to the dtype of `lhs` here, and the backward pass
    computes both gradients with bf16 operands and float32 sums (the kernel's stays float32).
    """
    del preferred_element_type  # always float32: that is the point of this function
    if dimension_numbers != _dense_dims(lhs.ndim):
        return jax.lax.dot_general(
            lhs,
            rhs.astype(lhs.dtype),
            dimension_numbers,
            precision=precision,
            preferred_element_type=jnp.float32,
        )
    return _dense_dot(lhs, rhs, precision)


def _promote(inputs, kernel, bias, dtype=None):
    """Inputs in the compute dtype; the kernel as stored (f32_dot_general casts it, so that
    its gradient stays float32); the bias float32, since it is added to the float32 sum
    (rounding it to bfloat16 first would only lose digits)."""
    x = None if inputs is None else jnp.asarray(inputs, dtype)
    return x, kernel, None if bias is None else jnp.asarray(bias, jnp.float32)


def dense(features: int, dtype: Any, param_dtype: Any, **kwargs) -> nn.Dense:
    """An `nn.Dense`; in a low-precision dtype its dot accumulates and returns float32.

    Args:
      features: output size.
      dtype: compute dtype. float32 gives Flax's own Dense, unchanged.
      param_dtype: parameter dtype.
      **kwargs: other `nn.Dense` fields (name, use_bias, initialisers).

    Returns:
      The module. For x [..., in] it returns [..., features]: float32 in every case
      (bf16 x bf16 products summed in float32, plus the float32 bias); callers cast to the
      compute dtype where the next op wants it.
    """
    if not is_low_precision(dtype):
        return nn.Dense(features, dtype=dtype, param_dtype=param_dtype, **kwargs)
    return nn.Dense(
        features,
        dtype=dtype,
        param_dtype=param_dtype,
        dot_general=f32_dot_general,
        promote_dtype=_promote,
        **kwargs,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def tied_logits(x: jax.Array, embedding: jax.Array, dtype: Any) -> jax.Array:
    """The output projection tied to the token embedding: x [..., embed] times embedding
    [vocab, embed] transposed -> logits [..., vocab] in float32, operands in `dtype`.

    Written out for its backward pass: the embedding's gradient is computed as
    `(x^T g)^T`, a [embed, vocab] product transposed, instead of XLA's `g^T x`, for which
    XLA:CPU first copies the whole [vocab, tokens] logit gradient into a transposed layout:
    the loss and projection's forward + backward for 768 tokens of tiny.en took 1.42 s that
    way and 0.63 s this way (Sapphire Rapids, 2 cores). In a low-precision dtype both
    backward products take the rounded cotangent and sum in float32, as `_dense_dot_bwd`.
    Not `_dense_dot(x, embedding.T)`: its kernel gradient is transposed outside it, where
    XLA folds the transpose into the bf16 product and then cannot run it ("Unsupported
    element type for DotThunk: BF16 x BF16 = F32"); the barrier below prevents that.
    """
    return _tied_fwd(x, embedding, dtype)[0]


# Up to this many rows (decoding steps) the projection is computed as `E x^T`, then the
# small result transposed: with the table as the left operand XLA:CPU reads it in its
# stored layout, where as the right operand of `x E^T` it first copies the whole table
# into a transposed layout, at every call of a decoding program (tiny.en bf16: ~14 ms a
# call). Above it (training's thousands of rows) the transposed result would be the large
# copy instead.
_TABLE_LEFT_ROWS = 64


def _tied_fwd(x, embedding, dtype):
    xd, ed = x.astype(dtype), embedding.astype(dtype)
    rows = math.prod(x.shape[:-1])
    if rows <= _TABLE_LEFT_ROWS:
        # At least two columns, and the product kept whole (XLA would otherwise slice it
        # down to the columns used, e.g. 2 of a prefill's 3): XLA:CPU computes a bf16
        # product with a single column by converting the whole table to float32 (20 ms
        # against 1.1 ms for 2-16 columns).
        flat = jnp.pad(xd.reshape(rows, x.shape[-1]), ((0, max(0, 2 - rows)), (0, 0)))
        y = jax.lax.dot_general(ed, flat, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
        y = jax.lax.optimization_barrier(y)[:, :rows]
        y = y.T.reshape(*x.shape[:-1], embedding.shape[0])
    else:
        dims = (((x.ndim - 1,), (1,)), ((), ()))
        y = jax.lax.dot_general(xd, ed, dims, preferred_element_type=jnp.float32)
    return y, (xd, ed, jnp.zeros((0,), x.dtype), jnp.zeros((0,), embedding.dtype))


def _tied_bwd(dtype, res, g):
    xd, ed, x_like, e_like = res
    g = g.astype(dtype)
    lead = tuple(range(xd.ndim - 1))
    dx = jax.lax.dot_general(g, ed, (((g.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.float32)
    de_t = jax.lax.dot_general(xd, g, ((lead, lead), ((), ())), preferred_element_type=jnp.float32)
    # The barrier keeps XLA from folding the transpose into the product's output layout
    # (which would be the transposed copy again, and in bf16 a product XLA:CPU cannot run).
    de = jax.lax.optimization_barrier(de_t).T
    return dx.astype(x_like.dtype), de.astype(e_like.dtype)


tied_logits.defvjp(_tied_fwd, _tied_bwd)


class Embed(nn.Embed):
    """`nn.Embed` that gathers rows, then casts them to the compute dtype (the same values
    as Flax's cast of the whole table, then gather). XLA:CPU gathers a bfloat16 table by
    converting all of it to float32; inside a decoding loop that conversion (tiny.en's
    51864 x 384 token embedding, ~15-28 ms) is hoisted out of the loop and paid at every
    call of the program. A float32 table is gathered as it is."""

    def __call__(self, inputs: jax.Array) -> jax.Array:
        if not jnp.issubdtype(inputs.dtype, jnp.integer):
            raise ValueError("Input type must be an integer or unsigned integer.")
        return jnp.take(self.embedding, inputs, axis=0).astype(self.dtype or self.embedding.dtype)


# The layers built by `dense` (kernels cast to the compute dtype at every use); the gates'
# projections are float32 Dense layers and keep their kernels as they are.
CAST_KERNELS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def inference_variables(params: dict, config: WhisperConfig) -> dict:
    """The variables to decode with: `{"params": ...}` plus, in a low-precision model, the
    operands it would cast at every use stored cast. The kernels of the `dense` layers are
    stored in the compute dtype; the token embedding stays float32 (its lookup gathers
    float32 rows, see `Embed`) and its copy in the compute dtype, for the tied output
    projection, is the `cast` collection's `decoder/embedding` (`TextDecoder.output_logits`).
    Same results (a cast to the dtype a value already has changes nothing), but a decoding
    program no longer converts them at each call: tiny.en in bf16 converted its 51864 x 384
    table (and copied it into the projection's layout) for ~30 ms per call, which long-form
    decoding, calling the decoder once per window, paid dozens of times. Float32 models
    get their params as they are.
    """
    if not is_low_precision(config.dtype):
        return {"params": params}
    dtype = jnp.dtype(config.dtype)

    def cast(path, leaf):
        names = [getattr(k, "key", str(k)) for k in path]
        return leaf.astype(dtype) if names[-1] == "kernel" and names[-2] in CAST_KERNELS else leaf

    table = params["decoder"]["embed_tokens"]["embedding"].astype(dtype)
    return {
        "params": jax.tree_util.tree_map_with_path(cast, params),
        "cast": {"decoder": {"embedding": table}},
    }


def inference_config(config: WhisperConfig, platform: str) -> WhisperConfig:
    """The config to decode with on `platform` ("cpu", "gpu", "tpu").

    On CPU a low-precision model keeps decoding's keys and values (cross-attention and the
    self-attention cache) in float32 and runs the per-step attention products in float32:
    XLA:CPU computes a bf16 product with one query row on a slow path. One cross-attention
    of a tiny.en decoding step (batch 8, 1500 keys) took 9.2 ms with bf16 operands and
    0.83 ms in float32; the whole step 59.8 ms against 22.9 ms (Sapphire Rapids, 2 cores).
    The encoder and every Dense layer keep the bf16 operands. Accelerators keep bf16 keys
    and values (half the memory and bandwidth of the decoding step's largest reads).
    """
    if platform == "cpu" and is_low_precision(config.dtype) and config.kv_dtype is None:
        return config.replace(kv_dtype="float32")
    return config
