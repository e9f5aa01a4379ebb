"""Checks every command runs before it loads a model or decodes anything, so that bad
input fails in seconds rather than after a whole evaluation:

- an output is not one of the inputs (a manifest, an audio file, a data spec's files), is
  not a folder where a file is wanted (or a file where a folder is), and can be written:
  its folder exists or can be created, and a probe file can be created in it;
- the ids of a data source are unique (results and pseudo-labels are keyed by id).

Every failure is a `PreflightError` (a ValueError) whose message names the path or the
rows and says what is wrong, in one line.
"""

from __future__ import annotations

import glob
import os
import tempfile
import urllib.parse
from pathlib import Path
from typing import Iterable, Optional, Union

from jaxwhisper.data.examples import DataSpecError, Source
from jaxwhisper.data.hub_sources import HFSource
from jaxwhisper.data.sources import PackedSource, PseudoLabeledSource, parse_spec

PathLike = Union[str, Path]


class PreflightError(ValueError):
    """An output or input that would fail the run (or silently spoil its results)."""


def spec_files(spec: str) -> list[Path]:
    """The local files a data spec reads: its manifest, an audio folder's metadata and audio,
    `data_files=`, a `pseudo_labels=` folder's label files. Hub datasets contribute none."""
    body, _, query = spec.partition("?")
    opts = {k: v[-1] for k, v in urllib.parse.parse_qs(query).items()}
    kind, sep, location = body.partition(":")
    if not sep or (len(kind) == 1 and location.startswith(("/", "\\"))):
        kind, location = ("jsonl" if body.endswith(".jsonl") else ""), body
    location = location.partition("@")[0]
    files: list[Path] = []
    if kind == "jsonl":
        files.append(Path(location))
    elif kind == "audiofolder" and Path(location).is_dir():
        files.extend(p for p in Path(location).rglob("*") if p.is_file())
    if opts.get("data_files"):
        files.extend(Path(f) for f in glob.glob(opts["data_files"], recursive=True))
    if opts.get("pseudo_labels"):
        files.extend(Path(opts["pseudo_labels"]).glob("labels-*-of-*.jsonl"))
    return files


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _refuse_inputs(path: Path, inputs: Iterable[PathLike], what: str) -> None:
    for inp in inputs:
        inp = Path(inp)
        if _same(path, inp) or path.resolve() == inp.resolve():
            raise PreflightError(f"{path}: {what} is also an input ({inp}); choose another {what}")


def _check_writable_folder(folder: Path, path: Path, what: str) -> None:
    """`folder` (maybe not there yet) can be created and written into; messages name `path`."""
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise PreflightError(f"{path}: {what} cannot be created: {existing} is a file, not a folder")
    try:
        # A real probe: permission bits say nothing for root, or on a read-only mount.
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise PreflightError(f"{path}: {what} is not writable ({existing}: {e.strerror})") from None


def check_output_file(path: PathLike, inputs: Iterable[PathLike] = (), what: str = "output") -> Path:
    """Refuses an output file that is an input, a folder, or cannot be written. Creates nothing.

    Args:
      path: the file the command will write.
      inputs: every file the command reads (manifests, audio); `path` must be none of them.
      what: how the message names `path` ("output", "--output", "hypotheses").

    Raises:
      PreflightError: naming `path` and the problem.
    """
    path = Path(path)
    _refuse_inputs(path, inputs, what)
    if path.is_dir():
        raise PreflightError(f"{path}: {what} is a folder; give a file name")
    if path.exists():
        try:
            with open(path, "ab"):  # append mode: probes the permission, changes nothing
                pass
        except OSError as e:
            raise PreflightError(f"{path}: {what} is not writable ({e.strerror})") from None
    else:
        _check_writable_folder(path.parent, path, what)
    return path


def check_output_dir(path: PathLike, inputs: Iterable[PathLike] = (), what: str = "output") -> Path:
    """Refuses an output folder that is one of the inputs, an existing file, or cannot be
    created and written. Creates nothing.

    Raises:
      PreflightError: naming `path` and the problem.
    """
    path = Path(path)
    _refuse_inputs(path, inputs, what)
    if path.exists() and not path.is_dir():
        raise PreflightError(f"{path}: {what} is a file; give a folder")
    _check_writable_folder(path, path, what)
    return path


def _id_origins(source: Source) -> Optional[Iterable[tuple[str, str]]]:
    """(id, origin) of every row, read cheaply; None where that would mean reading the data."""
    if isinstance(source, (PseudoLabeledSource, PackedSource)):
        return _id_origins(source.base)  # window ids are made of their members' ids
    if isinstance(source, HFSource):
        if source.streaming:
            return None
        if not source.id_col or source.id_col not in (source.ds.column_names or []):
            return ()  # ids are the row indices
        col = source.ds[source.id_col]
        return ((str(v), f"{source.name}[{i}]") for i, v in enumerate(col))
    return ((r.id, r.origin) for r in source if not r.error)


def check_unique_names(specs, sources) -> None:
    """Refuses evaluation sets that share a name: results, metrics and hypothesis files are
    keyed by it, so the second set's would replace the first's.

    Raises:
      DataSpecError: naming both specs and the shared name.
    """
    seen: dict[str, str] = {}
    for spec, src in zip(specs, sources):
        if src.name in seen:
            raise DataSpecError(
                f"{seen[src.name]} and {spec} are both named {src.name!r} (results are keyed by the "
                "set's name): give one of them another file or folder name"
            )
        seen[src.name] = spec


def check_unique_ids(source: Source) -> None:
    """Refuses a source whose rows share an id (its results would overwrite each other).

    Streaming sources are not read ahead for this; `pseudo_label` checks them as it goes.

    Raises:
      DataSpecError: naming the first repeated id, its rows, and how many ids repeat.
    """
    pairs = _id_origins(source)
    if pairs is None:
        return
    seen: dict[str, list[str]] = {}
    for rid, origin in pairs:
        seen.setdefault(rid, []).append(origin)
    dups = {k: v for k, v in seen.items() if len(v) > 1}
    if dups:
        rid, rows = next(iter(dups.items()))
        more = f" ({len(dups)} ids repeat)" if len(dups) > 1 else ""
        raise DataSpecError(
            f"{source.name}: duplicate id {rid!r} in rows {', '.join(rows)}{more}; ids must be unique"
        )


def check_labelling(spec: str, out_dir: PathLike) -> Source:
    """Parses a pseudo-labelling run's `spec` and checks its ids are unique and `out_dir`
    can be written and is none of the spec's files (`jaxwhisper pseudo-label`).

    Raises:
      ValueError: naming the spec, the rows or the path, and the problem.
    """
    source = parse_spec(spec)
    check_unique_ids(source)
    check_output_dir(out_dir, spec_files(spec), "--output")
    return source
