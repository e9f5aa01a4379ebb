"""Each host's rows of a streaming source, pass after pass, with a saved position.

Engine. Hugging Face `datasets` streaming (`IterableDataset`), not Grain, because it reads
the corpora's parquet shards straight from the hub (the paper's ~16k hours do not fit on a
TPU VM's disk, and Grain's exact resume rests on random-access sources such as ArrayRecord,
which would mean converting and storing them first), and because its `state_dict()` is a
few integers per shard that we save with the orbax checkpoint (docs/streaming.md).

Per source, host `p` of `P` reads `ds.shard(P, p, contiguous=False)`: the shards whose index
is p mod P (`split_dataset_by_node` would fall back to every host reading every row when
P does not divide the shard count). The host's shards are read in a shuffled order
(`shuffle(seed)`; `set_epoch(e)` reshuffles per pass), optionally through a shuffle buffer
of `shuffle_buffer=N` rows (`ShuffledStream`), and looped: pass e + 1 starts when pass e
ends. Map-style sources can be read the same way (`MapStream`): a per-pass permutation of
their rows, every P-th row per host.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Iterator, Optional

import numpy as np

from jaxwhisper.data.examples import DataSpecError, PackedExample, Source, process_rows
from jaxwhisper.data.hub_sources import HFSource
from jaxwhisper.data.packing import GreedyPacker, row_duration
from jaxwhisper.data.sources import PackedSource, PseudoLabeledSource


def _next(stream):
    """The next row of `stream`, from its next pass when this one is over."""
    for _ in range(2):
        item = stream.pull()
        if item is not None:
            return item
    raise DataSpecError(f"{type(stream).__name__}: a pass without rows")


class Stream:
    """Rows of one source on one host, pass after pass: `pull()` gives the next row of the
    current pass or None at its end; `state()` / `load(state)` save and restore the
    position (JSON)."""

    def __next__(self):
        return _next(self)


class HubStream(Stream):
    """This host's share of a streaming `HFSource`, looped over passes (epochs).

    The host's shards are read in an order shuffled per pass (`datasets`' shuffle with a
    buffer of 1 row, which holds nothing between rows, so its saved position is exact).
    State: `{"epoch", "n" (rows yielded in this pass), "hf" (the dataset's state_dict)}`.
    """

    def __init__(self, src: HFSource, process_index: int, process_count: int, seed: int):
        n_shards = src.ds.num_shards
        if n_shards < process_count:
            raise DataSpecError(
                f"{src.name}: {n_shards} shard(s) for {process_count} hosts; every host needs a shard "
                "of its own (split the files further)"
            )
        self.src, self.process_index = src, process_index
        ds = src.ds.shard(process_count, process_index, contiguous=False)
        self.n_shards = ds.num_shards
        self.ds = ds.shuffle(seed=seed, buffer_size=1)
        self.epoch, self.n, self._it, self._loaded = 0, 0, None, None

    def load(self, state: dict):
        self.epoch, self.n, self._loaded = int(state["epoch"]), int(state["n"]), state["hf"]
        self._it = None

    def state(self) -> dict:
        hf = self.ds.state_dict() if self._it is not None else self._loaded
        return {"epoch": self.epoch, "n": self.n, "hf": hf}

    def pull(self):
        """The next row of this pass, or None when the pass is over (the next call starts
        the next pass)."""
        resuming = self._it is None and self._loaded is not None
        if self._it is None:
            self.ds.set_epoch(self.epoch)
            if resuming:
                self.ds.load_state_dict(copy.deepcopy(self._loaded))
            self._it = iter(self.ds)
        try:
            with _quiet_refill_warning(resuming):
                row = next(self._it)
        except StopIteration:
            if self.n == 0:
                raise DataSpecError(f"{self.src.name}: host {self.process_index} has no rows") from None
            self.epoch, self.n, self._it, self._loaded = self.epoch + 1, 0, None, None
            return None
        raw = self.src.convert(f"{self.process_index}:{self.epoch}:{self.n}", row)
        self.n += 1
        return raw


class ShuffledStream(Stream):
    """Rows of `base` (a HubStream) drawn at random from a buffer of `size` rows, within
    each pass. State: the base's position after the rows buffered so far and the draw
    RNG; the buffer's contents (at most `size - 1` rows after a draw) are not saved, so a
    resumed run does not yield them in that pass, and yields nothing twice.

    `datasets`' own buffer is not used: resumed, its 5.2 version yields a row again
    (measured: 1 repeat after 12 of 30 rows with a buffer of 6).
    """

    def __init__(self, base: HubStream, size: int, seed: int):
        self.base, self.size, self.seed = base, size, seed
        self.buf: list = []
        self.epoch, self.n, self.ended = 0, 0, False
        self.rng = np.random.default_rng([seed, 0])

    def load(self, state: dict):
        self.base.load(state["base"])
        self.epoch, self.n, self.ended = int(state["epoch"]), int(state["n"]), bool(state["ended"])
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["rng"]
        self.buf = []

    def state(self) -> dict:
        return {
            "epoch": self.epoch,
            "n": self.n,
            "ended": self.ended,
            "base": self.base.state(),
            "rng": self.rng.bit_generator.state,
        }

    def pull(self):
        while not self.ended and len(self.buf) < self.size:
            raw = self.base.pull()
            if raw is None:
                self.ended = True
            else:
                self.buf.append(raw)
        if not self.buf:  # the pass is over: the next one has its own draws
            self.epoch, self.n, self.ended = self.epoch + 1, 0, False
            self.rng = np.random.default_rng([self.seed, self.epoch])
            return None
        i = int(self.rng.integers(len(self.buf)))
        self.buf[i], self.buf[-1] = self.buf[-1], self.buf[i]
        self.n += 1
        return self.buf.pop()


@contextlib.contextmanager
def _quiet_refill_warning(resuming: bool):
    """`datasets` warns on every resume that a shuffle buffer is refilled; its buffer here
    holds one row and nothing between rows, so nothing is lost."""
    if not resuming:
        yield
        return
    from datasets.utils import logging as ds_logging

    level = ds_logging.get_verbosity()
    ds_logging.set_verbosity_error()
    try:
        yield
    finally:
        ds_logging.set_verbosity(level)


class MapStream(Stream):
    """A map-style source as a stream: pass e is a permutation of its rows (seeded by
    (seed, e)), of which host p reads positions p, p + P, ... State: `{"epoch", "pos"}`."""

    def __init__(self, src: Source, process_index: int, process_count: int, seed: int):
        self.src, self.p, self.P, self.seed = src, process_index, process_count, seed
        if len(src) <= process_index:
            raise DataSpecError(f"{src.name}: {len(src)} rows for {process_count} hosts")
        self.epoch, self.pos = 0, process_index
        self._perm = None

    def load(self, state: dict):
        self.epoch, self.pos, self._perm = int(state["epoch"]), int(state["pos"]), None

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def pull(self):
        if self.pos >= len(self.src):
            self.epoch, self.pos, self._perm = self.epoch + 1, self.p, None
            return None
        if self._perm is None:
            self._perm = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.src))
        item = self.src[int(self._perm[self.pos])]
        self.pos += self.P
        return item


class MappedStream(Stream):
    """`fn` applied to every row of `base` (the pseudo-label join)."""

    def __init__(self, base, fn):
        self.base, self.fn = base, fn

    def load(self, state: dict):
        self.base.load(state)

    def state(self) -> dict:
        return self.base.state()

    def pull(self):
        item = self.base.pull()
        return None if item is None else self.fn(item)


class PackingStream(Stream):
    """Consecutive rows of `base` packed into windows by `packing.GreedyPacker`'s rule.

    The row that does not fit ends the window and starts the next one; until it is used,
    the saved state is the base's position before it, so a resume reads it again. The end
    of a pass ends a window, as the end of a map-style source does.
    """

    def __init__(self, base, max_audio_s: float, text_budget=None):
        self.base, self.max_audio_s, self.text_budget = base, max_audio_s, text_budget
        self._pending, self._pending_state = None, None

    def load(self, state: dict):
        self.base.load(state)
        self._pending = None

    def state(self) -> dict:
        return copy.deepcopy(self._pending_state) if self._pending is not None else self.base.state()

    def pull(self) -> Optional[PackedExample]:
        members = []
        budget = self.text_budget
        packer = GreedyPacker(self.max_audio_s, budget.max_tokens if budget else None)
        while True:
            if self._pending is None:
                self._pending_state = self.base.state()
                raw = self.base.pull()
                if raw is None:
                    if members:  # the pass ended the window; the next call starts the next pass
                        self._pending_state, self._pending = self.base.state(), "end"
                        break
                    return None
                cost = budget.count(raw.text or "") if budget else 0
                self._pending = (raw, row_duration(raw), cost)
            if self._pending == "end":
                self._pending = None
                return None

            raw, d, cost = self._pending
            close_before, alone = packer.add(d, cost)
            if close_before:
                break
            members.append(raw)
            self._pending = None
            if alone:
                break
        return PackedExample.of(members)


def open_stream(src: Source, process_index: int, process_count: int, seed: int):
    """This host's stream of `src`'s rows (windows, for a packed source), resumable."""
    if isinstance(src, PackedSource) and src.streaming:
        base = open_stream(src.base, process_index, process_count, seed)
        return PackingStream(base, src.max_audio_s, src.text_budget)
    if isinstance(src, PseudoLabeledSource) and src.streaming:
        return MappedStream(open_stream(src.base, process_index, process_count, seed), src.convert)
    if isinstance(src, HFSource) and src.streaming:
        stream = HubStream(src, process_index, process_count, seed)
        return ShuffledStream(stream, src.shuffle_buffer, seed) if src.shuffle_buffer > 1 else stream
    if src.streaming:
        raise DataSpecError(f"{src.name}: no streaming reader for {type(src).__name__}")
    return MapStream(src, process_index, process_count, seed)


def host_rows(
    src: Source, process_index: int = 0, process_count: int = 1, max_rows: int = 0
) -> Iterator[tuple[int, object]]:
    """One pass over this process's rows of `src`, as `(i, row)`, for whole-set readers
    (evaluation, validation, pseudo-labelling).

    Map-style: `examples.process_rows` (rows i % P == p among the first `max_rows`).
    Streaming: this host's shards, read once (`max_rows` caps each host at its share,
    max_rows // P, rounded up for the first hosts); a set with fewer shards than hosts (a
    small validation split) is read whole by every host, which keeps rows i % P == p.
    """
    base = src
    while hasattr(base, "base"):
        base = base.base
    if not src.streaming or base.ds.num_shards < process_count:
        yield from process_rows(src, process_index, process_count, max_rows)
        return
    stream = open_stream(src, process_index, process_count, seed=0)
    cap = len(range(process_index, max_rows, process_count)) if max_rows else 0
    i = 0
    while not cap or i < cap:
        row = stream.pull()
        if row is None:
            return
        yield i, row
        i += 1
