"""Batched transcription: batch-size invariance and no recompilation between batches."""

import numpy as np
import pytest

from jaxwhisper.data.audio import load_audio
from jaxwhisper.inference.transcribe import Transcriber, chunk_audio, merge_overlapping, read_manifest

pytestmark = pytest.mark.slow


def test_batches_do_not_recompile_and_match_single_clips(tiny_en, fixture_manifest):
    rows = [u for u in read_manifest(fixture_manifest) if "arctic" in u.id or "sonnet001_f00000" in u.id][:5]
    clips = [load_audio(u.audio) for u in rows]
    batched = Transcriber(tiny_en, batch_size=2)
    texts = batched.transcribe_arrays(clips)  # 3 batches, the last one padded
    assert batched._run._cache_size() == 1
    single = Transcriber(tiny_en, batch_size=1).transcribe_arrays(clips[:2])
    assert texts[:2] == single
    assert all(t for t in texts)


def test_chunk_audio_covers_every_sample_with_overlap():
    audio = np.arange(16000 * 65, dtype=np.float32)
    windows = chunk_audio(audio, stride_s=5.0)
    assert [w.shape[0] for w in windows] == [480000] * 3
    assert [int(w[0]) for w in windows] == [0, 320000, 16000 * 35]
    covered = np.zeros(audio.shape[0], bool)
    for w in windows:
        covered[int(w[0]) : int(w[-1]) + 1] = True
    assert covered.all()
    assert len(chunk_audio(audio[:480000])) == 1


def test_merge_overlapping_joins_at_the_overlap():
    assert merge_overlapping([[1, 2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8]]) == [1, 2, 3, 4, 5, 6, 7, 8]
    # One disagreeing token in the overlap still aligns on the majority.
    assert merge_overlapping([[1, 2, 3, 4, 5], [3, 9, 5, 6]]) == [1, 2, 3, 4, 5, 6]
    # No overlap found: plain concatenation, nothing lost.
    assert merge_overlapping([[1, 2], [3, 4]]) == [1, 2, 3, 4]


def test_long_audio_is_chunked_not_truncated(tiny_en, fixture_manifest):
    """The 15 lines of a read sonnet joined into one 58 s recording (3 windows): the merged
    transcript is as good as transcribing the lines one by one, start and end included."""
    from jaxwhisper.evaluation.wer import normalize_text, word_error_rate

    rows = sorted((u for u in read_manifest(fixture_manifest) if "sonnet001" in u.id), key=lambda u: u.id)
    clips = [load_audio(u.audio) for u in rows]
    pause = np.zeros(4800, np.float32)
    long = np.concatenate([x for c in clips for x in (c, pause)])
    assert long.shape[0] > 480000 * 1.9 and len(chunk_audio(long)) == 3
    t = Transcriber(tiny_en, batch_size=4)
    text = t.transcribe_arrays([long])[0]
    ref = " ".join(u.text for u in rows)
    whole, lines = (
        word_error_rate([ref], [text]),
        word_error_rate([u.text for u in rows], t.transcribe_arrays(clips)),
    )
    print(f"\nlong-form WER {whole.wer:.1f}% vs line by line {lines.wer:.1f}%")
    assert whole.wer <= lines.wer + 5.0
    norm = normalize_text(text)
    assert norm.startswith("from fairest creatures") and norm.endswith("by the grave and thee")


def test_eight_devices_give_the_hypotheses_of_one(tiny_en, fixture_manifest):
    """conftest gives 8 fake CPU devices: batch 8 shards one row per device."""
    import jax

    assert jax.local_device_count() == 8
    rows = [u for u in read_manifest(fixture_manifest) if "pocketsphinx" in u.id or "arctic" in u.id][:8]
    clips = [load_audio(u.audio) for u in rows]
    sharded = Transcriber(tiny_en, batch_size=8)
    assert sharded.mesh.devices.size == 8
    single = Transcriber(tiny_en, batch_size=1)
    assert single.mesh.devices.size == 1
    assert sharded.transcribe_arrays(clips) == single.transcribe_arrays(clips)
