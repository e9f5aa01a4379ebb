"""What a source yields: undecoded examples, packed windows of them, the `Source` protocol,
and how the rows of a whole set split over processes."""

from __future__ import annotations

import dataclasses
from typing import Iterable, Iterator, Optional, TypeVar, Union

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

    @classmethod
    def of(cls, members: Iterable[RawExample]) -> "PackedExample":
        """The window of `members` (at least one), named after its first member."""
        members = tuple(members)
        return cls(f"{members[0].id}+{len(members) - 1}", members[0].origin, members)


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
