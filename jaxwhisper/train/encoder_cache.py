"""Host-side cache of the frozen teacher encoder's outputs, by training window id.

With `student.freeze_encoder` the encoder is a fixed function of a window's audio, so a
window seen in an earlier epoch need not be encoded again. On a small corpus trained for
many epochs (the CPU demo) the encoder is most of a step's cost, and this removes it after
the first epoch. Single-process runs only: the processes of a multi-host run would have to
agree on which batches to encode, so there the encoder runs in every step.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)


class EncoderCache:
    """`cache(batch) -> encoder outputs [rows, frames, embed]` (float32 numpy).

    Args:
      encode: `(audio [rows, samples], audio_len [rows]) -> [rows, frames, embed]`, the
        teacher's jitted encoder; it always sees whole batches (one compilation).
      max_mb: host memory the cache may hold; windows beyond it are encoded every time.
    """

    def __init__(self, encode: Callable, max_mb: float):
        self.encode, self.max_bytes = encode, max_mb * 2**20
        self.store: dict[str, np.ndarray] = {}
        self.bytes = 0
        self.hits = self.misses = 0

    def __call__(self, batch: dict) -> np.ndarray:
        ids = batch["ids"]
        if all(i in self.store for i in ids):
            self.hits += len(ids)
            return np.stack([self.store[i] for i in ids])
        out = np.asarray(self.encode(batch["audio"], batch["audio_len"]), np.float32)
        for i, row in zip(ids, out):
            if i in self.store:
                self.hits += 1
                continue
            self.misses += 1
            if self.bytes + row.nbytes <= self.max_bytes:
                self.store[i] = row
                self.bytes += row.nbytes
        return out

    def stats(self) -> dict:
        return {
            "train/encoder_cache_hits": self.hits,
            "train/encoder_cache_misses": self.misses,
            "train/encoder_cache_mb": self.bytes / 2**20,
        }
