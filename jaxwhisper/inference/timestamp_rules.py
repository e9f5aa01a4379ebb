"""Whisper's timestamp rules as a jittable logit filter, one decoding step of a batch.

The rules are those of OpenAI's `ApplyTimestampRules` in the form CTranslate2 applies them
(faster-whisper's decoder, the reference for parity):

* `<|notimestamps|>` is never produced;
* the first sampled token is a timestamp no later than `max_initial_timestamp`;
* timestamps come in pairs: after a complete pair (or a timestamp as the first token) text
  must follow; after a single timestamp only a timestamp or end-of-text may follow;
* timestamps never decrease (a timestamp may repeat the last one: CTranslate2 masks the ids
  below the last timestamp; OpenAI's newer code also forbids an equal closing timestamp);
* when the summed probability of all timestamps exceeds that of the most probable text token,
  a timestamp is forced (text tokens, end-of-text included, are masked).

Timestamp token t stands for `(t - begin) * 0.02` s; `begin` is `<|notimestamps|> + 1` (50363
for the English-only models, 50364 for the multilingual ones) and the last one is 30.00 s.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

TIME_PRECISION_S = 0.02


@dataclasses.dataclass(frozen=True)
class TimestampIds:
    """Token ids the rules need.

    Attributes:
      begin: `<|0.00|>`.
      end: the last timestamp id (`<|30.00|>`, the vocabulary's last id).
      eot: end-of-text.
      no_timestamps: `<|notimestamps|>`.
      max_initial_index: the latest timestamp allowed first, in 0.02 s steps (1.0 s -> 50).
    """

    begin: int
    end: int
    eot: int
    no_timestamps: int
    max_initial_index: int = 50


def first_step_mask(ids: TimestampIds, vocab: int) -> np.ndarray:
    """[vocab] bool: ids the rules forbid as the first sampled token."""
    v = np.arange(vocab)
    return (
        (v == ids.no_timestamps) | (v < ids.begin) | (v > ids.begin + ids.max_initial_index) | (v > ids.end)
    )


def apply_timestamp_rules(
    logits: jax.Array,
    last: jax.Array,
    penultimate: jax.Array,
    last_timestamp: jax.Array,
    ids: TimestampIds,
) -> jax.Array:
    """Masks `logits` of a step after the first sampled one with the timestamp rules.

    Args:
      logits: [batch, vocab] f32, already carrying the other suppressions (their -inf
        entries count when the timestamp probability is compared with the text tokens').
      last: [batch] int32, the token sampled at the previous step.
      penultimate: [batch] int32, the one before it (the previous token itself when only
        one token has been sampled, so that a leading timestamp counts as a pair).
      last_timestamp: [batch] int32, the most recent timestamp sampled, or -1 for none.
      ids: the special ids.

    Returns:
      [batch, vocab] f32 logits with the forbidden ids at -inf.
    """
    v = jnp.arange(logits.shape[-1])[None, :]
    is_ts = v >= ids.begin
    last_ts = (last >= ids.begin)[:, None]
    pair = last_ts & (penultimate >= ids.begin)[:, None]
    mask = (v == ids.no_timestamps) | (v > ids.end)
    mask |= pair & is_ts  # a closed pair: text next
    mask |= last_ts & ~pair & (v < ids.eot)  # an open timestamp: close it or end
    mask |= is_ts & (v < last_timestamp[:, None])  # never decrease
    logits = jnp.where(mask, -jnp.inf, logits)

    # The summed probability of the timestamps against the most probable text token: both
    # log-probabilities share the log-softmax's normaliser, so the logits compare alike
    # (a log-sum-exp over the 1501 timestamps and a max over the text ids, instead of a
    # log-softmax over the whole vocabulary at every step).
    ts_log_sum = jax.nn.logsumexp(logits[:, ids.begin :], axis=-1)
    text_max = jnp.max(logits[:, : ids.begin], axis=-1)
    force = ~pair[:, 0] & (ts_log_sum > text_max)
    return jnp.where(force[:, None] & ~is_ts, -jnp.inf, logits)
