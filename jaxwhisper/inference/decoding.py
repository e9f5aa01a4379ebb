"""Batched greedy decoding with a KV cache, jitted end to end.

The encoder runs once per batch; cross-attention keys/values are computed once per
utterance; self-attention keys/values live in a fixed-size cache. The loop is a
`lax.while_loop` that stops when every row has emitted end-of-text (or at the decoder's
position limit), so shapes are fixed and nothing recompiles between batches of the same size.
The encoder-and-prefix step and the token choice are shared with the long-form windows'
decoder (`windows.py`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, ContextManager, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxwhisper.models.config import WhisperConfig
from jaxwhisper.models.whisper import Whisper, init_kv_cache


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
    """Greedy decoding settings (OpenAI/faster-whisper defaults).

    Attributes:
      prefix: forced tokens (sot, language, task, no-timestamps).
      eot: end-of-text id.
      suppress_tokens: ids never produced.
      suppress_at_begin: ids not produced as the first token (blank, eot).
      max_new_tokens: cap on generated tokens; default fills the 448 positions.
    """

    prefix: tuple[int, ...]
    eot: int
    suppress_tokens: tuple[int, ...] = ()
    suppress_at_begin: tuple[int, ...] = ()
    max_new_tokens: int | None = None


def argmax_first(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(first index of the maximum [batch] int32, the maximum [batch]) of logits [batch,
    vocab]: `jnp.argmax`'s index, from a max and a second pass for its first position
    (XLA:CPU's arg-max reduction took 0.62 ms on [8, 51864], these two 0.28 ms)."""
    top = jnp.max(logits, axis=-1)
    index = jnp.arange(logits.shape[-1], dtype=jnp.float32)
    first = -jnp.max(jnp.where(logits == top[:, None], -index, -jnp.inf), axis=-1)
    return first.astype(jnp.int32), top


def suppression_bias(ids: Sequence[int], vocab: int) -> np.ndarray:
    """[vocab] f32: -inf at `ids`, 0 elsewhere (added to the logits)."""
    b = np.zeros((vocab,), np.float32)
    b[np.asarray(list(ids), np.int64)] = -np.inf
    return b


def token_budget(config: WhisperConfig, n_prefix: int, max_new_tokens: int) -> int:
    """Tokens a decoder may generate after a forced prefix of `n_prefix` tokens."""
    max_new = min(max_new_tokens, config.n_text_ctx - n_prefix)
    if max_new < 1:
        raise ValueError(f"prefix of {n_prefix} tokens leaves no room in {config.n_text_ctx} positions")
    return max_new


Intercept = Callable[[Any], ContextManager]


def as_variables(params: dict) -> dict:
    """The decoders' first argument as Flax variables: Whisper params, or a variables dict
    (`{"params": ..., "cast": ...}` from `precision.inference_variables`)."""
    return params if "params" in params else {"params": params}


def intercepted(intercept: Optional[Intercept], state: Any) -> ContextManager:
    """`intercept(state)`, or a context that does nothing without an interceptor."""
    return intercept(state) if intercept is not None else contextlib.nullcontext()


def encode_and_prefill(
    model: Whisper,
    variables: dict,
    mel: jax.Array,
    prefix: np.ndarray,
    max_new: int,
    valid: Optional[jax.Array] = None,
):
    """Encoder, cross-attention keys/values and the forced prefix through the decoder.

    One row at a time: the same [1, ...] shapes whatever the batch and however it is
    sharded, so a row's encoder output is bitwise the same on 1 device or 8 (XLA's CPU
    matmuls round differently for other row counts, and a quantized model turns such
    last-bit differences into whole steps). It is also faster on CPU: 3.2 s instead of
    4.4 s for 16 tiny.en windows on 2 cores (the working set of a row stays in cache).

    Args:
      mel: features [batch, n_mels, 3000].
      prefix: forced tokens [n_prefix] int32.
      max_new: tokens the loop may generate: the self-attention cache holds the prefix and
        them (a window's 224-token budget needs half of the 448 positions).
      valid: [batch] bool; a False row (padding) skips the encoder and gets zero keys and
        values (the tail of a long-form run has fewer windows than rows, and the encoder is
        most of a window's cost).

    Returns:
      (cross, cache, logits): cross-attention keys/values per layer, the self-attention
      cache after the prefix, logits [batch, n_prefix, vocab] at the prefix positions.
    """
    config = model.config

    def encode_row(m):
        enc = model.apply(variables, m[None], method="encode")
        return model.apply(variables, enc, method="cross_kv")

    batch = mel.shape[0]
    if valid is None:
        cross = jax.lax.map(encode_row, mel)
    else:
        shapes = jax.eval_shape(encode_row, mel[0])

        def skip(m):
            return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        cross = jax.lax.map(lambda row: jax.lax.cond(row[1], encode_row, skip, row[0]), (mel, valid))
    cross = jax.tree.map(lambda x: x[:, 0], cross)
    cache = init_kv_cache(config, batch, len(prefix) + max_new)
    tokens = jnp.broadcast_to(jnp.asarray(prefix), (batch, len(prefix)))
    logits, cache = model.apply(variables, tokens, cross, cache, 0, method="decode")
    return cross, cache, logits


def make_greedy_decoder(
    config: WhisperConfig,
    options: DecodeOptions,
    intercept: Optional[Intercept] = None,
    module: Optional[nn.Module] = None,
) -> Callable:
    """Returns `decode(params, mel, state=None) -> tokens`, jitted.

    `module`: the Flax module to decode with (default `Whisper(config)`); any module with
    Whisper's `encode`, `cross_kv` and `decode` methods, called by name (e.g. a Whisper that
    qwix quantized: `bench/quant_speed.py`).

    `intercept(state)`, when given, is entered around the traced body: a
    `nn.intercept_methods` context (quantization, see `jaxwhisper.quant.ptq`) then applies to
    every call. `state` is the pytree of arrays it reads (e.g. INT8 kernels): an argument of
    the decoder, so that it is not compiled into the program as constants.

    Args (of the returned function):
      params: Whisper params (or variables, see `as_variables`).
      mel: features [batch, n_mels, 3000].
      state: what `intercept` reads (None without one).
      valid: optional [batch] bool, False for padding rows (a run's last, partial batch):
        they skip the encoder and decode nothing (all `eot`).

    Returns (of the returned function):
      tokens [batch, max_new_tokens] int32: generated ids, `eot` from the first end-of-text on.
    """
    model = module if module is not None else Whisper(config)
    prefix = np.asarray(options.prefix, np.int32)
    n_prefix = len(prefix)
    max_new = token_budget(config, n_prefix, options.max_new_tokens or config.n_text_ctx)
    suppress = suppression_bias(options.suppress_tokens, config.n_vocab)
    begin = suppress + suppression_bias(options.suppress_at_begin, config.n_vocab)
    eot = options.eot

    def decode(params, mel, state=None, valid=None):
        with intercepted(intercept, state):
            return _decode(params, mel, valid)

    def _decode(params, mel, valid):
        variables = as_variables(params)
        batch = mel.shape[0]
        cross, cache, logits = encode_and_prefill(model, variables, mel, prefix, max_new, valid)
        first = argmax_first(logits[:, -1] + begin)[0]
        if valid is not None:
            first = jnp.where(valid, first, eot)
        out = jnp.full((batch, max_new), eot, jnp.int32).at[:, 0].set(first)
        done = first == eot

        def cond(state):
            step, _, _, done, _ = state
            return (step < max_new) & ~jnp.all(done)

        def body(state):
            step, last, cache, done, out = state
            logits, cache = model.apply(
                variables, last[:, None], cross, cache, n_prefix + step - 1, method="decode"
            )
            nxt = argmax_first(logits[:, 0] + suppress)[0]
            nxt = jnp.where(done, eot, nxt)
            out = jax.lax.dynamic_update_slice(out, nxt[:, None], (0, step))
            return step + 1, nxt, cache, done | (nxt == eot), out

        state = (jnp.int32(1), first, cache, done, out)
        return jax.lax.while_loop(cond, body, state)[-1]

    return jax.jit(decode)


def strip_tokens(tokens: np.ndarray, eot: int) -> list[list[int]]:
    """Rows of generated ids up to (excluding) the first end-of-text."""
    rows = []
    for row in np.asarray(tokens):
        stop = np.flatnonzero(row == eot)
        rows.append(row[: stop[0] if stop.size else len(row)].tolist())
    return rows
