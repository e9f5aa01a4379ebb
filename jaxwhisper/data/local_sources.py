"""Sources read from local files: JSONL manifests and Hugging Face audiofolder layouts."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Optional

from jaxwhisper.data.examples import DataSpecError, ListSource, RawExample

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".aiff", ".aif")


def read_jsonl(path: Path, name: Optional[str] = None) -> ListSource:
    if not path.exists():
        raise DataSpecError(f"{path}: no such manifest")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
            audio = Path(row["audio"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            rows.append(RawExample(where, None, None, where, error=f"bad manifest row ({e!r})"))
            continue
        text = row.get("text")
        if text is not None and not isinstance(text, str):
            # A number or list would pass through decoding and crash the WER at the very end.
            err = f"bad manifest row (text is {type(text).__name__}, not a string)"
            rows.append(RawExample(str(row.get("id", where)), None, None, where, error=err))
            continue
        audio = audio if audio.is_absolute() else path.parent / audio
        duration = row.get("duration")
        duration = float(duration) if isinstance(duration, (int, float)) else None
        rows.append(RawExample(str(row.get("id", where)), str(audio), text, where, duration=duration))
    return ListSource(name or path.stem, rows)


def read_audiofolder(root: Path, split: Optional[str], text_col: Optional[str]) -> ListSource:
    base = root / split if split else root
    if not base.is_dir():
        raise DataSpecError(f"{base}: no such audio folder")
    meta_rows: list[dict] = []
    if (base / "metadata.jsonl").exists():
        meta_rows = [json.loads(x) for x in (base / "metadata.jsonl").read_text().splitlines() if x.strip()]
    elif (base / "metadata.csv").exists():
        with open(base / "metadata.csv", newline="") as f:
            meta_rows = list(csv.DictReader(f))
    rows = []
    if meta_rows:
        cols = meta_rows[0].keys()
        col = text_col or next((c for c in ("text", "transcription", "sentence") if c in cols), None)
        for n, r in enumerate(meta_rows):
            if "file_name" not in r:
                raise DataSpecError(f"{base}: metadata row {n} has no file_name")
            rows.append(
                RawExample(
                    Path(r["file_name"]).stem,
                    str(base / r["file_name"]),
                    r.get(col) if col else None,
                    f"{base}/metadata[{n}]",
                )
            )
    else:
        for p in sorted(x for x in base.rglob("*") if x.suffix.lower() in AUDIO_SUFFIXES):
            rows.append(RawExample(str(p.relative_to(base).with_suffix("")), str(p), None, str(p)))
    return ListSource(f"{root.name}{'/' + split if split else ''}", rows)
