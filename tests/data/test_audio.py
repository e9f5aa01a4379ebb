"""Audio loading: resampling, mixdown and every bad-input class with a real broken file."""

import logging

import numpy as np
import pytest
import soundfile as sf

from jaxwhisper.data.audio import AudioError, load_audio


def test_resamples_and_mixes_down(tmp_path, caplog):
    t = np.arange(44100) / 44100
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([tone, tone], axis=1)
    path = tmp_path / "stereo44k.wav"
    sf.write(path, stereo, 44100)
    with caplog.at_level(logging.WARNING):
        out = load_audio(path)
    assert "2 channels mixed down" in caplog.text
    assert out.dtype == np.float32 and abs(out.shape[0] - 16000) <= 1
    # The 440 Hz tone survives resampling: its spectrum peaks at 440 Hz.
    spec = np.abs(np.fft.rfft(out[:16000]))
    assert abs(np.argmax(spec) - 440) <= 1  # 1 s of samples: one bin per Hz


def test_ogg_and_flac_read(tmp_path):
    x = (0.1 * np.random.default_rng(0).normal(size=8000)).astype(np.float32)
    for ext in ("flac", "ogg"):
        sf.write(tmp_path / f"a.{ext}", x, 8000)
        assert load_audio(tmp_path / f"a.{ext}").shape[0] == 16000


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk"), "unreadable audio"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.mkdir(), "is a folder, not an audio file"),
        (lambda p: sf.write(p, np.zeros(0, np.float32), 16000), "empty audio"),
        (
            lambda p: sf.write(p, np.array([0.1, np.nan, 0.2], np.float32), 16000, subtype="FLOAT"),
            "non-finite samples",
        ),
    ],
    ids=["missing", "corrupt", "zero-bytes", "folder", "empty", "nan"],
)
def test_bad_inputs_name_the_file_and_cause(tmp_path, make, reason):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError) as e:
        load_audio(path)
    assert e.value.reason == reason
    assert str(path) in str(e.value)


def test_clipped_audio_is_a_warning_naming_the_file(tmp_path, fixture_manifest, caplog):
    """Real speech, 20x too loud and clipped to 16-bit full scale, is still transcribed but
    logged; the clean recording is not."""
    src = fixture_manifest.parent / "audio" / "mfa__falsetto.flac"
    x, sr = sf.read(src, dtype="float32")
    loud = tmp_path / "loud.wav"
    sf.write(loud, np.clip(20 * x, -1.0, 1.0), sr, subtype="PCM_16")
    with caplog.at_level(logging.WARNING):
        load_audio(src)
    assert "clipped" not in caplog.text
    with caplog.at_level(logging.WARNING):
        out = load_audio(loud)
    assert out.size > 0
    [line] = [r.getMessage() for r in caplog.records if "clipped" in r.getMessage()]
    assert line.startswith(f"{loud}: clipped audio")
