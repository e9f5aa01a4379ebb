"""Batched transcription: batch-size invariance and no recompilation between batches."""

import pytest

from jaxwhisper.data.audio import load_audio
from jaxwhisper.inference.transcribe import Transcriber, read_manifest

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
