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


def _variables(params: dict) -> dict:
    """The decoders' first argument as Flax variables: Whisper params, or a variables dict
    (`{"params": ..., "cast": ...}` from `precision.inference_variables`)."""
    return params if "params" in params else {"params": params}


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
      params: Whisper params (or variables, see `_variables`).
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
        variables = _variables(params)
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
      step: the decoding step: int32, a scalar or [batch] (rows at their own steps).

    Returns:
      [batch] int32 token ids.
    """

    def row(logits, temperature, seed, step):
        key = jax.random.fold_in(jax.random.PRNGKey(seed), step)
        return jax.random.categorical(key, logits / temperature)

    step = jnp.broadcast_to(jnp.asarray(step, jnp.int32), seed.shape)
    return jax.vmap(row)(logits, temperature, seed, step).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class WindowEngine:
    """Long-form windows decoded in a batch of slots that windows join and leave one by one.

    A batch decoded to its longest row leaves the rows that ended early idle (a quarter of
    the row-steps of a long-form run); here a slot is refilled as soon as its window ends,
    so every decoding step works on live windows. Each slot is at its own position
    (per-row offsets into the model's caches). Pure functions of arrays, jitted by the
    caller (`transcribe.Transcriber` runs one batch of slots per device with `shard_map`).

    Attributes:
      init: `init(batch) -> state`: every slot empty (done).
      admit: `admit(params, state, mel [r, n_mels, 3000], slot [r] int32, temperature [r]
        f32, seed [r] int32, intercept_state=None) -> state`: puts the windows in the given
        slots (encoder, cross-attention keys/values, the forced prefix, the first token);
        a slot of -1 admits nothing (the row is padding).
      advance: `advance(params, state, active [batch] bool, steps, intercept_state=None,
        stop_at_end=False, axis_name=None) -> state`: at most `steps` (static) decoding
        steps of every active slot, fewer when every active slot has ended or, with
        `stop_at_end`, as soon as one has (then its slot can be refilled). Under
        `shard_map` over `axis_name`, the devices stop together.
      max_new: tokens a window may generate.

    The state is a dict of [batch, ...] arrays; its fields `tokens` [batch, max_new] int32
    (`eot` after the end), `done` [batch] bool, `sum_logprob` [batch] f32 and
    `no_speech_prob` [batch] f32 are the results of a slot whose `done` is True.
    """

    init: Callable
    admit: Callable
    advance: Callable
    max_new: int


def make_window_engine(
    config: WhisperConfig, options: SegmentOptions, intercept: Optional[Intercept] = None
) -> WindowEngine:
    """The slot engine for `options` (see `WindowEngine` and `make_segment_decoder`)."""
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

    def pick(logits, dead, step, temperature, seed):
        """Next tokens [batch] and their log-probs (eot and 0 for dead rows)."""
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        nxt = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        # Greedy rows keep their argmax; the random draw runs only when a row samples.
        sampled = jax.lax.cond(
            jnp.any(temperature > 0),
            lambda: sample_tokens(logits, jnp.maximum(temperature, 1e-6), seed, step),
            lambda: nxt,
        )
        nxt = jnp.where(temperature > 0, sampled, nxt)
        lp = jnp.take_along_axis(log_probs, nxt[:, None], axis=-1)[:, 0]
        return jnp.where(dead, eot, nxt), jnp.where(dead, 0.0, lp)

    def empty(batch):
        kv = (batch, config.n_heads, config.n_audio_ctx, config.head_dim)
        cross = [
            (jnp.zeros(kv, config.attention_dtype), jnp.zeros(kv, config.attention_dtype))
            for _ in range(config.decoder_layers)
        ]
        row = lambda dtype, value=0: jnp.full((batch,), value, dtype)  # noqa: E731
        return {
            "cross": cross,
            "cache": init_kv_cache(config, batch, n_prefix + max_new),
            "tokens": jnp.full((batch, max_new), eot, jnp.int32),
            "pos": row(jnp.int32, max_new),  # tokens generated so far
            "last": row(jnp.int32, eot),
            "penultimate": row(jnp.int32, eot),
            "last_ts": row(jnp.int32, -1),
            "done": row(jnp.bool_, True),
            "sum_logprob": row(jnp.float32),
            "no_speech_prob": row(jnp.float32),
            "temperature": row(jnp.float32),
            "seed": row(jnp.int32),
        }

    def admit(params, state, mel, slot, temperature, seed, intercept_state=None):
        with _intercepted(intercept, intercept_state):
            return _admit(params, state, mel, slot, temperature, seed)

    def _admit(params, state, mel, slot, temperature, seed):
        variables = _variables(params)
        shapes = jax.eval_shape(lambda: empty(1))

        def start(args):
            """One window's slot state [1, ...]."""
            mel, temperature, seed = args
            cross, cache, logits = _encode_and_prefill(model, variables, mel[None], prefix, max_new)
            logits = logits.astype(jnp.float32)
            no_speech = jax.nn.softmax(logits[:, sot_index], axis=-1)[:, options.no_speech]
            first, lp = pick(logits[:, -1] + begin, jnp.zeros((1,), bool), 0, temperature[None], seed[None])
            last_ts = jnp.where(first >= ts.begin, first, -1) if ts is not None else jnp.full((1,), -1)
            return {
                "cross": cross,
                "cache": cache,
                "tokens": jnp.full((1, max_new), eot, jnp.int32).at[:, 0].set(first),
                "pos": jnp.ones((1,), jnp.int32),
                "last": first,
                "penultimate": first,
                "last_ts": last_ts.astype(jnp.int32),
                "done": (first == eot) | (max_new == 1),
                "sum_logprob": lp,
                "no_speech_prob": no_speech,
                "temperature": temperature[None],
                "seed": seed[None],
            }

        def put(i, state):
            valid = slot[i] >= 0
            row = jax.lax.cond(
                valid,
                start,
                lambda _: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes),
                (mel[i], temperature[i], seed[i]),
            )
            at = jnp.maximum(slot[i], 0)

            def write(old, new):
                index = (at,) + (0,) * (old.ndim - 1)
                kept = jax.lax.dynamic_slice(old, index, new.shape)
                return jax.lax.dynamic_update_slice(old, jnp.where(valid, new.astype(old.dtype), kept), index)

            return jax.tree.map(write, state, row)

        return jax.lax.fori_loop(0, mel.shape[0], put, state)

    def advance(params, state, active, steps: int, intercept_state=None, stop_at_end=False, axis_name=None):
        with _intercepted(intercept, intercept_state):
            return _advance(params, state, active, steps, stop_at_end, axis_name)

    def _advance(params, state, active, steps, stop_at_end, axis_name):
        variables = _variables(params)
        rows = jnp.arange(active.shape[0])
        # Read-only in the loop: kept out of its carry (a carried 147 MB of tiny.en keys and
        # values for 8 rows would be copied at every step).
        cross = state["cross"]
        state = {k: v for k, v in state.items() if k != "cross"}

        def anywhere(x):
            x = jnp.any(x)
            return x if axis_name is None else jax.lax.psum(x.astype(jnp.int32), axis_name) > 0

        def cond(carry):
            i, s = carry
            go = (i < steps) & anywhere(active & ~s["done"])
            if stop_at_end:  # every device stops once a window has ended on any of them
                go &= ~anywhere(active & s["done"])
            return go

        def body(carry):
            i, s = carry
            live = active & ~s["done"]
            logits, cache = model.apply(
                variables,
                s["last"][:, None],
                cross,
                s["cache"],
                n_prefix + s["pos"] - 1,
                method=Whisper.decode,
            )
            logits = logits[:, 0].astype(jnp.float32) + suppress
            if ts is not None:
                logits = apply_timestamp_rules(logits, s["last"], s["penultimate"], s["last_ts"], ts)
            nxt, lp = pick(logits, ~live, s["pos"], s["temperature"], s["seed"])
            at = jnp.minimum(s["pos"], max_new - 1)
            tokens = s["tokens"].at[rows, at].set(jnp.where(live, nxt, s["tokens"][rows, at]))
            pos = s["pos"] + live
            new = dict(s, cache=cache, tokens=tokens, pos=pos)
            new["penultimate"] = jnp.where(live, s["last"], s["penultimate"])
            new["last"] = jnp.where(live, nxt, s["last"])
            if ts is not None:
                new["last_ts"] = jnp.where(live & (nxt >= ts.begin), nxt, s["last_ts"])
            new["done"] = s["done"] | (live & ((nxt == eot) | (pos >= max_new)))
            new["sum_logprob"] = s["sum_logprob"] + jnp.where(live, lp, 0.0)
            return i + 1, new

        return dict(jax.lax.while_loop(cond, body, (jnp.int32(0), state))[1], cross=cross)

    return WindowEngine(empty, admit, advance, max_new)


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

    One batch through the slot engine (`make_window_engine`): every row admitted, then
    decoded until each has ended.

    Args (of the returned function):
      params: Whisper params (or variables, see `_variables`).
      mel: features [batch, n_mels, 3000].
      valid: [batch] bool, False for padding rows: they decode nothing.
      temperature: optional [batch] f32; 0 decodes the row greedily (the default).
      seed: [batch] int32, the rows' random streams (with `temperature`).

    Returns (of the returned function):
      tokens [batch, max_new_tokens] int32 (`eot` from the first end-of-text on),
      sum_logprob [batch] f32, no_speech_prob [batch] f32.
    """
    engine = make_window_engine(config, options, intercept)

    def decode(params, mel, valid, state=None, temperature=None, seed=None):
        batch = mel.shape[0]
        temperature = jnp.zeros((batch,), jnp.float32) if temperature is None else temperature
        seed = jnp.zeros((batch,), jnp.int32) if seed is None else seed
        slots = jnp.where(valid, jnp.arange(batch, dtype=jnp.int32), -1)
        s = engine.admit(params, engine.init(batch), mel, slots, temperature, seed, state)
        s = engine.advance(params, s, valid, engine.max_new, state)
        # padding rows were never admitted: nothing decoded, as a window that ends at once
        return (
            s["tokens"],
            jnp.where(valid, s["sum_logprob"], 0.0),
            jnp.where(valid, s["no_speech_prob"], 0.0),
        )

    return jax.jit(decode)
