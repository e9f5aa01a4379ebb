"""Pseudo-label files: `DIR/labels-PPPPP-of-NNNNN.jsonl`, one per process.

Rows `{"id", "origin", "text", "pseudo_text", "wer"}`: `text` is the reference (null when
unknown), `pseudo_text` the teacher's greedy transcript and `wer` its WER against the
reference in percent (null without a reference); a row that could not be decoded has
`"error"` instead. Written by `jaxwhisper.inference.pseudo_label`, read back by the
`pseudo_labels=DIR&max_wer=W` spec option (`sources.py`). A line cut short by a kill is
discarded on reading and removed on resuming, and so are the rows that failed (retried).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def labels_path(out_dir: Path, process_index: int, process_count: int) -> Path:
    return Path(out_dir) / f"labels-{process_index:05d}-of-{process_count:05d}.jsonl"


def read_labels(out_dir: Path) -> dict[str, dict]:
    """All complete rows of every process's file, by id."""
    rows: dict[str, dict] = {}
    for f in sorted(Path(out_dir).glob("labels-*-of-*.jsonl")):
        for line in f.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            rows[row["id"]] = row
    return rows


def resume_labels(path: Path) -> set[str]:
    """Ids already labelled in `path`; rewrites it without a torn last line and without the
    rows that failed (an unreadable file may have been fixed since: they are labelled again)."""
    if not path.exists():
        return set()
    good, done, failed = [], set(), 0
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s: discarding a partial line left by an interrupted run", path)
            continue
        if "pseudo_text" not in row:
            failed += 1
            continue
        good.append(line)
        done.add(row["id"])
    if failed:
        log.info("%s: %d rows that failed before are retried", path, failed)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(x + "\n" for x in good))
    os.replace(tmp, path)
    return done
