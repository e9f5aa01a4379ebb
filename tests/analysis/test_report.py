"""`jaxwhisper report` gathers run directories into the paper's tables and figures."""

import json

import numpy as np
import pytest

from jaxwhisper.analysis.report import ReportError, build_report, load_run
from jaxwhisper.cli import main


def _outliers(kurt, gates):
    per_dim = np.zeros(8, int)
    per_dim[3] = 9
    layers = {
        f"{side}/layers_{i}/{p}": {"kurtosis": kurt * (i + 1), "inf_norm": 2.0 + i, "max_inf_norm": 5.0,
                                   "outliers_per_dim": per_dim.tolist(), "outlier_share": 0.01}
        for side in ("encoder", "decoder") for i in range(2) for p in ("self_attn/out", "block_out")
    }  # fmt: skip
    g = (
        {"encoder/layers_0/self_attn/gate": {"edges": [0, 1, 2], "counts": [3, 4], "mean": 0.9}}
        if gates
        else {}
    )
    summary = {"avg_kurtosis": kurt, "max_inf_norm": 3.0, "avg_kurtosis_all": kurt, "max_inf_norm_all": 3.0}
    sink = {"decoder/layers_1/self_attn": {"mass_on_first_token": 0.5, "value_norm_ratio": 0.2}}
    return {"model": "m", "data": "d.jsonl", "utterances": 3, "padding": "excluded", "layers": layers,
            "gates": g, "summary": summary, "attention_sink": sink}  # fmt: skip


def _run(d, gate, kurt, wer, seed=0):
    (d / "quant").mkdir(parents=True)
    (d / "outliers").mkdir()
    student = {"encoder_layers": 2, "decoder_layers": 2, "gate": gate}
    (d / "config.json").write_text(json.dumps({"teacher": "tiny.en", "seed": seed, "student": student}))
    (d / "metrics.jsonl").write_text(
        json.dumps({"step": 5, "train/loss": 1.5, "train/ce": 1.0, "train/kl": 0.5}) + "\n"
        + json.dumps({"step": 5, "eval/wer": 80.0}) + "\n"
    )  # fmt: skip
    res = lambda w: {"datasets": {"manifest": {"wer": w}}}  # noqa: E731
    (d / "quant" / "results.json").write_text(json.dumps({"float": res(wer), "w8a8": res(wer + 7.25)}))
    gate = {"gate/decoder/layers_0/self_attn": 0.97} if gate != "none" else {}
    with (d / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 10, "eval/wer": 40.0}) + "\n")
        f.write(json.dumps({"step": 10, **gate}) + "\n")
    (d / "outliers" / "outliers.json").write_text(json.dumps(_outliers(kurt, gate != "none")))
    return d


def test_report_tables_and_figures(tmp_path):
    a = _run(tmp_path / "a", "none", 105.4, 12.5)
    b = _run(tmp_path / "b", "shared", 42.8, 11.0)
    text = build_report([a, b], tmp_path / "out" / "report.md")
    assert "| 2+2 gate=none | no | 105.4 | 3.00 |" in text
    assert "| 2+2 gate=shared | yes | 42.8 | 3.00 |" in text
    assert (
        "| 2+2 gate=none | no | w8a8 | 19.75 |" in text
        and "| 2+2 gate=shared | yes | float | 11.00 |" in text
    )
    assert "5: 80.0" in text and "1.500 (1.000 / 0.500)" in text
    figs = tmp_path / "out" / "report_figures"
    for name in ("outlier_share", "kurtosis", "gates"):
        assert (figs / f"{name}.png").stat().st_size > 1000
    data = json.loads((figs / "outlier_share.json").read_text())
    assert set(data["models"]) == {"2+2 gate=none", "2+2 gate=shared"}
    assert main(["report", "--runs", str(a), str(b), "--output", str(tmp_path / "r2.md")]) == 0


def test_spread_over_seeds(tmp_path):
    runs = [
        _run(tmp_path / "n0", "none", 100.0, 12.0, seed=0),
        _run(tmp_path / "n1", "none", 110.0, 16.0, seed=1),
        _run(tmp_path / "g0", "shared", 40.0, 11.0, seed=0),
        _run(tmp_path / "g1", "shared", 44.0, 13.0, seed=1),
        _run(tmp_path / "single", "per_head", 50.0, 20.0, seed=0),
    ]
    text = build_report(runs, tmp_path / "report.md")
    table = text.split("## Spread over seeds")[1].split("##")[0]
    # numpy's sample standard deviation: std([12, 16], ddof=1) = 2.83; w8a8 is float + 7.25.
    sd = lambda a, b: np.std([a, b], ddof=1)  # noqa: E731
    assert (
        f"| 2+2 gate=none | no | 0, 1 | 105.00 ± {sd(100, 110):.2f} (100.00-110.00) | "
        "3.00 ± 0.00 (3.00-3.00) | "
        f"14.00 ± {sd(12, 16):.2f} (12.00-16.00) | 21.25 ± {sd(12, 16):.2f} (19.25-23.25) |"
    ) in table
    assert f"| 2+2 gate=shared | yes | 0, 1 | 42.00 ± {sd(40, 44):.2f}" in table
    # A shape and gate with one run has no spread to show.
    assert "per_head" not in table
    assert "## Spread over seeds" not in build_report(runs[:1] + runs[2:3], tmp_path / "r2.md")


def test_partial_and_bad_runs(tmp_path):
    only_outliers = tmp_path / "teacher"
    (only_outliers / "outliers").mkdir(parents=True)
    (only_outliers / "outliers" / "outliers.json").write_text(json.dumps(_outliers(13.8, False)))
    text = build_report([only_outliers], tmp_path / "r.md")
    assert "No run has quantization results." in text and "| m | no | 13.8 |" in text
    assert load_run(only_outliers)["train"] is None
    with pytest.raises(ReportError, match="holds no training"):
        load_run(tmp_path)
    (only_outliers / "outliers" / "outliers.json").write_text("{broken")
    with pytest.raises(ReportError, match="outliers.json: not valid JSON"):
        load_run(only_outliers)
    assert main(["report", "--runs", str(tmp_path / "missing"), "--output", str(tmp_path / "x.md")]) == 2


def _hypotheses(run, precision, hyps):
    folder = run / "quant" / precision / "results.hypotheses"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"u{i}", "reference": "x", "hypothesis": h} for i, h in enumerate(hyps)]
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_errors_behind_each_wer_and_gates_per_layer(tmp_path):
    teacher = tmp_path / "teacher"
    (teacher / "quant").mkdir(parents=True)
    counts = {"substitutions": 1, "deletions": 0, "insertions": 0, "words": 10, "utterances": 3}
    (teacher / "quant" / "results.json").write_text(
        json.dumps({"float": {"datasets": {"manifest": {"wer": 10.0, **counts}}}})
    )
    _hypotheses(teacher, "float", ["Hello world.", "two", "three"])
    student = _run(tmp_path / "s", "shared", 42.8, 11.0)
    looping = {"substitutions": 2, "deletions": 1, "insertions": 30, "words": 10, "utterances": 3}
    (student / "quant" / "results.json").write_text(
        json.dumps({"float": {"datasets": {"manifest": {"wer": 330.0, **looping}}}})
    )
    # Equal after normalization (case, punctuation), different, equal.
    _hypotheses(student, "float", ["hello world", "too too too", "three"])
    text = build_report([teacher, student], tmp_path / "out" / "report.md")
    assert "| teacher | float | manifest | 10.00 | 1 | 0 | 0 | 10 | 3 | (reference) |" in text
    assert "| 2+2 gate=shared | float | manifest | 330.00 | 2 | 1 | 30 | 10 | 3 | 2 / 3 |" in text
    # The fake histogram has edges [0, 1, 2] and counts [3, 4]: no bin lies below 0.5.
    assert "| encoder/layers_0/self_attn/gate | 0.900 (0% < 0.5) |" in text
    figs = tmp_path / "out" / "report_figures"
    assert json.loads((figs / "validation.json").read_text()) == {"2+2 gate=shared": [[5, 80.0], [10, 40.0]]}
    assert (figs / "validation.png").stat().st_size > 1000
    gates = json.loads((figs / "gate_curves.json").read_text())
    assert gates == {"2+2 gate=shared": {"decoder/layers_0/self_attn": [[10, 0.97]]}}
