"""Long-form windows decoded in a batch of slots, each window at its own position.

`make_window_engine` gives pure functions of arrays: `admit` puts windows into free slots
(encoder, cross-attention keys/values, the forced prefix, the first token), `advance` runs
decoding steps of every held window until one ends. `make_segment_decoder` is one batch
through them. The host side, on devices, is `slots.DeviceSlots`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxwhisper.inference.decoding import (
    Intercept,
    argmax_first,
    as_variables,
    encode_and_prefill,
    intercepted,
    suppression_bias,
    token_budget,
)
from jaxwhisper.inference.timestamp_rules import TimestampIds, apply_timestamp_rules, first_step_mask
from jaxwhisper.models.config import WhisperConfig
from jaxwhisper.models.whisper import Whisper, init_kv_cache


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
      prepare: `prepare(params, mel [n_mels, 3000], temperature, seed, intercept_state=None)
        -> row`: one window's slot state [1, ...] (what `admit` puts in a slot), computed
        apart from the batch: on another device while the batch decodes.
      insert: `insert(state, row, slot) -> state`: a prepared row into slot `slot`.

    The state is a dict of [batch, ...] arrays; its fields `tokens` [batch, max_new] int32
    (`eot` after the end), `done` [batch] bool, `sum_logprob` [batch] f32 and
    `no_speech_prob` [batch] f32 are the results of a slot whose `done` is True.
    """

    init: Callable
    admit: Callable
    advance: Callable
    max_new: int
    prepare: Callable
    insert: Callable


def make_window_engine(
    config: WhisperConfig,
    options: SegmentOptions,
    intercept: Optional[Intercept] = None,
    module: Optional[nn.Module] = None,
) -> WindowEngine:
    """The slot engine for `options` (see `WindowEngine` and `make_segment_decoder`); `module`
    as in `make_greedy_decoder`."""
    model = module if module is not None else Whisper(config)
    prefix = np.asarray(options.prefix, np.int32)
    n_prefix = len(prefix)
    max_new = token_budget(config, n_prefix, options.max_new_tokens)
    suppress = suppression_bias(options.suppress_tokens, config.n_vocab)
    begin = suppress + suppression_bias(options.suppress_at_begin, config.n_vocab)
    ts = options.timestamps
    if ts is not None:
        begin = np.where(first_step_mask(ts, config.n_vocab), -np.inf, begin).astype(np.float32)
    eot = options.eot
    sot_index = 0  # the prefix starts with sot: no previous-text prompt here

    def pick(logits, dead, step, temperature, seed):
        """Next tokens [batch] and their log-probs (eot and 0 for dead rows)."""
        nxt, top = argmax_first(logits)
        # Greedy rows keep their argmax; the random draw runs only when a row samples.
        sampled = jax.lax.cond(
            jnp.any(temperature > 0),
            lambda: sample_tokens(logits, jnp.maximum(temperature, 1e-6), seed, step),
            lambda: nxt,
        )
        nxt = jnp.where(temperature > 0, sampled, nxt)
        # log_softmax(logits)[nxt], computed at that one index
        log_norm = jnp.log(jnp.sum(jnp.exp(logits - top[:, None]), axis=-1))
        lp = (jnp.take_along_axis(logits, nxt[:, None], axis=-1)[:, 0] - top) - log_norm
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

    def prepare(params, mel, temperature, seed, intercept_state=None):
        with intercepted(intercept, intercept_state):
            return _prepare(as_variables(params), mel, temperature, seed)

    def _prepare(variables, mel, temperature, seed):
        """One window's slot state [1, ...]: mel [n_mels, 3000], temperature and seed scalars."""
        cross, cache, logits = encode_and_prefill(model, variables, mel[None], prefix, max_new)
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

    def insert(state, row, slot):
        """`state` with the prepared `row` [1, ...] in slot `slot` (int32; -1 inserts nothing)."""
        valid = slot >= 0
        at = jnp.maximum(slot, 0)

        def write(old, new):
            index = (at,) + (0,) * (old.ndim - 1)
            kept = jax.lax.dynamic_slice(old, index, new.shape)
            return jax.lax.dynamic_update_slice(old, jnp.where(valid, new.astype(old.dtype), kept), index)

        return jax.tree.map(write, state, row)

    def admit(params, state, mel, slot, temperature, seed, intercept_state=None):
        with intercepted(intercept, intercept_state):
            return _admit(as_variables(params), state, mel, slot, temperature, seed)

    def _admit(variables, state, mel, slot, temperature, seed):
        shapes = jax.eval_shape(lambda: empty(1))

        def put(i, state):
            row = jax.lax.cond(
                slot[i] >= 0,
                lambda args: _prepare(variables, *args),
                lambda _: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes),
                (mel[i], temperature[i], seed[i]),
            )
            return insert(state, row, slot[i])

        return jax.lax.fori_loop(0, mel.shape[0], put, state)

    def advance(params, state, active, steps: int, intercept_state=None, stop_at_end=False, axis_name=None):
        with intercepted(intercept, intercept_state):
            return _advance(params, state, active, steps, stop_at_end, axis_name)

    def _advance(params, state, active, steps, stop_at_end, axis_name):
        variables = as_variables(params)
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
                method="decode",
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

    return WindowEngine(empty, admit, advance, max_new, prepare, insert)


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
      params: Whisper params (or variables, see `as_variables`).
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
