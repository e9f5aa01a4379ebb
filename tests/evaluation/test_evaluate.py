"""Evaluation: counted skips, results.json, 8 devices == 1 device, the `evaluate` command."""

import json
import shutil

import jax
import pytest

from jaxwhisper.cli import main
from jaxwhisper.data.eval_sets import load_eval_set
from jaxwhisper.evaluation.evaluate import evaluate_model
from jaxwhisper.quant.calibrate import calibrate_on_audio
from jaxwhisper.quant.config import QuantConfig
from jaxwhisper.quant.ptq import quantize_model

pytestmark = pytest.mark.slow  # the real tiny.en


@pytest.fixture(scope="module")
def eval_manifest(tmp_path_factory, fixture_manifest):
    """8 good clips with references, then a missing file, a row without text, a row whose
    text is a number (it crashed the WER after all the decoding), a broken line."""
    d = tmp_path_factory.mktemp("eval")
    rows = [json.loads(x) for x in fixture_manifest.read_text().splitlines()]
    # Clips of 4-25 words: a batch decodes until its longest row ends, and the fixture's
    # 60-word clips more than doubled the decode steps of every evaluation here.
    rows = [r for r in rows if 4 <= len(r["text"].split()) <= 25][:8]
    for r in rows:
        shutil.copy(fixture_manifest.parent / r["audio"], d / r["audio"].split("/")[-1])
        r["audio"] = r["audio"].split("/")[-1]
    rows += [{"id": "missing", "audio": "nope.wav", "text": "x"}, {"id": "notext", "audio": rows[0]["audio"]}]
    rows += [{"id": "number", "audio": rows[1]["audio"], "text": 42}]
    path = d / "set.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n")
    return path


@pytest.fixture(scope="module")
def calibration_clips(fixture_manifest, eval_manifest):
    evaluated = set(load_eval_set(str(eval_manifest)).ids)
    data = load_eval_set(str(fixture_manifest))
    calibration = [c for i, c in zip(data.ids, data.clips) if i not in evaluated][:8]
    assert len(calibration) == 8 and len(evaluated) == 8
    return calibration


def test_skips_are_counted_not_lost(eval_manifest):
    data = load_eval_set(str(eval_manifest))
    assert len(data.clips) == 8
    assert dict(data.skipped) == {"bad_audio": 1, "no_reference": 1, "bad_row": 2}
    assert all(isinstance(r, str) for r in data.references)


def test_eight_devices_give_the_hypotheses_of_one(tiny_en, eval_manifest, calibration_clips, tmp_path):
    assert jax.local_device_count() == 8
    q = QuantConfig(calibration_batches=1)
    calibration = calibrate_on_audio(tiny_en, calibration_clips, q, batch_size=8)
    quantized = quantize_model(tiny_en, q, calibration)
    data = [load_eval_set(str(eval_manifest))]
    out = {}
    # Float transcription on 8 devices against 1 is tests/inference/test_transcribe.py's; here
    # the quantized model (its interceptor under the mesh) and evaluate's own gathering.
    for n in (1, 8):
        res = evaluate_model(
            quantized, data, tmp_path / f"w8a8{n}" / "r.json", 8, devices=jax.local_devices()[:n]
        )
        out[n] = (res, (tmp_path / f"w8a8{n}" / "r.hypotheses" / "set.jsonl").read_text())
    assert out[1][1] == out[8][1]
    a, b = out[1][0]["datasets"]["set"], out[8][0]["datasets"]["set"]
    assert {k: v for k, v in a.items() if k != "wall_s"} == {k: v for k, v in b.items() if k != "wall_s"}
    assert out[8][0]["quantization"]["name"] == "w8a8"
    assert b["utterances"] == 8 and b["skipped"] == {
        "bad_row": 2,
        "text_rule": 0,
        "no_reference": 1,
        "bad_audio": 1,
    }
    assert b["wer"] == pytest.approx(
        100 * (b["substitutions"] + b["deletions"] + b["insertions"]) / b["words"]
    )
    assert b["wer"] < 25  # W8A8 tiny.en on clean read speech; a broken pipeline gives ~100


def test_evaluate_command(eval_manifest, fixture_manifest, tmp_path, capsys):
    out = tmp_path / "res.json"
    args = ["evaluate", "--model", "tiny.en", "--data", str(eval_manifest), "--batch-size", "8"]
    assert main([*args, "--output", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res) == {"model", "quantization", "decoding", "datasets"} and res["quantization"] is None
    assert res["decoding"] == "greedy"
    assert set(res["datasets"]["set"]) >= {
        "wer", "substitutions", "deletions", "insertions", "words", "utterances", "audio_s", "wall_s",
    }  # fmt: skip
    assert res["datasets"]["set"]["wer"] < 25  # tiny.en on clean read speech
    assert "| tiny.en |" in capsys.readouterr().out
    assert len((tmp_path / "res.hypotheses" / "set.jsonl").read_text().splitlines()) == 8
    fb = tmp_path / "fallback.json"
    assert main([*args, "--max-examples", "4", "--temperature-fallback", "--output", str(fb)]) == 0
    res = json.loads(fb.read_text())
    assert res["decoding"] == "temperature fallback" and res["datasets"]["set"]["utterances"] == 4
    assert res["datasets"]["set"]["wer"] < 25
    # Activation quantization without calibration data, or calibrating on the test set: errors.
    assert main([*args, "--quantize", "w8a8", "--output", str(out)]) == 2
    assert "--calibration" in capsys.readouterr().err
    bad = [*args, "--quantize", "w8a8", "--calibration", str(eval_manifest), "--output", str(out)]
    assert main(bad) == 2
    assert (
        main([*args, "--quantize", "w9a9", "--calibration", str(fixture_manifest), "--output", str(out)]) == 2
    )
