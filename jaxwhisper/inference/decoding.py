"""Batched greedy decoding with a KV cache, jitted end to end.

The encoder runs once per batch; cross-attention keys/values are computed once per
utterance; self-attention keys/values live in a fixed-size cache. The loop is a
`lax.while_loop` that stops when every row has emitted end-of-text (or at the decoder's
position limit), so shapes are fixed and nothing recompiles between batches of the same size.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, ContextManager, Optional, Sequence

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


def _bias(ids: Sequence[int], vocab: int) -> np.ndarray:
    b = np.zeros((vocab,), np.float32)
    b[np.asarray(list(ids), np.int64)] = -np.inf
    return b


def make_greedy_decoder(
    config: WhisperConfig, options: DecodeOptions, intercept: Optional[Callable[[], ContextManager]] = None
) -> Callable:
    """Returns `decode(params, mel) -> tokens`, jitted.

    `intercept()`, when given, is entered around the traced body: a `nn.intercept_methods`
    context (fake-quantized activations, see `jaxwhisper.quant`) then applies to every call.

    Args (of the returned function):
      params: Whisper params.
      mel: features [batch, n_mels, 3000].

    Returns (of the returned function):
      tokens [batch, max_new_tokens] int32: generated ids, `eot` from the first end-of-text on.
    """
    model = Whisper(config)
    prefix = np.asarray(options.prefix, np.int32)
    n_prefix = len(prefix)
    limit = config.n_text_ctx - n_prefix
    max_new = min(options.max_new_tokens or limit, limit)
    if max_new < 1:
        raise ValueError(f"prefix of {n_prefix} tokens leaves no room in {config.n_text_ctx} positions")
    suppress = _bias(options.suppress_tokens, config.n_vocab)
    begin = suppress + _bias(options.suppress_at_begin, config.n_vocab)
    eot = options.eot

    def decode(params, mel):
        with intercept() if intercept is not None else contextlib.nullcontext():
            return _decode(params, mel)

    def _decode(params, mel):
        variables = {"params": params}
        batch = mel.shape[0]

        # One row at a time: the same [1, ...] shapes whatever the batch and however it is
        # sharded, so a row's encoder output is bitwise the same on 1 device or 8 (XLA's CPU
        # matmuls round differently for other row counts, and a quantized model turns such
        # last-bit differences into whole steps). It is also faster on CPU: 3.2 s instead of
        # 4.4 s for 16 tiny.en windows on 2 cores (the working set of a row stays in cache).
        def encode_row(m):
            enc = model.apply(variables, m[None], method=Whisper.encode)
            return model.apply(variables, enc, method=Whisper.cross_kv)

        cross = jax.tree.map(lambda x: x[:, 0], jax.lax.map(encode_row, mel))
        cache = init_kv_cache(config, batch, config.n_text_ctx)
        tokens = jnp.broadcast_to(jnp.asarray(prefix), (batch, n_prefix))
        logits, cache = model.apply(variables, tokens, cross, cache, 0, method=Whisper.decode)
        first = jnp.argmax(logits[:, -1] + begin, axis=-1).astype(jnp.int32)
        out = jnp.full((batch, max_new), eot, jnp.int32).at[:, 0].set(first)
        done = first == eot

        def cond(state):
            step, _, _, done, _ = state
            return (step < max_new) & ~jnp.all(done)

        def body(state):
            step, last, cache, done, out = state
            logits, cache = model.apply(
                variables, last[:, None], cross, cache, n_prefix + step - 1, method=Whisper.decode
            )
            nxt = jnp.argmax(logits[:, 0] + suppress, axis=-1).astype(jnp.int32)
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
