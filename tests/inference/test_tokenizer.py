"""The Whisper tokenizer on tiny.en's own tokenizer.json (no weights loaded): special ids and
prefixes against the file's added tokens, suppression against the ids CTranslate2's converter
wrote into the same model's config.json, GPT-2 ids of a known phrase."""

import json

import pytest

from jaxwhisper.inference.tokenizer import WhisperTokenizer
from jaxwhisper.models.weights.resolve import bundled_model_files


@pytest.fixture(scope="module")
def tok_dir():
    return bundled_model_files("tiny.en")[1]


@pytest.fixture(scope="module")
def added(tok_dir) -> dict:
    """{content: id} of the special tokens, read from tokenizer.json itself."""
    data = json.loads((tok_dir / "tokenizer.json").read_text())
    return {t["content"]: t["id"] for t in data["added_tokens"]}


def test_english_special_ids_and_prefix(tok_dir, added):
    tok = WhisperTokenizer(tok_dir, multilingual=False)
    assert (tok.eot, tok.sot, tok.no_timestamps) == (50256, 50257, 50362)
    assert (added["<|endoftext|>"], added["<|startoftranscript|>"], added["<|notimestamps|>"]) == (
        50256,
        50257,
        50362,
    )
    assert tok.prefix == (50257, 50362)  # no language or task tokens for an .en model


def test_multilingual_prefix(tok_dir, added):
    tok = WhisperTokenizer(tok_dir, multilingual=True, language="de", task="translate")
    assert tok.prefix == (
        added["<|startoftranscript|>"],
        added["<|de|>"],
        added["<|translate|>"],
        added["<|notimestamps|>"],
    )


def test_suppression_matches_the_ctranslate2_export(tok_dir):
    cfg = json.loads((tok_dir / "config.json").read_text())
    tok = WhisperTokenizer(tok_dir, multilingual=False)
    assert list(tok.suppress_tokens) == sorted(cfg["suppress_ids"])
    assert list(tok.suppress_at_begin) == cfg["suppress_ids_begin"]  # a blank, then end-of-text


def test_encode_decode(tok_dir):
    tok = WhisperTokenizer(tok_dir / "tokenizer.json", multilingual=False)  # the file itself also works
    assert tok.encode(" Hello world.") == [18435, 995, 13]  # GPT-2's byte-level BPE ids
    # Special and timestamp tokens (ids >= eot) are dropped from text.
    assert tok.decode([50257, 50362, 18435, 995, 13, 50256, 50363]) == " Hello world."
    text = " Thirty-one ducks, 2 geese; naïve café."
    assert tok.decode(tok.encode(text)) == text


def test_bad_arguments(tok_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        WhisperTokenizer(tmp_path, multilingual=False)
    with pytest.raises(ValueError, match="unknown language 'xx'"):
        WhisperTokenizer(tok_dir, multilingual=True, language="xx")
    with pytest.raises(ValueError, match="task must be transcribe or translate"):
        WhisperTokenizer(tok_dir, multilingual=False, task="summarize")
