"""The order of training rows: which (source, item) global draw g is, a pure function of
(seed, g).

Its source is chosen by a counter-based hash of (seed, g) against the mixture
probabilities, and it is the k-th draw from that source, where k counts earlier draws of the
same source; draw k is item `perm(seed, source, k // size)[k % size]` of a fresh
permutation per epoch.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """Vectorised SplitMix64: a counter-based hash, uint64 -> uint64."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class MixtureOrder:
    """Which (source, item) is global draw g, for any g, without state.

    Args:
      sizes: items per source.
      weights: sampling weights (default: proportional to size).
      seed: the run's data seed.
    """

    BLOCK = 1 << 20

    def __init__(self, sizes: Sequence[int], weights: Optional[Sequence[float]] = None, seed: int = 0):
        if not sizes or min(sizes) <= 0:
            raise ValueError(f"every source needs at least one example, got sizes {list(sizes)}")
        w = np.asarray(weights if weights is not None else sizes, np.float64)
        if w.shape != (len(sizes),) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights {weights} do not fit {len(sizes)} sources")
        self.sizes = [int(s) for s in sizes]
        self.cum = np.cumsum(w / w.sum())
        self.seed = int(seed)
        self._perms: dict[tuple[int, int], np.ndarray] = {}
        self._block_counts: dict[int, np.ndarray] = {}  # counts before block b

    def sources_of(self, g: np.ndarray) -> np.ndarray:
        """Source of each global draw index (vectorised)."""
        if len(self.sizes) == 1:
            return np.zeros(np.shape(g), np.int64)
        h = _splitmix64(np.asarray(g, np.uint64) ^ _splitmix64(np.uint64(self.seed) * np.ones(1, np.uint64)))
        u = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        return np.minimum(np.searchsorted(self.cum, u, side="right"), len(self.sizes) - 1)

    def _counts_before(self, g: int) -> np.ndarray:
        """Draws of each source among global indices [0, g)."""
        b = g // self.BLOCK
        if b not in self._block_counts:
            known = max((k for k in self._block_counts if k <= b), default=0)
            counts = self._block_counts.get(known, np.zeros(len(self.sizes), np.int64))
            for k in range(known, b):
                src = self.sources_of(np.arange(k * self.BLOCK, (k + 1) * self.BLOCK))
                counts = counts + np.bincount(src, minlength=len(self.sizes))
                self._block_counts[k + 1] = counts
            self._block_counts.setdefault(b, counts)
        counts = self._block_counts[b]
        start = b * self.BLOCK
        if g > start:
            counts = counts + np.bincount(self.sources_of(np.arange(start, g)), minlength=len(self.sizes))
        return counts

    def _perm(self, source: int, epoch: int) -> np.ndarray:
        key = (source, epoch)
        if key not in self._perms:
            if len(self._perms) > 64:
                self._perms.clear()
            rng = np.random.default_rng([self.seed, source, epoch])
            self._perms[key] = rng.permutation(self.sizes[source])
        return self._perms[key]

    def draws(self, start: int, count: int) -> list[tuple[int, int, int]]:
        """(source, item index, epoch) of global draws [start, start + count)."""
        g = np.arange(start, start + count)
        src = self.sources_of(g)
        counts = self._counts_before(start).copy()
        out = []
        for s in src:
            k = int(counts[s])
            counts[s] += 1
            epoch, r = divmod(k, self.sizes[s])
            out.append((int(s), int(self._perm(int(s), epoch)[r]), epoch))
        return out
