"""Data sources named by one spec string, usable in configs and on the command line.

    SPEC := [KIND ":"] LOCATION ["@" SPLIT] ["?" KEY=VALUE ("&" KEY=VALUE)*]

| spec | source |
|---|---|
| `data/fixture/manifest.jsonl`, `jsonl:PATH` | JSONL manifest, rows `{"id", "audio" (relative to the manifest or absolute), "text"?}` |
| `audiofolder:DIR[@SPLIT]` | Hugging Face audiofolder layout: `DIR[/SPLIT]/metadata.{jsonl,csv}` with `file_name` and a text column (`text`, `transcription` or `sentence`; `?text=COL` to choose) |
| `hf:REPO@SPLIT?config=C&text=COL&id=COL&audio=COL&streaming=1` | a Hugging Face dataset |
| `CORPUS@SPLIT[?config=C]` | a corpus of the paper (`corpora.py`: librispeech, common_voice, peoples_speech, voxpopuli, tedlium, fleurs, gigaspeech) with its columns and cleaning |
| any of the above `&pseudo_labels=DIR&max_wer=10` | texts replaced by the teacher's pseudo-labels in DIR; rows over 10% WER dropped |
| any of the above `&pack=30` | consecutive utterances packed into windows of at most 30 s, texts joined with a space (`packing.py`) |
| streaming hub sources `&shuffle_buffer=N` | rows shuffled through a buffer of N per host (shard order is shuffled every epoch regardless; `streams.py`) |

Hub sources accept `data_files=GLOB` to read local parquet/arrow files with the same schema
instead of the hub (how the tests exercise them offline). Audio columns are cast with
`Audio(decode=False)` and decoded with soundfile by the pipeline.

Map-style sources (`len`, indexing) support the step-exact, pure (seed, step) order of
`pipeline.py`; streaming sources (`streaming=1`) are read shard by shard, each host its own
shards, and resumed from a saved position (`streams.py`, `streaming.py`).
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from pathlib import Path
from typing import Iterator, Optional

from jaxwhisper.data.corpora import CORPORA
from jaxwhisper.data.examples import DataSpecError, PackedExample, RawExample, Source
from jaxwhisper.data.hub_sources import HFSource, load_hf
from jaxwhisper.data.labels import read_labels
from jaxwhisper.data.local_sources import read_audiofolder, read_jsonl
from jaxwhisper.data.packing import TextBudget, pack_groups, row_duration


class PseudoLabeledSource(Source):
    """`base` with its texts replaced by the teacher's pseudo-labels (`jaxwhisper pseudo-label`).

    Rows without a pseudo-label are dropped as `no_pseudo_label`; rows whose pseudo-label is
    more than `max_wer` percent from the reference as `wer_filter` (rows without a reference
    are kept, there is nothing to filter them by).
    """

    def __init__(self, base: Source, labels_dir: str, max_wer: Optional[float]):
        self.base, self.max_wer = base, max_wer
        self.name, self.streaming = base.name, base.streaming
        self.labels = read_labels(Path(labels_dir))
        if not self.labels:
            raise DataSpecError(f"{labels_dir}: no pseudo-labels (labels-*-of-*.jsonl) found")

    def convert(self, raw: RawExample) -> RawExample:
        """`raw` with its pseudo-label as text, or dropped (`drop` set) by the rules above."""
        if raw.error or raw.drop:
            return raw
        row = self.labels.get(raw.id)
        if row is None or "pseudo_text" not in row:
            return dataclasses.replace(raw, drop="no_pseudo_label")
        if self.max_wer is not None and row.get("wer") is not None and row["wer"] > self.max_wer:
            return dataclasses.replace(raw, drop="wer_filter")
        return dataclasses.replace(raw, text=row["pseudo_text"])

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> RawExample:
        return self.convert(self.base[i])

    def __iter__(self) -> Iterator[RawExample]:
        return (self.convert(r) for r in self.base)


class PackedSource(Source):
    """`base` as windows of consecutive examples of at most `max_audio_s` seconds each.

    Durations come from the rows (`duration`) or the audio headers, read once here (a
    streaming base is packed by the same rule as it is read).
    """

    def __init__(self, base: Source, max_audio_s: float, text_budget: Optional[TextBudget] = None):
        if not 0 < max_audio_s <= 30:
            raise DataSpecError(f"{base.name}: pack={max_audio_s:g} must be in (0, 30] seconds")
        self.base, self.max_audio_s, self.streaming = base, max_audio_s, base.streaming
        self.text_budget = text_budget
        self.name = f"{base.name}+pack{max_audio_s:g}s"
        # A streaming base is packed as it is read (`streams.PackingStream`).
        self.groups = None
        if not base.streaming:
            rows = [base[i] for i in range(len(base))]
            costs = [text_budget.count(r.text or "") for r in rows] if text_budget else None
            budget = text_budget.max_tokens if text_budget else None
            self.groups = pack_groups([row_duration(r) for r in rows], max_audio_s, costs, budget)

    def __len__(self) -> int:
        if self.streaming:
            return super().__len__()
        return len(self.groups)

    def __getitem__(self, g: int) -> PackedExample:
        if self.streaming:
            return super().__getitem__(g)
        return PackedExample.of(self.base[i] for i in self.groups[g])


def _int_opt(spec: str, opts: dict, key: str) -> int:
    try:
        value = int(opts.get(key, 0))
    except ValueError:
        raise DataSpecError(f"{spec}: {key}={opts[key]!r} is not a whole number") from None
    if value < 0:
        raise DataSpecError(f"{spec}: {key}={value} must be >= 0")
    return value


def parse_spec(spec: str, text_budget: Optional[TextBudget] = None) -> Source:
    """Turns a data spec string (module docstring) into a Source.

    Every kind also takes `pseudo_labels=DIR[&max_wer=W]`: texts replaced by the teacher's
    pseudo-labels written to DIR, rows over W percent WER dropped; and `pack=SECONDS`:
    consecutive rows packed into windows (after the pseudo-labels), each window's text
    within `text_budget` when one is given (training: the label positions of a row).
    """
    source = _parse_base(spec)
    opts = {k: v[-1] for k, v in urllib.parse.parse_qs(spec.partition("?")[2]).items()}
    if "pseudo_labels" in opts:
        max_wer = float(opts["max_wer"]) if "max_wer" in opts else None
        source = PseudoLabeledSource(source, opts["pseudo_labels"], max_wer)
    if "pack" in opts:
        try:
            seconds = float(opts["pack"])
        except ValueError:
            raise DataSpecError(f"{spec}: pack={opts['pack']!r} is not a number of seconds") from None
        source = PackedSource(source, seconds, text_budget)
    return source


def _parse_base(spec: str) -> Source:
    body, _, query = spec.partition("?")
    opts = {k: v[-1] for k, v in urllib.parse.parse_qs(query, keep_blank_values=True).items()}
    kind, sep, location = body.partition(":")
    if not sep or (len(kind) == 1 and location.startswith(("/", "\\"))):  # a bare path (or C:\)
        kind, location = ("jsonl", body) if body.endswith(".jsonl") else ("", body)
    location, _, split = location.partition("@")
    streaming = opts.get("streaming", "0") in ("1", "true", "yes")
    if kind == "jsonl":
        return read_jsonl(Path(location), opts.get("name"))
    if kind == "audiofolder":
        return read_audiofolder(Path(location), split or None, opts.get("text"))
    if kind == "hf":
        if not split:
            raise DataSpecError(f"{spec}: hub datasets need a split (hf:REPO@SPLIT)")
        text = opts.get("text", "text")
        name = opts.get("name", f"{location}@{split}")
        ds, num_rows = load_hf(
            name,
            location,
            opts.get("config"),
            split,
            opts.get("data_files"),
            streaming,
            opts.get("audio", "audio"),
        )
        return HFSource(
            name,
            ds,
            text,
            opts.get("id"),
            opts.get("audio", "audio"),
            lambda row: row.get(text),
            streaming,
            num_rows,
            _int_opt(spec, opts, "shuffle_buffer"),
        )
    if kind in CORPORA or (not kind and location in CORPORA):
        corpus = CORPORA[kind or location]
        cname = kind or location
        if not split:
            raise DataSpecError(f"{spec}: corpora need a split ({cname}@SPLIT)")
        config = opts.get("config", corpus.config)
        name = opts.get("name", f"{cname}{'-' + config if config else ''}@{split}")
        text_col = opts.get("text")
        clean = (lambda row: row.get(text_col)) if text_col else corpus.clean
        ds, num_rows = load_hf(
            name,
            corpus.repo,
            config,
            split,
            opts.get("data_files"),
            streaming,
            opts.get("audio", corpus.audio),
        )
        return HFSource(
            name,
            ds,
            text_col or corpus.text,
            opts.get("id", corpus.id),
            opts.get("audio", corpus.audio),
            clean,
            streaming,
            num_rows,
            _int_opt(spec, opts, "shuffle_buffer"),
        )
    raise DataSpecError(
        f"{spec!r}: unknown data spec; use a .jsonl path, jsonl:PATH, audiofolder:DIR[@SPLIT], "
        f"hf:REPO@SPLIT or one of {', '.join(sorted(CORPORA))}@SPLIT"
    )
