"""What to transcribe: command-line inputs and JSONL manifests as `Utterance`s, read ahead
(and long recordings' features computed ahead).

A malformed manifest row becomes an `Utterance` carrying its error (reported, never dropped).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

from jaxwhisper.data.examples import DataSpecError
from jaxwhisper.data.features import log_mel_recording
from jaxwhisper.data.local_sources import read_jsonl


class InputError(ValueError):
    """A command-line input that is neither an audio file nor a readable manifest."""


@dataclasses.dataclass
class Utterance:
    """One input: `audio` is a path; `text` the reference transcript when known."""

    id: str
    audio: str
    text: Optional[str] = None
    error: Optional[str] = None  # set when the input itself is broken (bad manifest row)


def read_manifest(path: Path) -> list[Utterance]:
    """Rows `{"id", "audio" (relative to the manifest or absolute), "text"?}` of a JSONL file.

    A malformed row becomes an Utterance carrying an error (reported, not dropped).
    """
    try:
        rows = read_jsonl(Path(path))
    except (DataSpecError, OSError, UnicodeDecodeError) as e:
        raise InputError(
            str(e) if isinstance(e, DataSpecError) else f"{path}: unreadable manifest ({e})"
        ) from None
    return [Utterance(id=r.id, audio=r.audio or r.origin, text=r.text, error=r.error) for r in rows]


def read_inputs(inputs: Iterable[str]) -> list[Utterance]:
    """Expands command-line inputs (audio files and .jsonl manifests) in order."""
    out: list[Utterance] = []
    for item in inputs:
        p = Path(item)
        if p.suffix == ".jsonl":
            out.extend(read_manifest(p))
        else:
            out.append(Utterance(id=p.stem, audio=str(p)))
    return out


def read_ahead(pool, fn, items, depth: int):
    """`map(fn, items)` in order, with at most `depth` calls running ahead of the consumer
    (Executor.map would submit every item at once and hold all the audio in memory)."""
    queue: collections.deque = collections.deque()
    for item in items:
        queue.append(pool.submit(fn, item))
        if len(queue) >= depth:
            yield queue.popleft().result()
    while queue:
        yield queue.popleft().result()


def features_ahead(
    items: Iterable[tuple], needs: Callable[[object], bool], n_mels: int, ahead: int = 2
) -> Iterator[tuple]:
    """`(key, audio)` items as `(key, audio, features)`: for each audio for which `needs`
    holds (the long-form decoder's inputs), a future of its log-mel (`log_mel_recording`,
    ~0.17 s per minute of audio) computed in a worker thread `ahead` items before it is
    needed, so that it overlaps decoding instead of stalling it; None for the others."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="log-mel") as pool:
        pending: collections.deque = collections.deque()
        for key, audio in items:
            features = pool.submit(log_mel_recording, audio, n_mels) if needs(audio) else None
            pending.append((key, audio, features))
            if len(pending) > ahead:
                yield pending.popleft()
        yield from pending
