"""Deterministic, resumable, multi-host batches of map-style sources.

Row `j` of global step `s` is global draw `g = s * global_batch + j`, and which example it
is comes from `order.MixtureOrder`, a pure function of (seed, g). So a resumed run sees
exactly the batches an uninterrupted run would, and process `p` of `P` reads rows
`[p * B / P, (p + 1) * B / P)` of every global batch, so together the processes read each
example once per epoch. Rows that cannot be used keep their place as padding
(`validation.py`, `batches.py`).
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

from jaxwhisper.data.batches import Loader
from jaxwhisper.data.examples import Source
from jaxwhisper.data.order import MixtureOrder
from jaxwhisper.data.prefetch import decode_pool, prefetched


class BatchLoader(Loader):
    """Batches of this process's rows, step by step, from any step.

    Args: as `batches.Loader`; the sources are map-style, the default weights proportional
    to their sizes.
    """

    def set_up_reading(self, sources: list[Source], weights: Optional[Sequence[float]]) -> None:
        for s in sources:
            if s.streaming:
                raise ValueError(f"{s.name}: a streaming source; read it with streaming.StreamLoader")
        self.order = MixtureOrder([len(s) for s in sources], weights, self.batch.seed)

    def rows_of_step(self, step: int) -> list[tuple[int, int, int]]:
        """(source, item, epoch) of this process's rows at `step`."""
        return self.order.draws(self.first_draw(step), self.local_batch)

    def load_step(self, step: int, pool=None) -> dict:
        """The batch of `step`: numpy arrays, this process's rows only (`batches.assemble_batch`)."""
        rows = self.rows_of_step(step)
        out = self.assemble([(self.sources[s].name, self.sources[s][i]) for s, i, _ in rows], pool)
        out.update(step=step, epoch=rows[0][2] if rows else 0)
        return out

    def iter_from_step(self, step: int, prefetch: int = 2) -> Iterator[dict]:
        """Batches from `step` on, read `prefetch` steps ahead in a background thread."""
        pool = decode_pool(self.decode_workers)
        return prefetched(lambda s: self.load_step(s, pool), step, prefetch)
