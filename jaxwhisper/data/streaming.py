"""Streaming training data: batches from sources read as streams, and a resumed run that
continues from the saved position.

Mixture. Row j of global step s is global draw g = s * global_batch + j; its source is the
counter-based hash of (seed, g) of `order.MixtureOrder` (not `interleave_datasets`, whose
choices live in an RNG state that advances with reading), so which source every row comes
from is a pure function of (seed, step) on every host, as for map-style sources. Each
source is read as this host's stream of its rows (`streams.py`: the host's own shards, an
optional shuffle buffer; map-style sources mixed in are read as a stream too).

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

from typing import Iterator, Optional, Sequence

import numpy as np

from jaxwhisper.data.batches import BatchConfig, Loader
from jaxwhisper.data.examples import Source
from jaxwhisper.data.order import MixtureOrder
from jaxwhisper.data.pipeline import BatchLoader
from jaxwhisper.data.prefetch import decode_pool, prefetched
from jaxwhisper.data.streams import open_stream


def _source_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def source_rows(src: Source) -> Optional[int]:
    """Rows of a source (of its unpacked base, for a packed stream) when known without
    reading it; the default mixture weights are proportional to them."""
    while src.streaming and hasattr(src, "base"):
        src = src.base
    if not src.streaming:
        return len(src)
    return getattr(src, "num_rows", None)


class StreamLoader(Loader):
    """`BatchLoader`'s batches from streaming (and map-style) sources, read in order.

    Args: as `batches.Loader`; weights are required when a streaming source's row count is
    unknown.
    """

    def set_up_reading(self, sources: list[Source], weights: Optional[Sequence[float]]) -> None:
        sizes = [source_rows(s) for s in sources]
        if not weights and None in sizes:
            unknown = [s.name for s, n in zip(sources, sizes) if n is None]
            raise ValueError(f"{', '.join(unknown)}: row count unknown; give data.weights for the mixture")
        self.order = MixtureOrder([n or 1 for n in sizes], weights or None, self.batch.seed)
        self.streams = [
            open_stream(s, self.process_index, self.process_count, _source_seed(self.batch.seed, k))
            for k, s in enumerate(sources)
        ]
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
        start = self.first_draw(self.step)
        which = self.order.sources_of(np.arange(start, start + self.local_batch))
        out = self.assemble([(self.sources[k].name, next(self.streams[k])) for k in which], pool)
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
    if any(s.streaming for s in sources):
        return StreamLoader(sources, batch, *args, **kwargs)
    return BatchLoader(sources, batch, *args, **kwargs)
