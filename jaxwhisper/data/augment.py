"""Voice, room and noise perturbation of synthesized speech, to widen what one TTS voice covers.

Three cheap perturbations:

  * voice: the waveform resampled as if it had been recorded at `factor` times its rate
    (Kaldi-style speed perturbation): pitch and formants scale by `factor`, which is what
    separates a deeper from a higher voice; the speaking rate is restored by asking the TTS
    for `factor` times longer speech (`length_scale`), so only the voice changes;
  * room: convolution with an exponentially decaying noise impulse response of a given RT60
    (Schroeder's model of a diffuse reverberant tail), mixed with the dry signal;
  * noise: white noise at a given signal-to-noise ratio.

Measured on the demo's students (59 test clips, one run each), it did not help: a 4+3 student
reached 28.7% WER with it against 29.1% without, so the demo leaves it off (README, "Data").

Pure functions of (audio, parameters, seed), so a corpus is rebuilt bit for bit.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import soxr

from jaxwhisper.data.features import SAMPLE_RATE


@dataclasses.dataclass(frozen=True)
class Perturbation:
    """What is done to one clip.

    Attributes:
      voice: pitch and formant factor (1.0: the voice as synthesized).
      rt60: reverberation time in seconds (0: dry).
      wet: share of the reverberant signal in the mix, in [0, 1].
      snr_db: white-noise signal-to-noise ratio in dB (inf: no noise).
      seed: of the impulse response and the noise.
    """

    voice: float = 1.0
    rt60: float = 0.0
    wet: float = 0.0
    snr_db: float = float("inf")
    seed: int = 0

    def tag(self) -> str:
        """A short file-name tag that differs whenever the output would."""
        parts = [f"v{round(self.voice * 100)}"]
        if self.rt60 > 0 and self.wet > 0:
            parts.append(f"r{round(self.rt60 * 100)}w{round(self.wet * 100)}")
        if np.isfinite(self.snr_db):
            parts.append(f"n{round(self.snr_db)}")
        return "-".join(parts) + f"-s{self.seed}"


def sample_perturbation(rng: np.random.Generator, voices=(0.88, 1.25), seed: int = 0) -> Perturbation:
    """One random perturbation: voice factor log-uniform in `voices`; a room (RT60 0.15-0.6 s,
    wet 0.1-0.5) for half the clips; noise at 15-40 dB SNR for half."""
    lo, hi = voices
    voice = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    room = rng.random() < 0.5
    noisy = rng.random() < 0.5
    return Perturbation(
        voice=round(voice, 2),
        rt60=round(float(rng.uniform(0.15, 0.6)), 2) if room else 0.0,
        wet=round(float(rng.uniform(0.1, 0.5)), 2) if room else 0.0,
        snr_db=round(float(rng.uniform(15, 40))) if noisy else float("inf"),
        seed=seed,
    )


def change_voice(audio: np.ndarray, sample_rate: int, factor: float) -> np.ndarray:
    """`audio` at `sample_rate` replayed `factor` times faster, at 16 kHz: pitch and formants
    times `factor`, duration divided by it. [samples] -> [samples']."""
    return soxr.resample(audio.astype(np.float32), sample_rate * factor, SAMPLE_RATE, quality="HQ")


def impulse_response(rt60: float, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A diffuse tail: Gaussian noise under an envelope that falls 60 dB in `rt60` seconds,
    unit energy. [round(rt60 * sample_rate)]."""
    n = max(1, round(rt60 * sample_rate))
    t = np.arange(n) / sample_rate
    h = rng.standard_normal(n) * 10.0 ** (-3.0 * t / rt60)
    return (h / np.sqrt(np.sum(h**2))).astype(np.float32)


def _convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Linear convolution cut to len(x), by FFT."""
    n = len(x) + len(h) - 1
    size = 1 << (n - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)
    return y[: len(x)].astype(np.float32)


def perturb(audio: np.ndarray, sample_rate: int, p: Perturbation) -> np.ndarray:
    """Applies `p` to `audio` (float, at `sample_rate`) and returns 16 kHz float32 samples,
    peak-limited to 0.99 so that nothing clips."""
    rng = np.random.default_rng(p.seed)
    x = change_voice(audio, sample_rate, p.voice)
    if x.size == 0:
        return x
    if p.rt60 > 0 and p.wet > 0:
        wet = _convolve(x, impulse_response(p.rt60, rng))
        # Same energy as the dry signal, so the mix keeps the clip's level.
        wet *= np.sqrt(np.sum(x**2) / max(float(np.sum(wet**2)), 1e-12))
        x = (1 - p.wet) * x + p.wet * wet
    if np.isfinite(p.snr_db):
        power = float(np.mean(x**2))
        x = x + rng.standard_normal(x.size).astype(np.float32) * np.sqrt(power / 10 ** (p.snr_db / 10))
    peak = float(np.max(np.abs(x)))
    if peak > 0.99:
        x = x * (0.99 / peak)
    return x.astype(np.float32)
