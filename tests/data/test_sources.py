"""Data specs: manifests, audio folders, and hub corpora read from local parquet files that
carry each corpus's own schema."""

import io
import json

import numpy as np
import pytest
import soundfile as sf

from jaxwhisper.data.examples import DataSpecError
from jaxwhisper.data.sources import parse_spec
from jaxwhisper.data.validation import ValidationConfig, validate_example

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("datasets")


def _flac(seconds=0.5, sr=16000, seed=0) -> bytes:
    buf = io.BytesIO()
    x = 0.1 * np.random.default_rng(seed).normal(size=int(seconds * sr)).astype(np.float32)
    sf.write(buf, x, sr, format="FLAC")
    return buf.getvalue()


# Columns of each hub dataset (as their parquet exports have them) and rows with the quirks
# their cleaning rules handle: (rows, expected cleaned texts, None = dropped).
SCHEMAS = {
    "librispeech": (
        [{"file": "a.flac", "text": "HELLO WORLD", "speaker_id": 1, "chapter_id": 2, "id": "1-2-0"}],
        ["HELLO WORLD"],
        "1-2-0",
    ),
    "common_voice": (
        [
            {
                "client_id": "c",
                "path": "cv_1.mp3",
                "sentence": '"Quoted words"',
                "up_votes": 2,
                "age": "",
                "gender": "",
                "accent": "",
                "locale": "en",
                "segment": "",
            }
        ],
        ["Quoted words."],
        "cv_1.mp3",
    ),
    "peoples_speech": (
        [{"id": "ps1", "duration_ms": 500, "text": "lower case words"}],
        ["lower case words"],
        "ps1",
    ),
    "voxpopuli": (
        [
            {
                "audio_id": "v1",
                "language": 0,
                "raw_text": "",
                "normalized_text": "normalized only",
                "gender": "f",
                "speaker_id": "s",
                "is_gold_transcript": True,
                "accent": "None",
            }
        ],
        ["normalized only"],
        "v1",
    ),
    "tedlium": (
        [
            {"text": "it 's a <unk> test", "speaker_id": "s", "gender": 1, "file": "f", "id": "t1"},
            {
                "text": "ignore_time_segment_in_scoring",
                "speaker_id": "s",
                "gender": 1,
                "file": "f",
                "id": "t2",
            },
        ],
        ["it's a test", None],
        "t1",
    ),
    "fleurs": (
        [
            {
                "id": 7,
                "num_samples": 8000,
                "path": "p",
                "transcription": "lower",
                "raw_transcription": "Raw Text.",
                "gender": 0,
                "lang_id": 19,
                "language": "English",
                "lang_group_id": 0,
            }
        ],
        ["Raw Text."],
        "7",
    ),
    "gigaspeech": (
        [
            {
                "segment_id": "g1",
                "speaker": "N/A",
                "text": "HELLO <COMMA> WORLD <PERIOD>",
                "begin_time": 0.0,
                "end_time": 1.0,
                "audio_id": "a",
                "title": "t",
                "url": "u",
                "source": 0,
                "category": 0,
                "original_full_path": "p",
            },
            {
                "segment_id": "g2",
                "speaker": "N/A",
                "text": "<MUSIC>",
                "begin_time": 0.0,
                "end_time": 1.0,
                "audio_id": "a",
                "title": "t",
                "url": "u",
                "source": 0,
                "category": 0,
                "original_full_path": "p",
            },
        ],
        ["hello, world.", None],
        "g1",
    ),
}


@pytest.mark.parametrize("corpus", sorted(SCHEMAS))
def test_corpus_schema_from_local_parquet(corpus, tmp_path):
    rows, expected, first_id = SCHEMAS[corpus]
    for i, r in enumerate(rows):
        r["audio"] = {"bytes": _flac(seed=i), "path": f"{i}.flac"}
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "test-00000.parquet")
    src = parse_spec(f"{corpus}@test?data_files={tmp_path}/*.parquet")
    assert len(src) == len(rows)
    assert src[0].id == first_id
    got = [None if src[i].drop else src[i].text for i in range(len(src))]
    assert got == expected
    audio, _, reason = validate_example(src[0], ValidationConfig())
    assert reason is None and audio.shape == (8000,)


def test_generic_hub_spec_and_streaming(tmp_path):
    rows = [
        {"audio": {"bytes": _flac(seed=i), "path": f"{i}.flac"}, "sentence": f"s{i}", "key": f"k{i}"}
        for i in range(3)
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    src = parse_spec(f"hf:someone/data@train?data_files={tmp_path}/d.parquet&text=sentence&id=key")
    assert [src[i].text for i in range(3)] == ["s0", "s1", "s2"] and src[2].id == "k2"
    stream = parse_spec(f"hf:someone/data@train?data_files={tmp_path}/d.parquet&text=sentence&streaming=1")
    assert stream.streaming and [r.text for r in stream] == ["s0", "s1", "s2"]
    with pytest.raises(TypeError):
        len(stream)


def test_manifest_and_audiofolder(tmp_path, fixture_manifest):
    src = parse_spec(str(fixture_manifest))
    assert len(src) == 59 and src[0].id == "mfa__falsetto"
    assert parse_spec(f"jsonl:{fixture_manifest}")[1].text == src[1].text
    (tmp_path / "train").mkdir()
    for i in range(2):
        (tmp_path / "train" / f"c{i}.flac").write_bytes(_flac(seed=i))
    (tmp_path / "train" / "metadata.csv").write_text("file_name,transcription\nc0.flac,zero\nc1.flac,one\n")
    folder = parse_spec(f"audiofolder:{tmp_path}@train")
    assert [folder[i].text for i in range(2)] == ["zero", "one"] and folder[1].id == "c1"


def test_bad_specs_are_clear(tmp_path):
    with pytest.raises(DataSpecError, match="no such manifest"):
        parse_spec(str(tmp_path / "none.jsonl"))
    with pytest.raises(DataSpecError, match="unknown data spec"):
        parse_spec("ftp:whatever")
    with pytest.raises(DataSpecError, match="need a split"):
        parse_spec("librispeech")
    with pytest.raises(DataSpecError, match="matches no file"):
        parse_spec(f"librispeech@test?data_files={tmp_path}/*.parquet")
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "x"}) + "\n")
    assert parse_spec(str(tmp_path / "m.jsonl"))[0].error.startswith("bad manifest row")


def test_a_non_string_text_is_a_bad_row(tmp_path, fixture_manifest):
    """`"text": 42` would pass decoding and crash the WER at the end; it is an error row."""
    rows = [{"id": "n", "audio": "a.flac", "text": 42}, {"id": "l", "audio": "a.flac", "text": ["x"]}]
    rows.append({"id": "ok", "audio": "a.flac", "text": "fine"})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    src = parse_spec(str(tmp_path / "m.jsonl"))
    assert src[0].error == "bad manifest row (text is int, not a string)" and src[0].id == "n"
    assert "text is list" in src[1].error and src[2].error is None and src[2].text == "fine"
