"""The paper's figures as PNG files, each written with the data behind it (`NAME.json` beside
`NAME.png`), from the dicts of `jaxwhisper.analysis.outliers` (nothing is recomputed here).

  - `outlier_share`: per hidden dimension, its share of all outliers at one point (paper
    Fig. 2: the last decoder layer's self-attention output projection), one panel per model;
  - `attention`: probabilities, values and their product for one head and utterance, labelled
    with tokens (paper Fig. 1);
  - `kurtosis`: kurtosis per attention output, one line per model;
  - `gates`: histograms of the gate values of gated models;
  - `validation_curves`: validation WER by training step, one line per run;
  - `gate_curves`: mean gate per attention layer by training step, one panel per gated run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, data) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    path.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    return path


def _model_panels(n: int, height: float, **kwargs):
    """A row of `n` panels, one per model, 5.5 in wide each: (figure, panels)."""
    fig, axes = _plt().subplots(
        1, n, figsize=(5.5 * n, height), squeeze=False, layout="constrained", **kwargs
    )
    return fig, axes[0]


def _plotted(by_label: Mapping[str, Any], nothing: str) -> dict:
    """The entries of `by_label` that have something to plot; ValueError(`nothing`) if none."""
    kept = {k: v for k, v in by_label.items() if v}
    if not kept:
        raise ValueError(nothing)
    return kept


def outlier_share(per_dim: Mapping[str, Sequence[int]], point: str, path: Path) -> Path:
    """per_dim: {model label: outlier counts per hidden dimension at `point`}."""
    fig, axes = _model_panels(len(per_dim), 3.4, sharey=True)
    data = {"point": point, "models": {}}
    for ax, (label, counts) in zip(axes, per_dim.items()):
        c = np.asarray(counts, np.float64)
        share = c / max(c.sum(), 1.0)
        top = np.argsort(share)[::-1][:2]
        ax.bar(np.arange(len(share)), 100 * share, width=1.0, color="tab:blue")
        for d in top:
            ax.annotate(f"#{d}: {100 * share[d]:.1f}%", (d, 100 * share[d]), fontsize=8)
        ax.set_title(
            f"{label}\n{int(c.sum())} outliers; top 2 dims {100 * share[top].sum():.1f}%", fontsize=9
        )
        ax.set_xlabel("hidden dimension")
        data["models"][label] = {"counts": c.astype(int).tolist(), "top2": top.tolist()}
    axes[0].set_ylabel("share of outliers (%)")
    fig.suptitle(f"outliers (> 6 sigma) per hidden dimension: {point}", fontsize=9)
    return _save(fig, path, data)


def attention(example: Mapping, labels: Sequence[str], title: str, path: Path) -> Path:
    """example: `outliers.attention_example`'s dict; labels: one string per token."""
    plt = _plt()
    p, v, o = (np.asarray(example[k]) for k in ("probs", "values", "output"))
    n = len(labels)
    fig, axes = plt.subplots(
        1, 3, figsize=(16, 0.32 * n + 2.5), layout="constrained",
        gridspec_kw={"width_ratios": [max(n, 8), v.shape[1] / 3, v.shape[1] / 3]},
    )  # fmt: skip
    panels = (
        ("attention probabilities", p, "Blues"),
        ("values", v, "RdBu_r"),
        ("probabilities x values", o, "RdBu_r"),
    )
    for ax, (name, m, cmap) in zip(axes, panels):
        lim = float(np.abs(m).max()) or 1.0
        im = ax.imshow(m, cmap=cmap, aspect="auto", vmin=0 if cmap == "Blues" else -lim, vmax=lim)
        ax.set_title(name, fontsize=9)
        ax.set_yticks(range(n), labels, fontsize=7)
        fig.colorbar(im, ax=ax, fraction=0.05)
    axes[0].set_xticks(range(n), labels, rotation=90, fontsize=7)
    axes[1].set_xlabel("head dimension")
    axes[2].set_xlabel("head dimension")
    fig.suptitle(title, fontsize=10)
    data = {
        "title": title,
        "tokens": list(labels),
        **{k: np.asarray(example[k]).tolist() for k in ("probs", "values", "output")},
    }
    return _save(fig, path, data)


def kurtosis(layers: Mapping[str, Mapping[str, Mapping]], points: Sequence[str], path: Path) -> Path:
    """layers: {model label: outliers.json "layers"}; points: x axis (attention outputs)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(points)), 3.5), layout="constrained")
    data = {"points": list(points), "models": {}}
    for label, by_point in layers.items():
        k = [by_point[p]["kurtosis"] if p in by_point else np.nan for p in points]
        ax.plot(range(len(points)), k, marker="o", label=label)
        data["models"][label] = k
    ax.set_yscale("log")
    ax.set_xticks(
        range(len(points)), [p.replace("/layers_", "/") for p in points], rotation=60, ha="right", fontsize=7
    )
    ax.set_ylabel("kurtosis (normal = 3)")
    ax.legend(fontsize=8)
    return _save(fig, path, data)


def gates(gate_hists: Mapping[str, Mapping[str, Mapping]], path: Path) -> Path:
    """gate_hists: {model label: outliers.json "gates"} (models without gates are skipped)."""
    models = _plotted(gate_hists, "no gated model: nothing to plot")
    fig, axes = _model_panels(len(models), 3.2)
    data = {}
    for ax, (label, by_point) in zip(axes, models.items()):
        edges = np.asarray(next(iter(by_point.values()))["edges"])
        for side in ("encoder", "decoder"):
            counts = sum(np.asarray(h["counts"]) for p, h in by_point.items() if p.startswith(side))
            if np.ndim(counts):
                ax.stairs(counts / max(counts.sum(), 1), edges, label=side)
                data.setdefault(label, {})[side] = np.asarray(counts).tolist()
        data[label]["edges"] = edges.tolist()
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("gate value")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("share of gate values")
    return _save(fig, path, data)


def validation_curves(curves: Mapping[str, Sequence[tuple[int, float]]], path: Path) -> Path:
    """curves: {run label: [(step, validation WER %), ...]} (runs without points are skipped).

    The WER axis is logarithmic: a looping student sits in the hundreds, a working one near
    the teacher, and both must stay readable in one panel.
    """
    plt = _plt()
    plotted = _plotted(curves, "no run has validation points: nothing to plot")
    models = {k: list(v) for k, v in plotted.items()}
    fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
    for label, points in models.items():
        steps, wers = zip(*points)
        ax.plot(steps, wers, marker="o", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("validation WER (%)")
    ax.legend(fontsize=8)
    return _save(fig, path, {k: [list(p) for p in v] for k, v in models.items()})


def gate_curves(runs: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]], path: Path) -> Path:
    """runs: {run label: {attention path: [(step, mean gate), ...]}} (`gate/*` metrics)."""
    models = _plotted(runs, "no gated run has gate metrics: nothing to plot")
    fig, axes = _model_panels(len(models), 3.5)
    for ax, (label, by_path) in zip(axes, models.items()):
        for name, points in sorted(by_path.items()):
            steps, means = zip(*points)
            ax.plot(steps, means, label=name.replace("/layers_", "/"))
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("training step")
        ax.legend(fontsize=6, ncol=2)
    axes[0].set_ylabel("mean gate (1 = neutral)")
    data = {k: {n: [list(p) for p in v] for n, v in by_path.items()} for k, by_path in models.items()}
    return _save(fig, path, data)
