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
| streaming hub sources `&shuffle_buffer=N` | rows shuffled through a buffer of N per host (shard order is shuffled every epoch regardless; `streaming.py`) |

Hub sources accept `data_files=GLOB` to read local parquet/arrow files with the same schema
instead of the hub (how the tests exercise them offline). Audio columns are cast with
`Audio(decode=False)` and decoded with soundfile by the pipeline.

Map-style sources (`len`, indexing) support the step-exact, pure (seed, step) order of
`pipeline.py`; streaming sources (`streaming=1`) are read shard by shard, each host its own
shards, and resumed from a saved position (`streaming.py`).
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import urllib.parse
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, TypeVar, Union

from jaxwhisper.data.corpora import CORPORA, Cleaner
from jaxwhisper.data.labels import read_labels
from jaxwhisper.data.packing import pack_groups, row_duration

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".aiff", ".aif")


T = TypeVar("T")


def process_rows(
    rows: Iterable[T], process_index: int = 0, process_count: int = 1, max_rows: int = 0
) -> Iterator[tuple[int, T]]:
    """This process's share of `rows`: `(i, row)` for every i with i % process_count ==
    process_index, among the first `max_rows` (0: all). Every multi-host reader of whole
    sets (evaluation, validation, pseudo-labelling) splits them this way."""
    for i, row in enumerate(rows):
        if max_rows and i >= max_rows:
            break
        if i % process_count == process_index:
            yield i, row


def process_share(n_rows: int, process_index: int = 0, process_count: int = 1) -> int:
    """How many of `n_rows` rows `process_rows` gives this process."""
    return len(range(process_index, n_rows, process_count))


class DataSpecError(ValueError):
    """A spec string that names nothing readable; the message says why."""


@dataclasses.dataclass
class RawExample:
    """One undecoded example.

    Attributes:
      id: stable identifier.
      audio: a file path, or `{"bytes": ..., "path": ...}` as hub audio columns hold it.
      text: reference transcript (None when unknown).
      origin: where it came from, for error messages (`manifest.jsonl:12`, `repo[split][7]`).
      error: set when the row itself is broken; the pipeline counts it as `bad_row`.
      drop: set when a cleaning rule drops the row; counted as `text_rule`.
      duration: seconds of audio when the row says so (manifests' `duration`), else None.
    """

    id: str
    audio: Union[str, dict, None]
    text: Optional[str]
    origin: str
    error: Optional[str] = None
    drop: Optional[str] = None
    duration: Optional[float] = None


@dataclasses.dataclass
class PackedExample:
    """Consecutive examples of one source that share a training window.

    Attributes:
      id: `FIRST_ID+N`: the first member's id and how many members follow it.
      origin: the first member's origin.
      members: the RawExamples, in order.
    """

    id: str
    origin: str
    members: tuple


class Source:
    """A named collection of RawExamples."""

    name: str
    streaming: bool = False

    def __len__(self) -> int:
        raise TypeError(f"{self.name}: streaming source has no length")

    def __getitem__(self, i: int) -> RawExample:
        raise TypeError(f"{self.name}: streaming source cannot be indexed")

    def __iter__(self) -> Iterator[RawExample]:
        for i in range(len(self)):
            yield self[i]


class ListSource(Source):
    def __init__(self, name: str, rows: list[RawExample]):
        self.name = name
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> RawExample:
        return self.rows[i]


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


class HFSource(Source):
    """A Hugging Face dataset (hub or local data files), audio left undecoded."""

    def __init__(
        self,
        name: str,
        ds: Any,
        text: str,
        id_col: Optional[str],
        audio: str,
        clean: Cleaner,
        streaming: bool,
        num_rows: Optional[int] = None,
        shuffle_buffer: int = 0,
    ):
        self.name, self.ds, self.text, self.id_col = name, ds, text, id_col
        self.audio, self.clean, self.streaming = audio, clean, streaming
        # Rows of a streaming split when the files or the hub's metadata say (mixture weights).
        self.num_rows = num_rows if streaming else len(ds)
        self.shuffle_buffer = shuffle_buffer

    def _convert(self, i, row: dict) -> RawExample:
        rid = str(row[self.id_col]) if self.id_col and self.id_col in row else f"{self.name}[{i}]"
        text = self.clean(row)
        return RawExample(
            rid, row.get(self.audio), text, f"{self.name}[{i}]", drop="text_rule" if text is None else None
        )

    def __len__(self) -> int:
        if self.streaming:
            return super().__len__()
        return len(self.ds)

    def __getitem__(self, i: int) -> RawExample:
        if self.streaming:
            return super().__getitem__(i)
        return self._convert(i, self.ds[int(i)])

    def __iter__(self) -> Iterator[RawExample]:
        for i, row in enumerate(self.ds):
            yield self._convert(i, row)


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

    def _convert(self, raw: RawExample) -> RawExample:
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
        return self._convert(self.base[i])

    def __iter__(self) -> Iterator[RawExample]:
        return (self._convert(r) for r in self.base)


class PackedSource(Source):
    """`base` as windows of consecutive examples of at most `max_audio_s` seconds each.

    Durations come from the rows (`duration`) or the audio headers, read once here (a
    streaming base is packed by the same rule as it is read).
    """

    def __init__(self, base: Source, max_audio_s: float):
        if not 0 < max_audio_s <= 30:
            raise DataSpecError(f"{base.name}: pack={max_audio_s:g} must be in (0, 30] seconds")
        self.base, self.max_audio_s, self.streaming = base, max_audio_s, base.streaming
        self.name = f"{base.name}+pack{max_audio_s:g}s"
        # A streaming base is packed as it is read (`streaming.PackingStream`).
        self.groups = (
            None
            if base.streaming
            else pack_groups([row_duration(base[i]) for i in range(len(base))], max_audio_s)
        )

    def __len__(self) -> int:
        if self.streaming:
            return super().__len__()
        return len(self.groups)

    def __getitem__(self, g: int) -> PackedExample:
        if self.streaming:
            return super().__getitem__(g)
        members = tuple(self.base[i] for i in self.groups[g])
        return PackedExample(f"{members[0].id}+{len(members) - 1}", members[0].origin, members)


def _load_hf(name, repo, config, split, data_files, streaming, audio_col):
    """The dataset (audio undecoded) and, when known without reading it, its row count."""
    try:
        import datasets
    except ImportError:
        raise DataSpecError(f"{name}: Hugging Face datasets need `pip install datasets`") from None
    num_rows = None
    try:
        if data_files:
            files = sorted(glob.glob(data_files, recursive=True))
            if not files:
                raise DataSpecError(f"{name}: data_files {data_files!r} matches no file")
            builder = "arrow" if files[0].endswith(".arrow") else "parquet"
            ds = datasets.load_dataset(builder, data_files={split: files}, split=split, streaming=streaming)
            if builder == "parquet":
                import pyarrow.parquet as pq

                num_rows = sum(pq.read_metadata(f).num_rows for f in files)
        else:
            ds = datasets.load_dataset(repo, config, split=split, streaming=streaming)
            splits = getattr(ds, "info", None) and ds.info.splits
            if splits and split in splits and splits[split].num_examples:
                num_rows = int(splits[split].num_examples)
    except DataSpecError:
        raise
    except Exception as e:  # offline, unknown repo or split: one clear line for the user
        raise DataSpecError(
            f"{name}: could not load ({type(e).__name__}: {str(e).splitlines()[0][:300]})"
        ) from None
    if audio_col in (ds.features or {}):
        ds = ds.cast_column(audio_col, datasets.Audio(decode=False))
    return ds, num_rows


def _int_opt(spec: str, opts: dict, key: str) -> int:
    try:
        value = int(opts.get(key, 0))
    except ValueError:
        raise DataSpecError(f"{spec}: {key}={opts[key]!r} is not a whole number") from None
    if value < 0:
        raise DataSpecError(f"{spec}: {key}={value} must be >= 0")
    return value


def parse_spec(spec: str) -> Source:
    """Turns a data spec string (module docstring) into a Source.

    Every kind also takes `pseudo_labels=DIR[&max_wer=W]`: texts replaced by the teacher's
    pseudo-labels written to DIR, rows over W percent WER dropped; and map-style kinds take
    `pack=SECONDS`: consecutive rows packed into windows (after the pseudo-labels).
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
        source = PackedSource(source, seconds)
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
        ds, num_rows = _load_hf(
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
        ds, num_rows = _load_hf(
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
