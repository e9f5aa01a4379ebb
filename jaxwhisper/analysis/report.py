"""`jaxwhisper report`: the results of several runs in the paper's shapes, with figures.

A run directory holds any of (each part is optional; a missing part is a dash, not an error):
  config.json, metrics.jsonl  -- a distillation run (`train.py --workdir RUN`),
  quant/results.json          -- `quantize.py --workdir RUN/quant` ({label: results}),
  outliers/outliers.json      -- `jaxwhisper outliers --output RUN/outliers`.

The report (Markdown) has: the runs (teacher, student shape, gate, steps, final losses and
validation WER), Table 1 (average kurtosis and maximum infinity norm of the attention
outputs, per run), Table 2 (WER per test set, float and each quantization, per run), the
errors behind each WER (substitutions, deletions, insertions, and how many transcripts equal
the reference model's, so that a looping or silent model shows as such), the mean gate per
layer of gated runs, the validation curves, the outlier-share figure of every run side by
side (paper Fig. 2), kurtosis per layer, the gate histograms and each run's attention figure
(paper Fig. 1).

The reference model for "= reference" is the first run that was not trained here (the
teacher, in `reproduce.py`'s layout): a student's transcript counts when its normalized text
equals the reference model's float transcript of the same utterance.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Optional

import numpy as np

from jaxwhisper.analysis import plots
from jaxwhisper.evaluation.wer import normalize_text

log = logging.getLogger(__name__)


class ReportError(ValueError):
    pass


def _read_json(path: Path) -> Optional[dict]:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ReportError(f"{path}: not valid JSON ({e})") from None


def load_run(run: Path) -> dict:
    """What a run directory holds: {"dir", "label", "train", "quant", "outliers"}."""
    run = Path(run)
    if not run.is_dir():
        raise ReportError(f"{run}: no such run directory")
    config = _read_json(run / "config.json")
    train = None
    if config is not None:
        rows = []
        metrics = run / "metrics.jsonl"
        if metrics.exists():
            for i, line in enumerate(metrics.read_text().splitlines()):
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    raise ReportError(f"{metrics}:{i + 1}: not a JSON line") from None
        last_train = next((r for r in reversed(rows) if "train/loss" in r), {})
        evals = [r for r in rows if "eval/wer" in r]
        s = config.get("student", {})
        train = {
            "teacher": config.get("teacher"),
            "student": f"{s.get('encoder_layers')}+{s.get('decoder_layers')}",
            "gate": s.get("gate", "none"),
            "seed": config.get("seed"),
            "steps": last_train.get("step"),
            "loss": last_train.get("train/loss"),
            "ce": last_train.get("train/ce"),
            "kl": last_train.get("train/kl"),
            "curve": [(r["step"], r["eval/wer"]) for r in evals],
            "gates": _gate_metrics(rows),
        }
    quant = _read_json(run / "quant" / "results.json")
    hypotheses = _read_hypotheses(run / "quant", quant) if quant else {}
    outliers = _read_json(run / "outliers" / "outliers.json")
    if train is None and quant is None and outliers is None:
        raise ReportError(f"{run}: holds no training, quantization or outlier results")
    if train:
        label = f"{train['student']} gate={train['gate']}"
    elif outliers:
        label = outliers["model"]
    else:
        label = run.name
    return {
        "dir": run,
        "label": label,
        "train": train,
        "quant": quant,
        "hypotheses": hypotheses,
        "outliers": outliers,
    }


def _gate_metrics(rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """{attention path: [(step, mean gate)]} from the `gate/PATH` metrics of a gated run."""
    out: dict[str, list] = {}
    for r in rows:
        for k, v in r.items():
            if k.startswith("gate/"):
                out.setdefault(k[len("gate/") :], []).append((r["step"], v))
    return out


def _read_hypotheses(quant_dir: Path, quant: dict) -> dict:
    """{precision: {set: {id: hypothesis}}} from `quant/PRECISION/results.hypotheses/SET*.jsonl`
    (one file per process in a multi-host run); sets without files are left out."""
    out: dict = {}
    for precision, res in quant.items():
        for name in res.get("datasets", {}):
            rows = {}
            folder = quant_dir / precision / "results.hypotheses"
            for path in sorted(folder.glob(f"{name}*.jsonl")):
                if path.stem != name and not path.stem.startswith(f"{name}-"):
                    continue  # another set whose name starts with this one
                for i, line in enumerate(path.read_text().splitlines()):
                    try:
                        row = json.loads(line)
                        rows[row["id"]] = row["hypothesis"]
                    except (ValueError, KeyError, TypeError):
                        raise ReportError(f"{path}:{i + 1}: not a hypothesis row") from None
            if rows:
                out.setdefault(precision, {})[name] = rows
    return out


def same_as_reference(hyps: dict, reference: dict) -> tuple[int, int]:
    """(utterances whose normalized hypothesis equals the reference's, utterances in both)."""
    common = [k for k in hyps if k in reference]
    same = sum(normalize_text(hyps[k] or "") == normalize_text(reference[k] or "") for k in common)
    return same, len(common)


def _f(x, fmt="{:.2f}") -> str:
    return "—" if x is None else fmt.format(x)


def _gate(run: dict) -> str:
    if run["train"]:
        return "yes" if run["train"]["gate"] != "none" else "no"
    if run["outliers"]:
        return "yes" if run["outliers"].get("gates") else "no"
    return "—"


def build_report(runs: list[Path], output: Path) -> str:
    """Writes `output` (Markdown) and its figures in `output`'s directory; returns the text."""
    loaded = [load_run(r) for r in runs]
    labels = [r["label"] for r in loaded]
    groups = {label: [r for r in loaded if r["label"] == label] for label in dict.fromkeys(labels)}
    for r in loaded:  # two runs of one shape: tell them apart by directory
        if labels.count(r["label"]) > 1:
            r["label"] = f"{r['label']} ({r['dir'].name})"
    output = Path(output)
    out_dir = output.parent
    fig_dir = out_dir / (output.stem + "_figures")
    fig_dir.mkdir(parents=True, exist_ok=True)
    rel = lambda p: os.path.relpath(p, out_dir)  # noqa: E731
    lines = ["# jaxwhisper report", ""]

    header = (
        "| run | directory | teacher | student | gate | steps | loss (CE / KL) | validation WER % by step |"
    )
    lines += ["## Runs", "", header, "|---|---|---|---|---|---|---|---|"]
    for r in loaded:
        t = r["train"]
        if t:
            curve = ", ".join(f"{s}: {w:.1f}" for s, w in t["curve"]) or "—"
            loss = f"{_f(t['loss'], '{:.3f}')} ({_f(t['ce'], '{:.3f}')} / {_f(t['kl'], '{:.3f}')})"
            row = [t["teacher"], t["student"], t["gate"], _f(t["steps"], "{}"), loss, curve]
        else:
            row = ["—", "(not trained here)", _gate(r), "—", "—", "—"]
        lines.append(f"| {r['label']} | `{r['dir']}` | " + " | ".join(str(x) for x in row) + " |")

    with_outliers = [r for r in loaded if r["outliers"]]
    lines += ["", "## Table 1: outliers of the attention outputs", ""]
    if with_outliers:
        o0 = with_outliers[0]["outliers"]
        lines += [f"Data: `{o0['data']}`, {o0['utterances']} utterances, padding {o0['padding']}. "
                  "Kurtosis: Pearson (normal = 3), per utterance, averaged over utterances and over the "
                  "attention output projections; infinity norm: per utterance, averaged, maximum over "
                  "those layers.", "",
                  "| run | gate | avg. kurtosis | max. inf. norm | avg. kurtosis (all points) "
                  "| max. inf. norm (all points) |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for r in with_outliers:
            s = r["outliers"]["summary"]
            lines.append(
                f"| {r['label']} | {_gate(r)} | {s['avg_kurtosis']:.1f} | {s['max_inf_norm']:.2f} | "
                f"{s['avg_kurtosis_all']:.1f} | {s['max_inf_norm_all']:.1f} |"
            )
    else:
        lines.append("No run has outlier statistics.")

    with_quant = [r for r in loaded if r["quant"]]
    lines += ["", "## Table 2: WER (%) before and after quantization", ""]
    if with_quant:
        sets: list[str] = []
        for r in with_quant:
            for res in r["quant"].values():
                sets += [s for s in res["datasets"] if s not in sets]
        lines += [
            "| run | gate | precision | " + " | ".join(sets) + " |",
            "|---|---|---|" + "---|" * len(sets),
        ]
        for r in with_quant:
            for precision, res in r["quant"].items():
                cells = [_f(res["datasets"].get(s, {}).get("wer")) for s in sets]
                lines.append(f"| {r['label']} | {_gate(r)} | {precision} | " + " | ".join(cells) + " |")
    else:
        lines.append("No run has quantization results.")

    lines += _seed_table({k: g for k, g in groups.items() if len(g) > 1})
    if with_quant:
        lines += _error_table(loaded, with_quant)
    lines += _gate_table(loaded)

    lines += ["", "## Figures", ""]
    curves = {r["label"]: r["train"]["curve"] for r in loaded if r["train"] and r["train"]["curve"]}
    if curves:
        fig = plots.validation_curves(curves, fig_dir / "validation.png")
        lines += ["Validation WER during training:", "", f"![validation]({rel(fig)})", ""]
    gate_runs = {r["label"]: r["train"]["gates"] for r in loaded if r["train"] and r["train"]["gates"]}
    if gate_runs:
        fig = plots.gate_curves(gate_runs, fig_dir / "gate_curves.png")
        lines += ["Mean gate per attention layer during training:", "", f"![gate curves]({rel(fig)})", ""]
    if with_outliers:
        # The last decoder layer's self-attention output projection of each run (paper Fig. 2).
        per_dim = {}
        for r in with_outliers:
            layers = r["outliers"]["layers"]
            n_dec = sum(1 for p in layers if p.startswith("decoder/") and p.endswith("/self_attn/out"))
            point = f"decoder/layers_{n_dec - 1}/self_attn/out"
            per_dim[r["label"]] = layers[point]["outliers_per_dim"]
        title = "last decoder layer's self-attention output projection"
        fig = plots.outlier_share(per_dim, title, fig_dir / "outlier_share.png")
        lines += [
            f"Outliers per hidden dimension, {title} (paper Fig. 2):",
            "",
            f"![outlier share]({rel(fig)})",
            "",
        ]
        all_points: list[str] = []
        for r in with_outliers:
            all_points += [p for p in r["outliers"]["layers"] if p.endswith("/out") and p not in all_points]
        fig = plots.kurtosis({r["label"]: r["outliers"]["layers"] for r in with_outliers}, all_points,
                             fig_dir / "kurtosis.png")  # fmt: skip
        lines += ["Kurtosis of each attention output:", "", f"![kurtosis]({rel(fig)})", ""]
        gated = {r["label"]: r["outliers"]["gates"] for r in with_outliers if r["outliers"].get("gates")}
        if gated:
            fig = plots.gates(gated, fig_dir / "gates.png")
            lines += ["Gate values (gated runs):", "", f"![gates]({rel(fig)})", ""]
        for i, r in enumerate(with_outliers):
            src = r["dir"] / "outliers" / "attention.png"
            if src.exists():
                dst = fig_dir / f"attention_{i}_{r['dir'].name}.png"
                shutil.copyfile(src, dst)
                sink = r["outliers"].get("attention_sink") or {}
                numbers = "; ".join(
                    f"{k.split('/')[1]}: {100 * v['mass_on_first_token']:.0f}% mass, "
                    f"|v| x{v['value_norm_ratio']:.2f}"
                    for k, v in sink.items()
                )
                lines += [
                    f"Attention of {r['label']} (paper Fig. 1). Mass on <|startoftranscript|> and its "
                    f"relative value norm per decoder layer: {numbers}",
                    "",
                    f"![attention]({rel(dst)})",
                    "",
                ]
    else:
        lines.append("No figures: no run has outlier statistics.")
    text = "\n".join(lines) + "\n"
    output.write_text(text)
    return text


def _spread(values: list) -> str:
    """mean ± sample standard deviation (min-max) of the values that exist."""
    v = [x for x in values if x is not None]
    if not v:
        return "—"
    if len(v) == 1:
        return f"{v[0]:.2f} (one run)"
    return f"{np.mean(v):.2f} ± {np.std(v, ddof=1):.2f} ({min(v):.2f}-{max(v):.2f})"


def _seed_table(groups: dict[str, list[dict]]) -> list[str]:
    """Tables 1 and 2 as mean ± std over the runs of one shape and gate (seeds)."""
    if not groups:
        return []
    keys = []  # (precision, test set) in order of appearance
    for runs in groups.values():
        for r in runs:
            for precision, res in (r["quant"] or {}).items():
                keys += [(precision, d) for d in res["datasets"] if (precision, d) not in keys]
    lines = [
        "",
        "## Spread over seeds",
        "",
        "Runs of one student shape and gate, each seed its own initialisation and data order: "
        "mean ± sample standard deviation (min-max).",
        "",
        "| student | gate | seeds | avg. kurtosis | max. inf. norm | "
        + " | ".join(f"{p} WER % {d}" for p, d in keys)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(keys),
    ]
    for label, runs in groups.items():
        seeds = ", ".join(str(r["train"]["seed"]) if r["train"] else "?" for r in runs)
        summary = [(r["outliers"] or {}).get("summary", {}) for r in runs]
        cells = [
            _spread([s.get("avg_kurtosis") for s in summary]),
            _spread([s.get("max_inf_norm") for s in summary]),
        ]
        for p, d in keys:
            cells.append(
                _spread(
                    [(r["quant"] or {}).get(p, {}).get("datasets", {}).get(d, {}).get("wer") for r in runs]
                )
            )
        lines.append(f"| {label} | {_gate(runs[0])} | {seeds} | " + " | ".join(cells) + " |")
    return lines


def _error_table(loaded: list[dict], with_quant: list[dict]) -> list[str]:
    reference = next((r for r in loaded if r["train"] is None and r["hypotheses"].get("float")), None)
    ref_hyps = reference["hypotheses"]["float"] if reference else {}
    ref_name = reference["label"] if reference else None
    lines = [
        "",
        "### Errors behind Table 2",
        "",
        "S / D / I: substituted, deleted and inserted words (a looping model inserts, a silent one "
        "deletes). "
        + (
            f"= reference: transcripts equal to {ref_name}'s float transcript after normalization."
            if reference
            else "No run without training holds float hypotheses, so no reference column."
        ),
        "",
        "| run | precision | set | WER % | S | D | I | words | utterances | = reference |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in with_quant:
        for precision, res in r["quant"].items():
            for name, d in res["datasets"].items():
                hyps = r["hypotheses"].get(precision, {}).get(name)
                if r is reference and precision == "float":
                    same = "(reference)"
                elif hyps is not None and name in ref_hyps:
                    k, n = same_as_reference(hyps, ref_hyps[name])
                    same = f"{k} / {n}"
                else:
                    same = "—"
                cells = [_f(d.get("wer"))] + [_f(d.get(k), "{}") for k in
                         ("substitutions", "deletions", "insertions", "words", "utterances")]  # fmt: skip
                lines.append(f"| {r['label']} | {precision} | {name} | " + " | ".join(cells) + f" | {same} |")
    return lines


def _gate_table(loaded: list[dict]) -> list[str]:
    gated = [r for r in loaded if r["outliers"] and r["outliers"].get("gates")]
    if not gated:
        return []
    points: list[str] = []
    for r in gated:
        points += [p for p in r["outliers"]["gates"] if p not in points]
    lines = [
        "",
        "## Gates per layer",
        "",
        "Mean gate value (sigmoid times its 1/pi_init output scale, so 1 is a neutral gate) and "
        "the share of values in histogram bins that lie below 0.5, over the outlier analysis's "
        "tokens: a gate that never moved from its initialisation reads about 1 in every layer.",
        "",
        "| gate | " + " | ".join(r["label"] for r in gated) + " |",
        "|---|" + "---|" * len(gated),
    ]
    for p in points:
        cells = []
        for r in gated:
            h = r["outliers"]["gates"].get(p)
            if h is None:
                cells.append("—")
                continue
            edges, counts = h["edges"], h["counts"]
            below = sum(c for c, hi in zip(counts, edges[1:]) if hi <= 0.5)
            cells.append(f"{h['mean']:.3f} ({100 * below / max(sum(counts), 1):.0f}% < 0.5)")
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    return lines
