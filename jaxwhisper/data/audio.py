"""Audio decoding, resampling and validation.

Every failure is an `AudioError` whose message names the file and the cause, so that a CLI
can print one line per bad input and go on with the rest.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from jaxwhisper.data.features import SAMPLE_RATE

log = logging.getLogger(__name__)


class AudioError(ValueError):
    """An input that cannot be transcribed; `reason` is a short machine-readable cause."""

    def __init__(self, path: str | Path, reason: str, detail: str = ""):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


def validate(samples: np.ndarray, path: str | Path) -> np.ndarray:
    """Rejects empty or non-finite audio. Returns the samples unchanged."""
    if samples.size == 0:
        raise AudioError(path, "empty audio", "0 samples")
    bad = ~np.isfinite(samples)
    if bad.any():
        raise AudioError(path, "non-finite samples", f"{int(bad.sum())} NaN/inf values")
    return samples


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Reads an audio file as mono float32 at `sample_rate`.

    wav/flac/ogg (anything libsndfile reads); any rate is resampled with soxr (high
    quality); several channels are averaged, with a warning.

    Raises:
      AudioError: missing, unreadable, empty or non-finite audio.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "no such file")
    try:
        samples, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioError(path, "unreadable audio", str(e).splitlines()[0][:200]) from None
    if samples.shape[1] > 1:
        log.warning("%s: %d channels mixed down to mono", path, samples.shape[1])
    samples = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    validate(samples, path)
    if sr != sample_rate:
        samples = soxr.resample(samples, sr, sample_rate, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(samples, dtype=np.float32)
