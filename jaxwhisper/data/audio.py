"""Audio decoding, resampling and validation.

Every failure is an `AudioError` whose message names the file and the cause, so that a CLI
can print one line per bad input and go on with the rest.
"""

from __future__ import annotations

import io
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


# 16-bit PCM's largest positive sample (32767 / 32768) reads as just under 1.0; a sample at
# or beyond it is at full scale in any format.
FULL_SCALE = 1.0 - 2.0**-15
CLIPPED_FRACTION = 1e-3  # a few full-scale peaks are normal; 0.1% of all samples is clipping


def warn_if_clipped(samples: np.ndarray, origin: str | Path) -> int:
    """Logs a warning when at least `CLIPPED_FRACTION` of `samples` (any shape) are at full
    scale, which is what a recording clipped by its level looks like. Returns that count."""
    n = int(np.count_nonzero(np.abs(samples) >= FULL_SCALE))
    if n and n >= CLIPPED_FRACTION * samples.size:
        log.warning(
            "%s: clipped audio: %d samples (%.2f%%) at full scale; transcripts may suffer",
            origin,
            n,
            100.0 * n / samples.size,
        )
    return n


def _mono_16k(samples: np.ndarray, sr: int, origin: str | Path, sample_rate: int) -> np.ndarray:
    """[samples, channels] at `sr` -> validated mono float32 [samples] at `sample_rate`."""
    warn_if_clipped(samples, origin)
    if samples.shape[1] > 1:
        log.warning("%s: %d channels mixed down to mono", origin, samples.shape[1])
    samples = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    validate(samples, origin)
    if sr != sample_rate:
        samples = soxr.resample(samples, sr, sample_rate, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(samples, dtype=np.float32)


def _read(f, origin: str | Path) -> tuple[np.ndarray, int]:
    try:
        return sf.read(f, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioError(origin, "unreadable audio", str(e).splitlines()[0][:200]) from None


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Reads an audio file as mono float32 at `sample_rate`.

    wav/flac/ogg (anything libsndfile reads); any rate is resampled with soxr (high
    quality); several channels are averaged, with a warning.

    Raises:
      AudioError: missing, a folder, a 0-byte file, unreadable, empty or non-finite audio.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "no such file")
    if path.is_dir():
        raise AudioError(path, "is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file", "0 bytes")
    return _mono_16k(*_read(str(path), path), path, sample_rate)


def decode_audio(audio, origin: str, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decodes what a data row holds (a path, or a hub `{"bytes", "path"}` dict) like `load_audio`.

    Returns:
      float32 [samples] mono at `sample_rate`.

    Raises:
      AudioError: naming `origin` (the row) for in-memory bytes, the path otherwise.
    """
    if isinstance(audio, dict) and audio.get("bytes") is not None:
        return _mono_16k(*_read(io.BytesIO(audio["bytes"]), origin), origin, sample_rate)
    path = audio.get("path") if isinstance(audio, dict) else audio
    if not path:
        raise AudioError(origin, "unreadable audio", "no audio bytes or path")
    return load_audio(path, sample_rate)
