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


def test_windows_joining_a_running_batch_decode_as_each_window_alone(tiny_en, fixture_manifest):
    """The long-form slot engine on 2 devices, two slots each: 7 windows of real speech, a
    slot refilled as soon as its window ends, so windows run at different positions side by
    side. Each window's tokens, log-prob sum and no-speech probability are those of the
    window decoded alone (beside an empty row: the same per-device shapes), bit for bit."""
    import jax
    import numpy as np

    from jaxwhisper.data.features import log_mel_recording
    from jaxwhisper.inference.longform import window_features
    from jaxwhisper.inference.windows import make_segment_decoder

    rows = [u for u in read_manifest(fixture_manifest) if "arctic" in u.id or "sonnet" in u.id][:7]
    mels = [window_features(log_mel_recording(load_audio(u.audio), 80), 0)[0] for u in rows]
    cpu_default = Transcriber(tiny_en, batch_size=4, devices=jax.local_devices()[:2])
    assert cpu_default._window_engine(timestamps=True).devices == 1  # CPU: one device's engine
    t = Transcriber(tiny_en, batch_size=4, devices=jax.local_devices()[:2])
    t._slot_mesh, t._slot_rows = t.mesh, t._rows  # accelerators' layout: slots on every device
    slots = t._window_engine(timestamps=True)
    assert slots.devices == 2
    queue, results, joined_running = list(range(len(mels))), {}, 0
    held = {}
    while queue or held:
        n = min(slots.free(), len(queue))
        if n:
            joined_running += bool(held)
            items = [(mels[i], 0.0, 0) for i in queue[:n]]
            held.update(zip(slots.admit(items), queue[:n]))
            queue = queue[n:]
        for slot, tokens, sum_lp, no_speech in slots.advance():
            results[held.pop(slot)] = (tokens, sum_lp, no_speech)
    assert joined_running >= 2  # windows did join a running batch
    ends = [int(np.argmax(r[0] == t.tokenizer.eot)) for r in results.values()]
    assert len(set(ends)) >= 4, ends  # and the windows ended at different steps

    alone = make_segment_decoder(t.config, t.segment_options(True))
    for i, mel in enumerate(mels):
        pair = np.stack([mel, np.zeros_like(mel)])
        tokens, sum_lp, no_speech = jax.device_get(alone(t.params, pair, np.array([True, False])))
        got = results[i]
        assert np.array_equal(got[0], tokens[0]), i
        assert (got[1], got[2]) == (float(sum_lp[0]), float(no_speech[0])), i


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
