"""Streaming training data: each host reads its own shards, and a resumed run continues
from the saved position.

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
ends.

Mixture. Row j of global step s is global draw g = s * global_batch + j; its source is the
counter-based hash of (seed, g) of `pipeline.MixtureOrder` (not `interleave_datasets`, whose
choices live in an RNG state that advances with reading), so which source every row comes
from is a pure function of (seed, step) on every host, as for map-style sources. Map-style
sources can be mixed in: they are read as a stream of their rows in a per-pass permutation,
every P-th row per host.

What is guaranteed (tested in tests/data/test_streaming.py and tests/test_multihost.py):
  * hosts read disjoint shards; in one pass over its shards a host yields each of their
    rows exactly once, so the union over hosts of their pass e is the source, each row once
    (hosts are not in step: a host with bigger shards starts its pass e + 1 later);
  * without a shuffle buffer, a resumed run reads exactly the rows, in the order, that an
    uninterrupted run would have (the same batches);
  * with `shuffle_buffer=N`, the rows that were in a host's buffer when the checkpoint was
    written (at most N - 1 per source per host) are not yielded in that pass (the saved
    position is that of the rows read into the buffer, not its contents); no row is yielded
    twice in a pass; the order after the resume differs from the uninterrupted run's.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
from typing import Iterator, Optional, Sequence

import numpy as np

from jaxwhisper.data.packing import GreedyPacker, row_duration
from jaxwhisper.data.pipeline import (
    BatchConfig,
    DropCounter,
    MixtureOrder,
    ValidationConfig,
    assemble_batch,
    decode_pool,
    prefetched,
)
from jaxwhisper.data.sources import (
    DataSpecError,
    HFSource,
    PackedExample,
    PackedSource,
    PseudoLabeledSource,
    Source,
)

log = logging.getLogger(__name__)


def _source_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


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
        raw = self.src._convert(f"{self.process_index}:{self.epoch}:{self.n}", row)
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

    def __init__(self, base, max_audio_s: float):
        self.base, self.max_audio_s = base, max_audio_s
        self._pending, self._pending_state = None, None

    def load(self, state: dict):
        self.base.load(state)
        self._pending = None

    def state(self) -> dict:
        return copy.deepcopy(self._pending_state) if self._pending is not None else self.base.state()

    def pull(self) -> Optional[PackedExample]:
        members = []
        packer = GreedyPacker(self.max_audio_s)
        while True:
            if self._pending is None:
                self._pending_state = self.base.state()
                raw = self.base.pull()
                if raw is None:
                    if members:  # the pass ended the window; the next call starts the next pass
                        self._pending_state, self._pending = self.base.state(), "end"
                        break
                    return None
                self._pending = (raw, row_duration(raw))
            if self._pending == "end":
                self._pending = None
                return None

            raw, d = self._pending
            close_before, alone = packer.add(d)
            if close_before:
                break
            members.append(raw)
            self._pending = None
            if alone:
                break
        return PackedExample(f"{members[0].id}+{len(members) - 1}", members[0].origin, tuple(members))


def open_stream(src: Source, process_index: int, process_count: int, seed: int):
    """This host's stream of `src`'s rows (windows, for a packed source), resumable."""
    if isinstance(src, PackedSource) and src.streaming:
        return PackingStream(open_stream(src.base, process_index, process_count, seed), src.max_audio_s)
    if isinstance(src, PseudoLabeledSource) and src.streaming:
        return MappedStream(open_stream(src.base, process_index, process_count, seed), src._convert)
    if isinstance(src, HFSource) and src.streaming:
        stream = HubStream(src, process_index, process_count, seed)
        return ShuffledStream(stream, src.shuffle_buffer, seed) if src.shuffle_buffer > 1 else stream
    if src.streaming:
        raise DataSpecError(f"{src.name}: no streaming reader for {type(src).__name__}")
    return MapStream(src, process_index, process_count, seed)


def source_rows(src: Source) -> Optional[int]:
    """Rows of a source (of its unpacked base, for a packed stream) when known without
    reading it; the default mixture weights are proportional to them."""
    while src.streaming and hasattr(src, "base"):
        src = src.base
    if not src.streaming:
        return len(src)
    return getattr(src, "num_rows", None)


class StreamLoader:
    """`BatchLoader`'s batches from streaming (and map-style) sources, read in order.

    Args: as `pipeline.BatchLoader`, plus
      decode_workers: threads that decode and validate the rows of a batch in parallel.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        batch: BatchConfig,
        prefix: Sequence[int],
        eot: int,
        encode,
        weights: Optional[Sequence[float]] = None,
        validation: Optional[ValidationConfig] = None,
        process_index: int = 0,
        process_count: int = 1,
        decode_workers: int = 1,
    ):
        if batch.global_batch % process_count:
            raise ValueError(
                f"global batch {batch.global_batch} is not divisible by {process_count} processes"
            )
        sizes = [source_rows(s) for s in sources]
        if not weights and None in sizes:
            unknown = [s.name for s, n in zip(sources, sizes) if n is None]
            raise ValueError(f"{', '.join(unknown)}: row count unknown; give data.weights for the mixture")
        self.sources = list(sources)
        self.order = MixtureOrder([n or 1 for n in sizes], weights or None, batch.seed)
        self.streams = [
            open_stream(s, process_index, process_count, _source_seed(batch.seed, k))
            for k, s in enumerate(sources)
        ]
        self.batch = batch
        validation = validation or ValidationConfig()
        self.validation = dataclasses.replace(
            validation,
            max_label_tokens=min(validation.max_label_tokens, batch.max_label_len + 1 - len(prefix)),
        )
        self.prefix, self.eot, self.encode = tuple(prefix), eot, encode
        self.process_index, self.process_count = process_index, process_count
        self.local_batch = batch.global_batch // process_count
        self.drops = DropCounter()
        self.decode_workers = decode_workers
        self.step = 0

    def state(self) -> dict:
        """The position after the last batch read: JSON, saved with the checkpoint."""
        return {
            "step": self.step,
            "process": [self.process_index, self.process_count],
            "streams": [s.state() for s in self.streams],
        }

    def load(self, state: dict):
        if list(state["process"]) != [self.process_index, self.process_count]:
            raise ValueError(
                f"the data position was saved by host {state['process'][0]} of {state['process'][1]}; "
                f"this is host {self.process_index} of {self.process_count} (resume on as many hosts)"
            )
        if len(state["streams"]) != len(self.streams):
            raise ValueError(
                f"the data position has {len(state['streams'])} sources, the config {len(self.streams)}"
            )
        for stream, st in zip(self.streams, state["streams"]):
            stream.load(st)
        self.step = int(state["step"])

    def next_batch(self, pool=None) -> dict:
        """The batch of step `self.step` (this host's rows), and the position after it in
        `data_state`."""
        start = self.step * self.batch.global_batch + self.process_index * self.local_batch
        which = self.order.sources_of(np.arange(start, start + self.local_batch))
        items = [(self.sources[k].name, next(self.streams[k])) for k in which]
        out = assemble_batch(
            items,
            self.batch.max_label_len,
            self.validation,
            self.prefix,
            self.eot,
            self.encode,
            self.drops,
            pool,
        )
        epochs = [self.streams[k].state()["epoch"] for k in which[:1]]
        out.update(step=self.step, epoch=epochs[0] if epochs else 0)
        self.step += 1
        out["data_state"] = self.state()
        return out

    def iter_from_step(self, step: int, state: Optional[dict] = None, prefetch: int = 2) -> Iterator[dict]:
        """Batches from `step` on; `state` (a batch's `data_state`) positions the streams,
        and is required to start past step 0."""
        if state is not None:
            self.load(state)
        if self.step != step:
            raise ValueError(f"no saved data position for step {step} (the streams are at step {self.step})")
        pool = decode_pool(self.decode_workers)

        def load(s: int) -> dict:
            assert s == self.step, (s, self.step)
            return self.next_batch(pool)

        return prefetched(load, step, prefetch)


def make_loader(sources: Sequence[Source], batch: BatchConfig, *args, **kwargs):
    """A `StreamLoader` when any source streams, else the step-exact `BatchLoader`."""
    from jaxwhisper.data.pipeline import BatchLoader

    if any(s.streaming for s in sources):
        return StreamLoader(sources, batch, *args, **kwargs)
    return BatchLoader(sources, batch, *args, **kwargs)


def host_rows(
    src: Source, process_index: int = 0, process_count: int = 1, max_rows: int = 0
) -> Iterator[tuple[int, object]]:
    """One pass over this process's rows of `src`, as `(i, row)`, for whole-set readers
    (evaluation, validation, pseudo-labelling).

    Map-style: `sources.process_rows` (rows i % P == p among the first `max_rows`).
    Streaming: this host's shards, read once (`max_rows` caps each host at its share,
    max_rows // P, rounded up for the first hosts); a set with fewer shards than hosts (a
    small validation split) is read whole by every host, which keeps rows i % P == p.
    """
    from jaxwhisper.data.sources import process_rows

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
