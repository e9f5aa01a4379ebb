"""Whisper's timestamp rules on hand-made logits (a 12-id vocabulary, no model).

Ids: 0-5 text, 6 eot, 7 no-timestamps, 8-11 timestamps <|0.00|>..<|0.06|>.
"""

import jax.numpy as jnp
import numpy as np

from jaxwhisper.inference.timestamp_rules import TimestampIds, apply_timestamp_rules, first_step_mask

IDS = TimestampIds(begin=8, end=11, eot=6, no_timestamps=7, max_initial_index=2)
TEXT, EOT, NO_TS, TS = 3, 6, 7, 8


def allowed(logits, last, penultimate, last_timestamp):
    out = apply_timestamp_rules(
        jnp.asarray([logits], jnp.float32),
        jnp.asarray([last]),
        jnp.asarray([penultimate]),
        jnp.asarray([last_timestamp]),
        IDS,
    )
    return set(np.flatnonzero(np.isfinite(np.asarray(out[0]))).tolist())


FLAT = [0.0] * 12


def test_first_token_is_a_timestamp_no_later_than_the_maximum():
    assert set(np.flatnonzero(~first_step_mask(IDS, 12)).tolist()) == {8, 9, 10}


def test_after_a_complete_pair_text_follows():
    assert allowed(FLAT, last=9, penultimate=9, last_timestamp=9) == {0, 1, 2, 3, 4, 5, 6}


def test_after_an_open_timestamp_only_a_later_or_equal_timestamp_or_eot():
    likely_eot = [0.0] * 6 + [3.0] + [0.0] * 5
    assert allowed(likely_eot, last=9, penultimate=TEXT, last_timestamp=9) == {6, 9, 10, 11}
    # flat logits: the three timestamps together outweigh eot, which counts as text
    assert allowed(FLAT, last=9, penultimate=TEXT, last_timestamp=9) == {9, 10, 11}


def test_timestamps_never_decrease_after_text():
    # text after <|0.04|>: earlier timestamps are masked, text, eot and later ones stay
    likely_text = [0.0] * 12
    likely_text[TEXT] = 2.0
    kept = allowed(likely_text, last=TEXT, penultimate=TEXT, last_timestamp=10)
    assert kept == {0, 1, 2, 3, 4, 5, 6, 10, 11}


def test_no_timestamps_token_is_never_produced():
    assert NO_TS not in allowed(FLAT, last=TEXT, penultimate=TEXT, last_timestamp=-1)


def test_summed_timestamp_probability_above_the_best_text_token_forces_a_timestamp():
    # best text token: p ~ e^2; the 4 timestamps each ~ e^1.5: their sum (4 e^1.5 ~ 17.9) > e^2 (~7.4)
    logits = [0.0] * 6 + [0.0, 0.0] + [1.5] * 4
    logits[TEXT] = 2.0
    assert allowed(logits, last=TEXT, penultimate=TEXT, last_timestamp=-1) == {8, 9, 10, 11}
    # one timestamp at 1.5 (p ~ e^1.5 < e^2): text stays allowed
    logits = [0.0] * 6 + [0.0, 0.0, 1.5, -9.0, -9.0, -9.0]
    logits[TEXT] = 2.0
    assert TEXT in allowed(logits, last=TEXT, penultimate=TEXT, last_timestamp=-1)


def test_suppressed_ids_do_not_count_as_text():
    # every text token but one is suppressed upstream (-inf): the comparison uses that one
    logits = [-np.inf] * 6 + [-np.inf, 0.0] + [0.5, -9.0, -9.0, -9.0]
    logits[TEXT] = 1.0
    assert allowed(logits, last=TEXT, penultimate=TEXT, last_timestamp=-1) == {3, 8, 9, 10, 11}
