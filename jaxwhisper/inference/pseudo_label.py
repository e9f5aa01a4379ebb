"""Pseudo-labelling: the teacher's greedy transcripts of a data source, resumable.

Output: `DIR/labels-PPPPP-of-NNNNN.jsonl` (format: `jaxwhisper.data.labels`), one file per
process (process p labels the examples whose index is p mod N). Rows that cannot be decoded
get `"error"` instead and are counted. A rerun skips the ids already labelled, so a killed run
resumes; a last line cut short by the kill is discarded, and rows that failed are retried.
Ids must be unique (labels are matched to rows by id): a repeated id is an error before any
decoding.

Training reads them back through the `pseudo_labels=DIR&max_wer=W` spec options
(sources.py): the pseudo-label replaces the text, rows over the threshold are dropped
(distil-whisper keeps those under 10% WER).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Iterator, Optional

from jaxwhisper.data.audio import AudioError, decode_audio
from jaxwhisper.data.examples import DataSpecError, Source
from jaxwhisper.data.labels import labels_path, resume_labels
from jaxwhisper.data.preflight import check_unique_ids
from jaxwhisper.data.streams import host_rows
from jaxwhisper.evaluation.wer import word_error_rate
from jaxwhisper.inference.transcribe import Transcriber

log = logging.getLogger(__name__)


def pseudo_label(
    transcriber: Transcriber,
    source: Source,
    out_dir: Path,
    process_index: int = 0,
    process_count: int = 1,
    on_row: Optional[Callable[[dict], None]] = None,
) -> dict:
    """Labels this process's share of `source`; returns counts.

    Returns:
      `{"labelled", "skipped_existing", "errors", "wer"}` where `wer` is the corpus WER of
      the pseudo-labels against the references written by this call (None without any).

    Raises:
      DataSpecError: two rows with one id (streaming sources: when the second is reached).
    """
    check_unique_ids(source)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = labels_path(out_dir, process_index, process_count)
    done = resume_labels(path)
    stats = {"labelled": 0, "skipped_existing": 0, "errors": 0}
    pending: dict[int, object] = {}
    seen: dict[str, str] = {}  # id -> origin, for streaming sources that were not checked ahead
    refs, hyps = [], []

    def items() -> Iterator[tuple[int, object]]:
        for i, raw in host_rows(source, process_index, process_count):
            if not raw.error:
                if raw.id in seen:
                    raise DataSpecError(
                        f"{source.name}: duplicate id {raw.id!r} in rows {seen[raw.id]}, {raw.origin}; "
                        "ids must be unique"
                    )
                seen[raw.id] = raw.origin
            if raw.id in done:
                stats["skipped_existing"] += 1
                continue
            pending[i] = raw
            if not raw.error and raw.text is not None and not isinstance(raw.text, str):
                yield i, AudioError(raw.origin, f"text is {type(raw.text).__name__}, not a string")
                continue
            if raw.error:
                yield i, AudioError(raw.origin, raw.error)
                continue
            try:
                yield i, decode_audio(raw.audio, raw.origin)
            except AudioError as e:
                yield i, e

    with open(path, "a") as out:
        for i, result in transcriber.decode_stream(items()):
            raw = pending.pop(i)
            row = {"id": raw.id, "origin": raw.origin, "text": raw.text}
            if isinstance(result, Exception):
                row["error"] = str(result)
                stats["errors"] += 1
            else:
                row["pseudo_text"] = transcriber.tokenizer.decode(result).strip()
                row["wer"] = None
                if raw.text:
                    w = word_error_rate([raw.text], [row["pseudo_text"]])
                    row["wer"] = None if w.utterances == 0 else round(w.wer, 2)
                    refs.append(raw.text)
                    hyps.append(row["pseudo_text"])
                stats["labelled"] += 1
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
            if on_row:
                on_row(row)
    w = word_error_rate(refs, hyps) if refs else None
    stats["wer"] = w.wer if w is not None and w.utterances else None
    return stats
