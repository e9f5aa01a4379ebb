"""Voice, room and noise perturbation, each checked against its textbook definition."""

import numpy as np
import pytest

from jaxwhisper.data.augment import (
    Perturbation,
    _convolve,
    change_voice,
    impulse_response,
    perturb,
    sample_perturbation,
)
from jaxwhisper.data.demo_corpus import perturbation


def _peak_hz(x: np.ndarray, sr: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * sr / len(x))


@pytest.mark.parametrize("factor", [0.88, 1.0, 1.25])
def test_change_voice_scales_pitch_and_duration(factor):
    sr = 22050
    tone = np.sin(2 * np.pi * 200.0 * np.arange(sr) / sr).astype(np.float32)
    out = change_voice(tone, sr, factor)
    assert len(out) == pytest.approx(16000 / factor, abs=2)
    # Frequency resolution of a 1 s window is 1 Hz.
    assert _peak_hz(out) == pytest.approx(200.0 * factor, abs=1.5)


def test_convolve_is_numpy_convolution_cut_to_the_input():
    rng = np.random.default_rng(0)
    x, h = rng.standard_normal(1000).astype(np.float32), rng.standard_normal(77).astype(np.float32)
    np.testing.assert_allclose(_convolve(x, h), np.convolve(x, h)[:1000], atol=1e-4)


@pytest.mark.parametrize("rt60", [0.2, 0.5])
def test_impulse_response_decays_60_db_in_rt60(rt60):
    h = impulse_response(rt60, np.random.default_rng(1))
    assert len(h) == round(rt60 * 16000)
    assert np.sum(h**2) == pytest.approx(1.0, rel=1e-5)
    # Least-squares slope of the energy envelope in dB over time: -60 dB per rt60.
    frames = (h[: len(h) // 160 * 160] ** 2).reshape(-1, 160).mean(axis=1)
    t = (np.arange(len(frames)) + 0.5) * 0.01
    slope = np.polyfit(t, 10 * np.log10(frames), 1)[0]
    assert slope * rt60 == pytest.approx(-60.0, rel=0.1)


def test_noise_is_added_at_the_asked_snr():
    sr = 16000
    clean = (0.3 * np.sin(2 * np.pi * 440.0 * np.arange(5 * sr) / sr)).astype(np.float32)
    noisy = perturb(clean, sr, Perturbation(snr_db=20.0, seed=3))
    noise = noisy - change_voice(clean, sr, 1.0)
    snr = 10 * np.log10(np.mean(clean**2) / np.mean(noise**2))
    assert snr == pytest.approx(20.0, abs=0.2)


def test_perturb_is_a_pure_function_of_its_seed_and_never_clips():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 22050).astype(np.float32)
    p = Perturbation(voice=1.1, rt60=0.3, wet=0.4, snr_db=10.0, seed=7)
    a, b = perturb(x, 22050, p), perturb(x, 22050, p)
    np.testing.assert_array_equal(a, b)
    assert np.max(np.abs(a)) <= 0.99 + 1e-6
    assert not np.array_equal(
        a, perturb(x, 22050, Perturbation(voice=1.1, rt60=0.3, wet=0.4, snr_db=10.0, seed=8))
    )
    assert perturb(np.zeros(0, np.float32), 22050, p).size == 0


def test_sampled_perturbations_stay_in_their_ranges_and_tags_tell_them_apart():
    rng = np.random.default_rng(0)
    ps = [sample_perturbation(rng, seed=i) for i in range(400)]
    assert all(0.88 <= p.voice <= 1.25 for p in ps)
    rooms = [p for p in ps if p.rt60 > 0]
    assert all(0.15 <= p.rt60 <= 0.6 and 0.1 <= p.wet <= 0.5 for p in rooms)
    assert all(15 <= p.snr_db <= 40 for p in ps if np.isfinite(p.snr_db))
    # About half with a room, half with noise.
    assert 150 < len(rooms) < 250
    assert 150 < sum(np.isfinite(p.snr_db) for p in ps) < 250
    assert len({p.tag() for p in ps}) == len(set(ps))


def test_demo_corpus_keeps_every_fourth_sentence_as_synthesized():
    assert all(perturbation(i, False) == Perturbation() for i in range(8))
    augmented = [perturbation(i, True) for i in range(40)]
    assert all(p == Perturbation() for p in augmented[::4])
    assert all(p != Perturbation() for i, p in enumerate(augmented) if i % 4)
    # Seeded by the sentence's index: a rebuild gives the same files.
    assert augmented == [perturbation(i, True) for i in range(40)]
