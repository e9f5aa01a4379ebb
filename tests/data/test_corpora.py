"""The paper's corpora: hub locations and columns as the module's table documents them, and each
cleaning rule on hand-written transcripts."""

import pytest

from jaxwhisper.data.corpora import CORPORA

# name: (hub id, config, text column, id column), from the table in corpora.py's docstring.
TABLE = {
    "librispeech": ("openslr/librispeech_asr", "clean", "text", "id"),
    "common_voice": ("mozilla-foundation/common_voice_16_1", "en", "sentence", "path"),
    "peoples_speech": ("MLCommons/peoples_speech", "clean", "text", "id"),
    "voxpopuli": ("facebook/voxpopuli", "en", "raw_text", "audio_id"),
    "tedlium": ("LIUM/tedlium", "release3", "text", "id"),
    "fleurs": ("google/fleurs", "en_us", "raw_transcription", "id"),
    "gigaspeech": ("speechcolab/gigaspeech", "xs", "text", "segment_id"),
}


def clean(name: str, **row):
    return CORPORA[name].clean(row)


def test_table():
    assert {n: (c.repo, c.config, c.text, c.id) for n, c in CORPORA.items()} == TABLE
    assert all(c.audio == "audio" for c in CORPORA.values())


@pytest.mark.parametrize(
    "name, column, text",
    [
        ("librispeech", "text", "HE HOPED THERE WOULD BE STEW FOR DINNER"),
        ("peoples_speech", "text", "and so we went there"),
        ("fleurs", "raw_transcription", 'A "quoted" word, kept as is'),
    ],
)
def test_corpora_without_cleaning_pass_the_text_through(name, column, text):
    assert clean(name, **{column: text}) == text
    assert clean(name) is None  # no text column: nothing to train on


@pytest.mark.parametrize(
    "sentence, want",
    [
        ('"Hello there"', "Hello there."),  # wrapping quotes stripped, full stop added
        ('  " Spaced out. "  ', "Spaced out."),
        ("Is it raining?", "Is it raining?"),
        ("What a day!", "What a day!"),
        ("Done.", "Done."),
        ('He said "no"', 'He said "no".'),  # quotes inside are kept
        ("", ""),  # empty stays empty (the pipeline drops it as empty_text)
    ],
)
def test_common_voice(sentence, want):
    assert clean("common_voice", sentence=sentence) == want


def test_common_voice_without_a_sentence_is_empty():
    assert clean("common_voice") == ""


def test_voxpopuli_prefers_raw_text_then_normalized():
    assert clean("voxpopuli", raw_text="  The Council agrees. ", normalized_text="the council agrees") == (
        "The Council agrees."
    )
    assert clean("voxpopuli", raw_text="", normalized_text="the council agrees") == "the council agrees"
    assert clean("voxpopuli", raw_text="   ", normalized_text="fallback") == "fallback"


@pytest.mark.parametrize(
    "text, want",
    [
        ("ignore_time_segment_in_scoring", None),
        ("and then ignore_time_segment_in_scoring", None),
        ("so <unk> we went", "so we went"),
        ("<unk> it 's what we do <unk>", "it's what we do"),
        ("the world 's oceans and they 're warm", "the world's oceans and they're warm"),
        ("plain text", "plain text"),
    ],
)
def test_tedlium(text, want):
    assert clean("tedlium", text=text) == want


@pytest.mark.parametrize(
    "text, want",
    [
        ("HELLO <COMMA> HOW ARE YOU <QUESTIONMARK>", "hello, how are you?"),
        ("IT WORKS <PERIOD> GREAT <EXCLAMATIONPOINT>", "it works. great!"),
        ("<SIL>", None),
        ("SOME WORDS <MUSIC>", None),
        ("<NOISE>", None),
        ("<OTHER>", None),
        ("AS  IS", "as is"),
    ],
)
def test_gigaspeech(text, want):
    assert clean("gigaspeech", text=text) == want
