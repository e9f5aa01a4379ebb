"""Result tables in Markdown, shaped like the paper's Table 2 (rows: model and precision;
columns: test sets; WER %)."""

from __future__ import annotations


def _wer(wer) -> str:
    return "n/a" if wer is None else f"{wer:.2f}"  # None: no scored utterance


def markdown_table(rows: dict[str, dict]) -> str:
    """rows: {label: results.json's "datasets" mapping} -> WER (%) table, one column per set."""
    names = sorted({n for datasets in rows.values() for n in datasets})
    lines = ["| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, datasets in rows.items():
        cells = [_wer(datasets[n]["wer"]) if n in datasets else "-" for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
