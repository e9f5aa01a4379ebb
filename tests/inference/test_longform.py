"""Long-form bookkeeping without a model: features, windows, segment splitting, batching."""

import types

import numpy as np
import pytest
from slot_engines import BatchSlots

from jaxwhisper.data.features import log_mel_recording
from jaxwhisper.inference.longform import (
    LongformDecoder,
    LongformOptions,
    split_by_timestamps,
    window_features,
)

BEGIN = 50363  # tiny.en's <|0.00|>
EOT = 50256


def ts(seconds: float) -> int:
    return BEGIN + round(seconds / 0.02)


CASES = [
    [ts(0), 10, 11, ts(2.0), ts(2.0), 12, ts(5.0), ts(5.0), 13],  # unfinished text after the last pair
    [ts(0), 10, ts(3.0), ts(3.0), 11, ts(9.0)],  # single timestamp ending: window consumed
    [ts(0.4), 10, 11, ts(4.0)],  # one pair, then end
    [10, 11, 12],  # no timestamps (windows mode)
    [ts(0), 10, 11],  # one timestamp only
    [],
]


@pytest.mark.parity
@pytest.mark.parametrize("tokens", CASES)
def test_split_by_timestamps_matches_faster_whisper(tokens):
    fw = pytest.importorskip("faster_whisper.transcribe")
    stub = types.SimpleNamespace(time_precision=0.02, input_stride=2)
    tokenizer = types.SimpleNamespace(timestamp_begin=BEGIN)
    seek, size = 4200, 2600
    theirs, their_seek, _ = fw.WhisperModel._split_segments_by_timestamps(
        stub, tokenizer, tokens, seek * 0.01, size, size * 0.01, seek
    )
    ours, our_seek = split_by_timestamps(tokens, BEGIN, seek, size)
    assert our_seek == their_seek
    assert [(round(s.start, 6), round(s.end, 6), s.tokens) for s in ours] == [
        (round(s["start"], 6), round(s["end"], 6), s["tokens"]) for s in theirs
    ]


@pytest.mark.parity
def test_recording_features_match_faster_whisper():
    fe = pytest.importorskip("faster_whisper.feature_extractor")
    rng = np.random.default_rng(0)
    audio = (rng.normal(size=16000 * 65 + 77) * np.linspace(0, 0.3, 16000 * 65 + 77)).astype(np.float32)
    theirs = fe.FeatureExtractor(feature_size=80)(audio)
    ours = log_mel_recording(audio, 80)
    assert ours.shape == theirs.shape == (80, audio.shape[0] // 160 + 1)
    assert np.abs(ours - theirs).max() <= 1e-5


def test_window_features_slice_and_zero_pad():
    feats = np.arange(2 * 4001, dtype=np.float32).reshape(2, 4001) + 1  # 4000 content frames
    mel, size = window_features(feats, 0)
    assert size == 3000 and np.array_equal(mel, feats[:, :3000])
    mel, size = window_features(feats, 3000)
    assert size == 1000 and np.array_equal(mel[:, :1000], feats[:, 3000:4000]) and not mel[:, 1000:].any()


def fake_run(calls, advance_s=10.0):
    """A decoder whose rows read which file and seek they hold from the mel values
    (file k's frame t holds k * 1e5 + t) and say: speech from 0 to `advance_s`, then text."""

    def run(mel, valid, temperature, seed):
        assert list(valid) == [m.any() for m in mel]
        calls.append([(int(m[0, 0] // 1e5), int(m[0, 0] % 1e5)) if m.any() else None for m in mel])
        tokens = np.full((mel.shape[0], 8), EOT, np.int32)
        tokens[:, :5] = [ts(0), 10, ts(advance_s), ts(advance_s), 11]  # unfinished: seek to advance_s
        return tokens, np.zeros(mel.shape[0]), np.zeros(mel.shape[0])

    return run


def features(k: int, seconds: float) -> np.ndarray:
    frames = int(seconds * 100) + 1
    return np.broadcast_to(k * 1e5 + np.arange(frames, dtype=np.float64), (2, frames)).astype(np.float64)


def test_sequential_batches_hold_one_window_per_file_refilled_as_files_advance():
    calls = []
    dec = LongformDecoder(
        BatchSlots(fake_run(calls), 2), 2, EOT, BEGIN, lambda ids: "x", LongformOptions("sequential")
    )
    results = {}
    for k, seconds in enumerate([35.0, 62.0, 12.0]):
        dec.add_features(k, features(k + 1, seconds))
        results.update(dec.pump())
    results.update(dec.pump(final=True))
    # each window advances 10 s; a row is a file at its current seek, files never share a row
    for batch in calls:
        files = [r[0] for r in batch if r is not None]
        assert len(files) == len(set(files))
    seeks = {k: [r[1] for b in calls for r in b if r and r[0] == k + 1] for k in range(3)}
    assert seeks == {0: [0, 1000, 2000, 3000], 1: [0, 1000, 2000, 3000, 4000, 5000, 6000], 2: [0, 1000]}
    assert sum(r is None for b in calls for r in b) <= 3  # padding only once files run out
    for k, seconds in enumerate([35.0, 62.0, 12.0]):
        segs = results[k].segments
        assert [s.start for s in segs] == pytest.approx([10.0 * i for i in range(len(segs))])
        assert segs[-1].end == pytest.approx(min(10.0 * len(segs), seconds + 10.0))


def test_windows_mode_decodes_consecutive_windows_in_one_batch():
    calls = []
    dec = LongformDecoder(
        BatchSlots(fake_run(calls), 4), 2, EOT, BEGIN, lambda ids: "x", LongformOptions("windows")
    )
    dec.add_features(0, features(1, 95.0))
    results = dict(dec.pump(final=True))
    assert calls == [[(1, 0), (1, 3000), (1, 6000), (1, 9000)]]
    assert [round(s.start, 6) for s in results[0].segments] == [0.0, 30.0, 60.0, 90.0]


def test_no_speech_window_is_skipped_unless_its_log_prob_is_high():
    def run(mel, valid, temperature, seed):
        tokens = np.full((mel.shape[0], 4), EOT, np.int32)
        tokens[:, :3] = [ts(0), 10, ts(1.0)]
        # avg log-prob = sum / (3 tokens + 1): row 0 -2.0 (skipped), row 1 -0.5 (kept)
        return tokens, np.array([-8.0, -2.0]), np.array([0.9, 0.9])

    dec = LongformDecoder(BatchSlots(run, 2), 2, EOT, BEGIN, lambda ids: "x", LongformOptions("sequential"))
    dec.add_features(0, features(1, 5.0))
    dec.add_features(1, features(2, 5.0))
    results = dict(dec.pump(final=True))
    assert results[0].segments == [] and len(results[1].segments) == 1


def test_chunked_mode_batches_one_files_chunks_and_offsets_their_segments():
    calls = []
    dec = LongformDecoder(
        BatchSlots(fake_run(calls), 8), 2, EOT, BEGIN, lambda ids: "x", LongformOptions("chunked")
    )
    dec.add_features(0, features(1, 95.0))  # frame values rise: every cut at the earliest frame
    results = dict(dec.pump(final=True))
    # the five chunks [0, 20), [20, 40), ..., [80, 95) s share the first batch
    assert calls[0][:5] == [(1, 0), (1, 2000), (1, 4000), (1, 6000), (1, 8000)]
    # each chunk: a window reads 10 s of text, then the next window the rest of the chunk
    assert calls[1][:5] == [(1, 1000), (1, 3000), (1, 5000), (1, 7000), (1, 9000)]
    assert len(calls) == 2
    segments = results[0].segments
    assert [round(s.start, 6) for s in segments] == [10.0 * i for i in range(10)]
    assert all(a.end <= b.start for a, b in zip(segments, segments[1:]))
