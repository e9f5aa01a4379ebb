"""Batched transcription: batch-size invariance and no recompilation between batches."""

import pytest

from jaxwhisper.data.audio import load_audio
from jaxwhisper.inference.inputs import read_manifest
from jaxwhisper.inference.transcribe import Transcriber

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
    sharded = Transcriber(tiny_en, batch_size=8, devices=jax.local_devices())
    assert sharded.mesh.devices.size == 8
    single = Transcriber(tiny_en, batch_size=1)
    assert single.mesh.devices.size == 1
    assert sharded.transcribe_arrays(clips) == single.transcribe_arrays(clips)


def test_a_shorter_model_window_decodes_the_clips_that_fit_and_refuses_the_others():
    """The window follows the model (n_audio_ctx 250: 5 s, as the training tests' teachers)."""
    import jax
    import numpy as np

    from jaxwhisper.models.config import WhisperConfig
    from jaxwhisper.models.weights.base import LoadedModel
    from jaxwhisper.models.weights.resolve import bundled_model_files
    from jaxwhisper.models.whisper import init_params

    cfg = WhisperConfig(
        n_vocab=51864, n_audio_ctx=250, n_text_ctx=16, d_model=64, n_heads=4,
        encoder_layers=1, decoder_layers=1, ffn_dim=128,
    )  # fmt: skip
    _, tok = bundled_model_files("tiny.en")
    model = LoadedModel(cfg, init_params(cfg, jax.random.PRNGKey(0)), tok, "random")
    t = Transcriber(model, batch_size=2)
    assert t.window == 80000
    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.normal(size=n)).astype(np.float32) for n in (48000, 80000, 80001)]
    results = dict(t.decode_results(enumerate(clips)))
    assert all(isinstance(results[i], list) for i in (0, 1))
    assert isinstance(results[2], ValueError) and "5 s window" in str(results[2])
    with pytest.raises(ValueError, match="timestamps need a 30 s model window"):
        Transcriber(model, timestamps=True)


def test_a_given_module_decodes_in_place_of_whisper(tiny_en, fixture_manifest):
    """`module=`: the decoders call the given module's methods by name (a subclass that
    makes end-of-text win after the first token ends every transcript there), in the short
    clips' decoder and in the long-form slot engine."""
    from jaxwhisper.models.whisper import Whisper

    class EndsAtOnce(Whisper):
        def decode(self, tokens, cross_kv, cache=None, offset=0):
            logits, cache = super().decode(tokens, cross_kv, cache=cache, offset=offset)
            return logits.at[..., 50256].add(1e4), cache  # tiny.en's end-of-text

    clips = [load_audio(u.audio) for u in read_manifest(fixture_manifest)[:2]]
    plain = Transcriber(tiny_en, batch_size=2)
    ended = Transcriber(tiny_en, batch_size=2, module=EndsAtOnce(tiny_en.config))
    want = [ids for _, ids in plain.decode_stream(enumerate(clips))]
    got = [ids for _, ids in ended.decode_stream(enumerate(clips))]
    assert all(len(w) > 3 for w in want) and got == [w[:1] for w in want]
    timed = Transcriber(tiny_en, batch_size=2, timestamps=True, module=EndsAtOnce(tiny_en.config))
    results = dict(timed.decode_results(enumerate(clips)))
    assert all(len(r.tokens(50256)) <= 1 for r in results.values())
