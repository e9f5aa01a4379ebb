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

import functools
import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxwhisper.models import precision
from jaxwhisper.models.config import WhisperConfig
from jaxwhisper.spmd import by_rows

# Keys and values are kept head-major, [batch, heads, len, head_dim], so that the per-step
# decoder matmuls read them in place (a [batch, len, heads, head_dim] layout made XLA
# transpose the whole cross-attention cache at every decoding step).
KVCache = dict  # {"k": [batch, heads, max_len, head_dim], "v": same}


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _query_block(length: int, target: int = 512) -> int:
    """The largest divisor of `length` not above `target` (1500 -> 500)."""
    return max(b for b in range(1, min(length, target) + 1) if length % b == 0)


def cache_buckets(length: int, smallest: int = 64) -> tuple[int, ...]:
    """Prefix lengths of a self-attention cache that a decoding step may attend over:
    powers of two from `smallest`, then the whole cache (448 -> 64, 128, 256, 448)."""
    sizes = []
    size = smallest
    while size < length:
        sizes.append(size)
        size *= 2
    return tuple(sizes) + (length,)


def _write_cache(cache: jax.Array, x: jax.Array, offset) -> jax.Array:
    """`cache` [batch, heads, len, head_dim] with x [batch, heads, q, head_dim] written at
    position `offset` (a scalar, or [batch] for rows at their own positions)."""
    x = x.astype(cache.dtype)
    if jnp.ndim(offset) == 0:
        return jax.lax.dynamic_update_slice(cache, x, (0, 0, offset, 0))
    write = lambda c, r, o: jax.lax.dynamic_update_slice(c, r, (0, o, 0))  # noqa: E731
    return jax.vmap(write)(cache, x, offset)


def blocked_attention(q: jax.Array, k: jax.Array, v: jax.Array, probs_fn, block: int) -> jax.Array:
    """Non-causal attention one batch row, one head and `block` queries at a time.

    Same result as the dense computation, but the [block, keys] score tile stays in cache
    instead of a [batch, heads, 1500, 1500] tensor going through memory: 4.6x faster for
    tiny.en's encoder on 2 CPU cores (bench/transcribe_throughput.py). One head per tile
    (500 queries, 3 MB of f32 scores) rather than all heads (250 queries, 9 MB): tiny.en's
    encoder per window 187 -> 170 ms in f32, 102 -> 99 ms in bf16, the same values.

    Args:
      q: [batch, heads, q, head_dim], already scaled. k, v: [batch, heads, k, head_dim].
      probs_fn: scores -> probabilities (softmax or clipped softmax), in f32.
      block: queries per tile; must divide q.

    Returns:
      Context [batch, heads, q, head_dim].
    """
    n_heads, n_q, head_dim = q.shape[1:]

    def head(args):
        qh, kh, vh = args  # [tiles, block, head_dim], [len, head_dim] x 2

        # Checkpointed: the backward pass recomputes each tile's probabilities instead of
        # saving them all through the scan (memory-bound on CPU): the attention core's
        # forward + backward is ~2x faster (bench/distill_step.py) and needs less memory.
        @jax.checkpoint
        def tile(qt):
            scores = jnp.einsum("qd,kd->qk", qt, kh, preferred_element_type=jnp.float32)
            return jnp.einsum(
                "qk,kd->qd", probs_fn(scores).astype(vh.dtype), vh, preferred_element_type=jnp.float32
            )

        return jax.lax.map(tile, qh).reshape(n_q, head_dim)

    def row(args):
        qr, kr, vr = args  # [heads, len, head_dim]
        return jax.lax.map(head, (qr.reshape(n_heads, n_q // block, block, head_dim), kr, vr))

    # One row at a time keeps the tile in cache (2.2x faster than all rows per tile for a
    # batch of 8 on one CPU device); per device under a mesh, where the partitioner would
    # otherwise loop over the whole batch on every device (spmd.py).
    return by_rows(lambda q, k, v: jax.lax.map(row, (q, k, v)))(q, k, v)


def clipped_softmax(scores: jax.Array, gamma: float, zeta: float) -> jax.Array:
    """`clip((zeta - gamma) * softmax(scores) + gamma, 0, 1)` over the last axis (f32)."""
    probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1)
    if gamma == 0.0 and zeta == 1.0:
        return probs
    return jnp.clip((zeta - gamma) * probs + gamma, 0.0, 1.0)


class Tapped(nn.Module):
    """A module with named activation points.

    `tap(name, x)` is the identity: it sows `x` as `intermediates/name` (free unless that
    collection is mutable) and returns it. Because it is a module method, an
    `nn.intercept_methods` interceptor sees every tap with the module's path and may record
    the value (statistics, calibration) or replace it (fake quantization) without the model
    knowing: `jaxwhisper.quant` and `jaxwhisper.analysis.outliers` work this way.
    """

    def tap(self, name: str, x: jax.Array) -> jax.Array:
        self.sow("intermediates", name, x)
        return x


class MultiHeadAttention(Tapped):
    """Whisper attention: q/v/out projections with bias, key projection without.

    Attributes:
      config: the architecture config (heads, gate, numerics).
      causal: mask future positions (decoder self-attention).
    """

    config: WhisperConfig
    causal: bool = False

    def setup(self):
        c = self.config
        dense = lambda name, bias=True: precision.dense(  # noqa: E731
            c.d_model, c.dtype, c.param_dtype, use_bias=bias, name=name
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

    def _heads(self, x: jax.Array) -> jax.Array:
        """[batch, len, embed] -> [batch, heads, len, head_dim]."""
        return self._split(x).transpose(0, 2, 1, 3)

    def project_kv(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Keys and values of `x` [batch, len, embed] -> two [batch, heads, len, head_dim]."""
        dt = self.config.attention_dtype
        return self._heads(self.k_proj(x).astype(dt)), self._heads(self.v_proj(x).astype(dt))

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
          kv: cross-attention keys and values, each [batch, heads, k, head_dim].
          cache: self-attention cache; the keys/values of `x` are written at `offset`.
          offset: position of x[:, 0] in the sequence (decoding with a cache): a scalar, or
            [batch] int32 when each row is at its own position (rows that joined a running
            batch at different times, `windows.make_window_engine`).

        Returns:
          The output [batch, q, embed] and the updated cache (None without one).
        """
        c = self.config
        q = self._heads(self.q_proj(x)) * (c.head_dim**-0.5)
        new_cache = None
        if kv is not None:
            k, v = kv
        else:
            k, v = self.project_kv(x)
            if cache is not None:
                k, v = _write_cache(cache["k"], k, offset), _write_cache(cache["v"], v, offset)
                new_cache = {"k": k, "v": v}
        probs_fn = lambda s: clipped_softmax(s, c.softmax_clip_gamma, c.softmax_clip_zeta)  # noqa: E731
        n_q = x.shape[1]
        if self.use_blocked_attention(n_q, kv, cache):
            # Each tile holds whole rows of scores, so its softmax is exact and the taps see
            # every score and probability once, a tile at a time: an elementwise interceptor
            # (fake quantization) acts on them as on the dense tensors.
            def tapped_probs(scores):
                return self.tap("attn_probs", probs_fn(self.tap("attn_scores", scores)))

            dt = c.dtype
            ctx = blocked_attention(q.astype(dt), k.astype(dt), v.astype(dt), tapped_probs, _query_block(n_q))
            return self._finish(x, ctx.transpose(0, 2, 1, 3)), new_cache
        attend = functools.partial(self._attend, probs_fn=probs_fn, offset=offset)
        per_row = jnp.ndim(offset) > 0
        if cache is not None and n_q == 1 and not per_row and not self.is_mutable_collection("intermediates"):
            # A decoding step attends over the shortest cache prefix that holds every
            # position so far (the rest is masked anyway): the step reads 64-128 cached
            # positions instead of all 448 for most tokens. The taps see that prefix.
            # Rows at their own positions attend over the whole cache: a prefix chosen by
            # the batch's furthest row would make a row's last bits depend on its
            # neighbours (a longer masked sum rounds differently).
            lengths = cache_buckets(k.shape[2])
            index = jnp.searchsorted(jnp.asarray(lengths), offset + n_q)
            branches = [lambda q, k, v, n=n: attend(q, k[:, :, :n], v[:, :, :n]) for n in lengths]
            ctx = jax.lax.switch(index, branches, q, k, v)
        else:
            ctx = attend(q, k, v)
        return self._finish(x, ctx), new_cache

    def _attend(self, q, k, v, probs_fn, offset) -> jax.Array:
        """Untiled attention: q [batch, heads, q, head_dim] (scaled) over k, v [batch,
        heads, k, head_dim] -> context [batch, q, heads, head_dim] (f32); causal from
        `offset`."""
        dt = self.config.attention_dtype
        scores = jnp.einsum("bhqd,bhkd->bhqk", q.astype(dt), k.astype(dt), preferred_element_type=jnp.float32)
        scores = self.tap("attn_scores", scores)  # before the causal mask's -inf stand-ins
        if self.causal:
            # [batch or 1, 1, q, k]: per-row offsets give each row its own mask
            q_pos = jnp.reshape(offset, (-1, 1, 1, 1)) + jnp.arange(q.shape[2])[:, None]
            visible = jnp.arange(k.shape[2]) <= q_pos
            scores = jnp.where(visible, scores, jnp.finfo(jnp.float32).min)
        probs = probs_fn(scores)
        probs = self.tap("attn_probs", probs)
        # Probabilities and values in the attention dtype, summed in float32 (as the scores).
        return jnp.einsum(
            "bhqk,bhkd->bqhd", probs.astype(dt), v.astype(dt), preferred_element_type=jnp.float32
        )

    def use_blocked_attention(self, n_q: int, kv, cache) -> bool:
        """Long non-causal self-attention (the encoder) runs in query tiles, unless
        intermediates are collected: then the full probabilities are needed for `attn_probs`.
        On the tiled path the taps `attn_scores` and `attn_probs` see one [block, keys] tile
        of one head of one batch row at a time, inside a `lax.map`: interceptors that need whole
        tensors or record values (statistics, calibration) intercept this method and return
        False; elementwise ones (fake quantization) keep the tiles."""
        return (
            n_q >= 512
            and kv is None
            and cache is None
            and not self.causal
            and not self.is_mutable_collection("intermediates")
            and _query_block(n_q) >= 64
        )

    def _finish(self, x: jax.Array, ctx: jax.Array) -> jax.Array:
        """Gate, merge heads, output projection (with their sow points)."""
        c = self.config
        gate = self._gate(x)
        if gate is not None:
            gate = self.tap("gate", gate)
            ctx = ctx * gate[..., None]
        ctx = ctx.astype(c.dtype).reshape(*ctx.shape[:2], c.d_model)
        ctx = self.tap("context", ctx)
        return self.tap("out", self.out_proj(ctx))
