"""Whisper log-mel features: a numpy reference and a jittable batched jnp version.

Two padding conventions exist and change transcripts (DESIGN.md section 5):

* `"audio"`: pad the waveform with zeros to 30 s, then take the log-mel of the whole window
  (transformers' WhisperFeatureExtractor).
* `"log_mel"`: take the log-mel of the clip itself (plus 160 zero samples), normalise with
  the clip's own maximum, keep `n_samples // 160` frames and pad the 3000-frame window with
  zeros in the normalised log-mel domain (faster-whisper; matches CTranslate2 outputs).

Both: 400-sample periodic Hann window, hop 160, centred STFT with reflect padding, power
spectrum, Slaney mel filters, `log10(max(mel, 1e-10))`, floor at max - 8, `(x + 4) / 4`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxwhisper.spmd import by_rows

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
CHUNK_S = 30
N_SAMPLES = SAMPLE_RATE * CHUNK_S  # 480000
N_FRAMES = N_SAMPLES // HOP  # 3000
PADDINGS = ("log_mel", "audio")


@functools.lru_cache(maxsize=4)
def mel_filters(n_mels: int, sr: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """Slaney-style mel filter bank [n_mels, n_fft // 2 + 1] (librosa's defaults, htk=False)."""
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0

    def hz_to_mel(f):
        return f / f_sp if f < min_log_hz else min_log_mel + np.log(f / min_log_hz) / logstep

    mels = np.linspace(0.0, hz_to_mel(sr / 2), n_mels + 2)
    freqs = f_sp * mels
    log_t = mels >= min_log_mel
    freqs[log_t] = min_log_hz * np.exp(logstep * (mels[log_t] - min_log_mel))
    fdiff = np.diff(freqs)
    ramps = freqs[:, None] - fftfreqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (freqs[2 : n_mels + 2] - freqs[:n_mels]))[:, None]
    return weights


def _hann() -> np.ndarray:
    return np.hanning(N_FFT + 1)[:-1]


def _normalise(log_spec, max_value, xp):
    log_spec = xp.maximum(log_spec, max_value - 8.0)
    return (log_spec + 4.0) / 4.0


def content_frames(n_samples: int) -> int:
    """Mel frames that carry the clip under `log_mel` padding."""
    return n_samples // HOP


def log_mel_numpy(audio: np.ndarray, n_mels: int = 80, padding: str = "log_mel") -> np.ndarray:
    """Reference log-mel of one clip in float64 numpy.

    Args:
      audio: mono 16 kHz samples [n_samples], at most 30 s.
      n_mels: 80 or 128.
      padding: "log_mel" (faster-whisper) or "audio" (transformers).

    Returns:
      Features [n_mels, 3000] float32.
    """
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    audio = np.asarray(audio, np.float64)
    n = audio.shape[0]
    if n > N_SAMPLES:
        raise ValueError(f"audio of {n / SAMPLE_RATE:.2f} s is longer than one 30 s window")
    x = np.pad(audio, (0, N_SAMPLES - n if padding == "audio" else HOP))
    x = np.pad(x, N_FFT // 2, mode="reflect")
    n_stft = 1 + (x.shape[0] - N_FFT) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP][:n_stft]
    power = np.abs(np.fft.rfft(frames * _hann(), axis=-1)) ** 2  # [frames, bins]
    mel = mel_filters(n_mels) @ power[:-1].T  # the last STFT frame is dropped
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = _normalise(log_spec, log_spec.max(), np)
    if padding == "log_mel":
        log_spec = log_spec[:, : content_frames(n)]
        log_spec = np.pad(log_spec, ((0, 0), (0, N_FRAMES - log_spec.shape[1])))
    return log_spec.astype(np.float32)


def log_mel_recording(audio: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """Log-mel of a whole recording of any length, as faster-whisper computes it for long-form.

    float32 throughout (faster-whisper's FeatureExtractor): 160 zero samples appended, the
    last STFT frame dropped, normalised with the recording's own maximum. Long-form windows
    are slices of this array padded with zeros to 3000 frames (`jaxwhisper.inference.longform`).

    Args:
      audio: mono 16 kHz samples [n_samples].
      n_mels: 80 or 128.

    Returns:
      Features [n_mels, n_samples // 160 + 1] f32; the first `n_samples // 160` frames are
      content (faster-whisper's `content_frames`).
    """
    x = np.asarray(audio, np.float32)
    if x.shape[0] < N_FFT:  # reflect padding needs more samples than half a window
        x = np.pad(x, (0, N_FFT - x.shape[0]))
    x = np.pad(np.pad(x, (0, HOP)), N_FFT // 2, mode="reflect")
    n_stft = 1 + (x.shape[0] - N_FFT) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP][: n_stft - 1]
    spec = np.fft.rfft(frames * _hann().astype(np.float32), axis=-1).astype(np.complex64)
    power = np.abs(spec) ** 2  # [frames, bins]
    mel = mel_filters(n_mels).astype(np.float32) @ power.T
    log_spec = np.log10(np.maximum(mel, 1e-10))
    return _normalise(log_spec, log_spec.max(), np).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("n_mels", "padding"))
def log_mel_batch(
    audio: jax.Array, lengths: jax.Array, n_mels: int = 80, padding: str = "log_mel"
) -> jax.Array:
    """Batched, jittable log-mel equal to `log_mel_numpy` row by row (up to f32 rounding).

    The window is the rows' width: 480000 samples (30 s, 3000 frames) for Whisper. A
    narrower window gives the first frames of the same features in "log_mel" padding (the
    encoder reads as many positions as it gets frames): cheaper steps where every clip is
    short, as in the test suite's training runs.

    Args:
      audio: [batch, window] f32 samples, each row zero beyond its length; window a
        multiple of 160 (480000 for Whisper's 30 s).
      lengths: [batch] int32 number of valid samples per row (<= window).
      n_mels: 80 or 128.
      padding: "log_mel" or "audio".

    Returns:
      Features [batch, n_mels, window // 160] f32.
    """
    if audio.shape[1] % HOP:
        raise ValueError(f"audio window of {audio.shape[1]} samples is not a multiple of {HOP}")
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    # Per device under a mesh: XLA replicates a batch-sharded FFT on every device (spmd.py).
    return by_rows(functools.partial(_log_mel_rows, n_mels=n_mels, padding=padding))(audio, lengths)


def _log_mel_rows(audio: jax.Array, lengths: jax.Array, n_mels: int, padding: str) -> jax.Array:
    batch, window = audio.shape
    n_frames = window // HOP
    if padding == "audio":
        sig_len = jnp.full((batch,), window, jnp.int32)
        n_valid_frames = jnp.full((batch,), n_frames, jnp.int32)
    else:
        sig_len = lengths.astype(jnp.int32) + HOP
        n_valid_frames = lengths.astype(jnp.int32) // HOP + 1  # frames used for the max
    # Sample index of every STFT tap, with the reflect padding of each row's own signal.
    j = jnp.arange(n_frames)[:, None] * HOP - N_FFT // 2 + jnp.arange(N_FFT)[None, :]
    j = j[None] * jnp.ones((batch, 1, 1), jnp.int32)
    last = (sig_len - 1)[:, None, None]
    j = jnp.abs(j)
    j = jnp.where(j > last, 2 * last - j, j)
    padded = jnp.pad(audio, ((0, 0), (0, HOP)))  # zeros that the 160-sample tail reads
    frames = jnp.take_along_axis(padded[:, None, :], j.reshape(batch, 1, -1), axis=2)
    frames = frames.reshape(batch, n_frames, N_FFT) * jnp.asarray(_hann(), jnp.float32)
    spec = jnp.fft.rfft(frames, axis=-1)
    power = spec.real**2 + spec.imag**2  # [batch, frames, bins]
    mel = jnp.einsum(
        "mf,btf->bmt",
        jnp.asarray(mel_filters(n_mels), jnp.float32),
        power,
        precision=jax.lax.Precision.HIGHEST,
    )
    log_spec = jnp.log10(jnp.maximum(mel, 1e-10))
    t = jnp.arange(n_frames)[None, None, :]
    in_max = t < n_valid_frames[:, None, None]
    max_value = jnp.max(jnp.where(in_max, log_spec, -jnp.inf), axis=(1, 2), keepdims=True)
    feats = _normalise(log_spec, max_value, jnp)
    if padding == "log_mel":
        feats = jnp.where(t < (n_valid_frames - 1)[:, None, None], feats, 0.0)
    return feats
