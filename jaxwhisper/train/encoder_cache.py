"""Host-side cache of the frozen teacher encoder's outputs, by training window id.

With `student.freeze_encoder` the encoder is a fixed function of a window's audio, so a
window seen in an earlier epoch need not be encoded again. On a small corpus trained for
many epochs (the CPU demo) the encoder is most of a step's cost, and this removes it after
the first epoch. Single-process runs only: the processes of a multi-host run would have to
agree on which batches to encode, so there the encoder runs in every step. Runs that share
a teacher and its data (the pipeline's students) may share one cache: entries are keyed
by the teacher as well as the window.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

import numpy as np

log = logging.getLogger(__name__)


class EncoderCache:
    """`cache(batch) -> encoder outputs [rows, frames, embed]` (float32 numpy).

    Args:
      max_mb: host memory the cache may hold; windows beyond it are encoded every time.
      encode: `(audio [1, samples], audio_len [1]) -> [1, frames, embed]`, the teacher's
        jitted encoder on one row (only windows not cached yet are encoded); or set it
        with `bind` for each run that uses the cache.
      teacher: names the encoder in the keys.
    """

    def __init__(self, max_mb: float, encode: Optional[Callable] = None, teacher: str = ""):
        self.max_bytes = max_mb * 2**20
        self.encode, self.teacher = encode, teacher
        self.store: dict[tuple[str, str], np.ndarray] = {}
        self.bytes = 0
        self.hits = self.misses = 0

    def bind(self, encode: Callable, teacher: str) -> "EncoderCache":
        """Uses `encode` for the windows of `teacher` from now on."""
        self.encode, self.teacher = encode, teacher
        return self

    def __call__(self, batch: dict) -> np.ndarray:
        rows = []
        for r, window in enumerate(batch["ids"]):
            i = (self.teacher, window)
            row = self.store.get(i)
            if row is not None:
                self.hits += 1
            else:
                self.misses += 1
                row = np.asarray(
                    self.encode(batch["audio"][r : r + 1], batch["audio_len"][r : r + 1]), np.float32
                )[0]
                if self.bytes + row.nbytes <= self.max_bytes:
                    self.store[i] = row
                    self.bytes += row.nbytes
            rows.append(row)
        return np.stack(rows)

    def stats(self) -> dict:
        return {
            "train/encoder_cache_hits": self.hits,
            "train/encoder_cache_misses": self.misses,
            "train/encoder_cache_mb": self.bytes / 2**20,
        }
