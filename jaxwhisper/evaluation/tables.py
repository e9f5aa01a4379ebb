"""Result tables in Markdown, shaped like the paper's Table 2 (rows: model and precision;
columns: test sets; WER %)."""

from __future__ import annotations


def markdown_table(rows: dict[str, dict]) -> str:
    """rows: {label: results.json's "datasets" mapping} -> WER (%) table, one column per set."""
    names = sorted({n for datasets in rows.values() for n in datasets})
    lines = ["| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, datasets in rows.items():
        cells = [f"{datasets[n]['wer']:.2f}" if n in datasets else "-" for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
