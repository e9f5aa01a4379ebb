"""Batched greedy decoding with a KV cache, jitted end to end.

The encoder runs once per batch; cross-attention keys/values are computed once per
utterance; self-attention keys/values live in a fixed-size cache. The loop is a
`lax.while_loop` that stops when every row has emitted end-of-text (or at the decoder's
position limit), so shapes are fixed and nothing recompiles between batches of the same size.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, ContextManager, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxwhisper.inference.timestamp_rules import TimestampIds, apply_timestamp_rules, first_step_mask
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


def _token_budget(config: WhisperConfig, n_prefix: int, max_new_tokens: int) -> int:
    """Tokens a decoder may generate after a forced prefix of `n_prefix` tokens."""
    max_new = min(max_new_tokens, config.n_text_ctx - n_prefix)
    if max_new < 1:
        raise ValueError(f"prefix of {n_prefix} tokens leaves no room in {config.n_text_ctx} positions")
    return max_new


Intercept = Callable[[Any], ContextManager]


def _intercepted(intercept: Optional[Intercept], state: Any) -> ContextManager:
    return intercept(state) if intercept is not None else contextlib.nullcontext()


def _encode_and_prefill(
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
        enc = model.apply(variables, m[None], method=Whisper.encode)
        return model.apply(variables, enc, method=Whisper.cross_kv)

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
    logits, cache = model.apply(variables, tokens, cross, cache, 0, method=Whisper.decode)
    return cross, cache, logits


def make_greedy_decoder(
    config: WhisperConfig, options: DecodeOptions, intercept: Optional[Intercept] = None
) -> Callable:
    """Returns `decode(params, mel, state=None) -> tokens`, jitted.

    `intercept(state)`, when given, is entered around the traced body: a
    `nn.intercept_methods` context (quantization, see `jaxwhisper.quant.ptq`) then applies to
    every call. `state` is the pytree of arrays it reads (e.g. INT8 kernels): an argument of
    the decoder, so that it is not compiled into the program as constants.

    Args (of the returned function):
      params: Whisper params.
      mel: features [batch, n_mels, 3000].
      state: what `intercept` reads (None without one).
      valid: optional [batch] bool, False for padding rows (a run's last, partial batch):
        they skip the encoder and decode nothing (all `eot`).

    Returns (of the returned function):
      tokens [batch, max_new_tokens] int32: generated ids, `eot` from the first end-of-text on.
    """
    model = Whisper(config)
    prefix = np.asarray(options.prefix, np.int32)
    n_prefix = len(prefix)
    max_new = _token_budget(config, n_prefix, options.max_new_tokens or config.n_text_ctx)
    suppress = _bias(options.suppress_tokens, config.n_vocab)
    begin = suppress + _bias(options.suppress_at_begin, config.n_vocab)
    eot = options.eot

    def decode(params, mel, state=None, valid=None):
        with _intercepted(intercept, state):
            return _decode(params, mel, valid)

    def _decode(params, mel, valid):
        variables = {"params": params}
        batch = mel.shape[0]
        cross, cache, logits = _encode_and_prefill(model, variables, mel, prefix, max_new, valid)
        first = jnp.argmax(logits[:, -1] + begin, axis=-1).astype(jnp.int32)
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


@dataclasses.dataclass(frozen=True)
class SegmentOptions:
    """Greedy decoding of one 30 s window of a long-form transcription.

    Attributes:
      prefix: forced tokens: sot (language, task) and, without timestamps, no-timestamps.
      eot: end-of-text id.
      no_speech: `<|nospeech|>` / `<|nocaptions|>` id, whose probability at the sot
        position is the window's no-speech probability.
      suppress_tokens, suppress_at_begin: as in `DecodeOptions`.
      timestamps: the timestamp ids when decoding with timestamps, else None.
      max_new_tokens: CTranslate2 (faster-whisper) stops at half the 448 positions.
    """

    prefix: tuple[int, ...]
    eot: int
    no_speech: int
    suppress_tokens: tuple[int, ...] = ()
    suppress_at_begin: tuple[int, ...] = ()
    timestamps: Optional[TimestampIds] = None
    max_new_tokens: int = 224


def sample_tokens(logits: jax.Array, temperature: jax.Array, seed: jax.Array, step) -> jax.Array:
    """One token per row drawn from `softmax(logits / temperature)`.

    Each row's draw depends only on its own (seed, step), not on the batch it shares, so a
    window samples the same tokens in any batch and on any device.

    Args:
      logits: [batch, vocab] f32, -inf where a token is not allowed.
      temperature: [batch] f32 > 0.
      seed: [batch] int32.
      step: the decoding step (int32 scalar).

    Returns:
      [batch] int32 token ids.
    """

    def row(logits, temperature, seed):
        key = jax.random.fold_in(jax.random.PRNGKey(seed), step)
        return jax.random.categorical(key, logits / temperature)

    return jax.vmap(row)(logits, temperature, seed).astype(jnp.int32)


def make_segment_decoder(
    config: WhisperConfig, options: SegmentOptions, intercept: Optional[Intercept] = None
) -> Callable:
    """Returns `decode(params, mel, valid, state=None, temperature=None, seed=None) ->
    (tokens, sum_logprob, no_speech_prob)`, jitted; `intercept(state)` as in
    `make_greedy_decoder`.

    The same greedy loop as `make_greedy_decoder` plus, per row, the sum of the log-probs
    of the chosen tokens (end-of-text included, after every suppression: what OpenAI and
    CTranslate2 average into `avg_logprob`) and the no-speech probability (softmax of the
    raw logits at the sot position). With `options.timestamps` the timestamp rules
    (`timestamp_rules.py`) filter every step. Rows with a temperature above 0 sample each
    token from the filtered logits divided by it (`sample_tokens`), the draw of the
    temperature fallback; their log-probs are those of the unscaled logits, as OpenAI's
    decoder sums them.

    Args (of the returned function):
      params: Whisper params.
      mel: features [batch, n_mels, 3000].
      valid: [batch] bool, False for padding rows (the tail of a long-form run has fewer
        live files than rows): they decode nothing.
      temperature: optional [batch] f32; 0 decodes the row greedily (the default).
      seed: [batch] int32, the rows' random streams (with `temperature`).

    Returns (of the returned function):
      tokens [batch, max_new_tokens] int32 (`eot` from the first end-of-text on),
      sum_logprob [batch] f32, no_speech_prob [batch] f32.
    """
    model = Whisper(config)
    prefix = np.asarray(options.prefix, np.int32)
    n_prefix = len(prefix)
    max_new = _token_budget(config, n_prefix, options.max_new_tokens)
    suppress = _bias(options.suppress_tokens, config.n_vocab)
    begin = suppress + _bias(options.suppress_at_begin, config.n_vocab)
    ts = options.timestamps
    if ts is not None:
        begin = np.where(first_step_mask(ts, config.n_vocab), -np.inf, begin).astype(np.float32)
    eot = options.eot
    sot_index = 0  # the prefix starts with sot: no previous-text prompt here

    def decode(params, mel, valid, state=None, temperature=None, seed=None):
        with _intercepted(intercept, state):
            return _decode(params, mel, valid, temperature, seed)

    def _decode(params, mel, valid, temperature, seed):
        variables = {"params": params}
        batch = mel.shape[0]

        def pick(logits, done, step):
            log_probs = jax.nn.log_softmax(logits, axis=-1)
            nxt = jnp.argmax(logits, axis=-1).astype(jnp.int32)
            if temperature is not None:
                # Greedy rows keep their argmax; the random draw runs only when a row samples.
                sampled = jax.lax.cond(
                    jnp.any(temperature > 0),
                    lambda: sample_tokens(logits, jnp.maximum(temperature, 1e-6), seed, step),
                    lambda: nxt,
                )
                nxt = jnp.where(temperature > 0, sampled, nxt)
            lp = jnp.take_along_axis(log_probs, nxt[:, None], axis=-1)[:, 0]
            return jnp.where(done, eot, nxt), jnp.where(done, 0.0, lp)

        cross, cache, logits = _encode_and_prefill(model, variables, mel, prefix, max_new, valid)
        no_speech = jax.nn.softmax(logits[:, sot_index].astype(jnp.float32), axis=-1)[:, options.no_speech]
        first, sum_lp = pick(logits[:, -1].astype(jnp.float32) + begin, ~valid, 0)
        out = jnp.full((batch, max_new), eot, jnp.int32).at[:, 0].set(first)
        last_ts = jnp.where(first >= ts.begin, first, -1) if ts is not None else jnp.full((batch,), -1)

        def cond(state):
            step, _, _, _, done, _, _, _ = state
            return (step < max_new) & ~jnp.all(done)

        def body(state):
            step, last, penultimate, cache, done, out, sum_lp, last_ts = state
            logits, cache = model.apply(
                variables, last[:, None], cross, cache, n_prefix + step - 1, method=Whisper.decode
            )
            logits = logits[:, 0].astype(jnp.float32) + suppress
            if ts is not None:
                logits = apply_timestamp_rules(logits, last, penultimate, last_ts, ts)
            nxt, lp = pick(logits, done, step)
            out = jax.lax.dynamic_update_slice(out, nxt[:, None], (0, step))
            if ts is not None:
                last_ts = jnp.where(~done & (nxt >= ts.begin), nxt, last_ts)
            return step + 1, nxt, last, cache, done | (nxt == eot), out, sum_lp + lp, last_ts

        state = (jnp.int32(1), first, first, cache, first == eot, out, sum_lp, last_ts)
        _, _, _, _, _, out, sum_lp, _ = jax.lax.while_loop(cond, body, state)
        return out, sum_lp, no_speech

    return jax.jit(decode)
