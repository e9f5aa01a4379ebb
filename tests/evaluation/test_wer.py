"""Word error rate against hand-counted edits (Levenshtein over words: S + D + I over reference
words), normalization, and the empty-reference rule."""

import math

import pytest

from jaxwhisper.evaluation.wer import normalize_text, word_error_rate


def test_one_substitution_and_one_deletion():
    # the cat sat on the mat -> the cat sit on mat: sat/sit substituted, the second "the" deleted.
    r = word_error_rate(["the cat sat on the mat"], ["the cat sit on mat"])
    assert (r.substitutions, r.deletions, r.insertions, r.words) == (1, 1, 0, 6)
    assert r.wer == pytest.approx(100 * 2 / 6)


def test_corpus_wer_pools_the_counts_not_the_rates():
    refs = ["the cat sat on the mat", "hello world"]
    hyps = ["the cat sit on mat", "hello big world"]  # 2 edits / 6 words, 1 insertion / 2 words
    r = word_error_rate(refs, hyps)
    assert (r.substitutions, r.deletions, r.insertions, r.words, r.utterances) == (1, 1, 1, 8, 2)
    assert r.wer == pytest.approx(100 * 3 / 8)  # not the mean of 33.3% and 50%


def test_insertions_can_exceed_100_percent():
    r = word_error_rate(["yes"], ["no no no"])
    assert (r.substitutions, r.deletions, r.insertions, r.words) == (1, 0, 2, 1)
    assert r.wer == pytest.approx(300.0)


def test_an_empty_or_missing_hypothesis_is_all_deletions():
    r = word_error_rate(["alpha beta gamma", "delta epsilon"], ["", None])
    assert (r.substitutions, r.deletions, r.insertions, r.words) == (0, 5, 0, 5)
    assert r.wer == pytest.approx(100.0)


def test_identical_after_normalization_is_zero():
    r = word_error_rate(["Hello, World!  How are you?"], ["hello world how are you"])
    assert r.wer == 0.0 and r.words == 5


def test_empty_references_are_skipped_and_counted():
    r = word_error_rate(["", "   ", "good morning"], ["noise", "more noise", "good evening"])
    assert (r.utterances, r.skipped_empty_refs, r.words, r.substitutions) == (1, 2, 2, 1)
    assert r.wer == pytest.approx(50.0)
    nothing = word_error_rate(["", " \n "], ["a", "b"])
    assert math.isnan(nothing.wer) and nothing.skipped_empty_refs == 2 and nothing.words == 0


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        word_error_rate(["a", "b"], ["a"])


def test_telephone_keys_are_spoken_words():
    assert normalize_text("Press * then #.") == "press star then pound"
    assert word_error_rate(["press * to repeat"], ["press star to repeat"]).wer == 0.0


def test_normalizer_is_whispers_english_one():
    # Titles spelled out, British spellings and number words standardized (OpenAI's rules).
    assert normalize_text("Mr. Smith, colour") == "mister smith color"
    assert normalize_text("Twenty-five dollars") == "$25"
