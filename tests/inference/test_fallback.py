"""Temperature fallback: the sampler against softmax(logits / T), the sampling decoder against
step-by-step sampling from teacher-forced logits, and which attempt a window keeps against
faster-whisper's own `generate_with_fallback` run on the same scripted decodings."""

import logging
import types

import jax
import numpy as np
import pytest
from slot_engines import BatchSlots

from jaxwhisper.inference.fallback import FALLBACK_TEMPERATURES, compression_ratio
from jaxwhisper.inference.longform import LongformDecoder, LongformOptions
from jaxwhisper.inference.windows import SegmentOptions, make_segment_decoder, sample_tokens
from jaxwhisper.models.whisper import Whisper
from tests.inference.test_decoding import BEGIN, CFG, PREFIX, SUPPRESS, _random_params


def test_compression_ratio_flags_repetition():
    assert compression_ratio("the cat sat on the mat") < 1.2
    assert compression_ratio("thank you " * 40) > 2.4


def test_sampler_draws_from_the_tempered_softmax():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=12).astype(np.float32) * 2
    logits[3] = -np.inf  # a suppressed token
    n = 20000
    for temperature in (0.5, 1.0):
        rows = np.broadcast_to(logits, (n, 12))
        t = np.full(n, temperature, np.float32)
        got = np.asarray(sample_tokens(rows, t, np.arange(n, dtype=np.int32), 7))
        z = np.where(np.isfinite(logits), logits / temperature, -np.inf).astype(np.float64)
        p = np.exp(z - z.max())
        p /= p.sum()
        counts = np.bincount(got, minlength=12)
        assert counts[3] == 0
        sigma = np.sqrt(n * p * (1 - p)) + 1
        assert np.all(np.abs(counts - n * p) < 5 * sigma), (counts, n * p)
    # a row's draw depends on its seed and step only, not on the rows beside it
    t = np.full(6, 0.7, np.float32)
    seeds = np.array([5, 9, 5, 1, 2, 3], np.int32)
    many = np.asarray(sample_tokens(np.broadcast_to(logits, (6, 12)), t, seeds, 3))
    alone = np.asarray(sample_tokens(logits[None], t[:1], seeds[:1], 3))
    assert many[0] == many[2] == alone[0]


@pytest.fixture(scope="module")
def model():
    mel = 3 * np.random.default_rng(1).normal(size=(4, CFG.n_mels, CFG.n_frames)).astype(np.float32)
    full = jax.jit(lambda p, m, t: Whisper(CFG).apply({"params": p}, m, t))
    return _random_params(), mel, full


def reference_sampling(model, eot, temperature, seed):
    """Each step: teacher-forced logits of the sequence so far, suppressed ids masked, one
    `jax.random.categorical` draw with the row's key folded with the step (greedy at 0)."""
    params, mel, full = model
    batch, max_new = mel.shape[0], CFG.n_text_ctx - len(PREFIX)
    tokens = np.zeros((batch, CFG.n_text_ctx), np.int32)
    tokens[:, : len(PREFIX)] = PREFIX
    out = np.full((batch, max_new), eot, np.int32)
    done = np.zeros(batch, bool)
    for step in range(max_new):
        logits = np.asarray(full(params, mel, tokens))[:, len(PREFIX) + step - 1].astype(np.float32)
        logits[:, list(SUPPRESS) + (list(BEGIN) if step == 0 else [])] = -np.inf
        nxt = logits.argmax(-1)
        for i in np.flatnonzero(temperature > 0):
            key = jax.random.fold_in(jax.random.PRNGKey(seed[i]), step)
            nxt[i] = int(jax.random.categorical(key, logits[i] / temperature[i]))
        nxt = np.where(done, eot, nxt)
        out[:, step] = tokens[:, len(PREFIX) + step] = nxt
        done |= nxt == eot
    return out


def test_sampling_decoder_equals_step_by_step_sampling(model):
    params, mel, _ = model
    eot = 119
    options = SegmentOptions(PREFIX, eot, no_speech=118, suppress_tokens=SUPPRESS, suppress_at_begin=BEGIN,
                             max_new_tokens=CFG.n_text_ctx - len(PREFIX))  # fmt: skip
    decode = jax.jit(make_segment_decoder(CFG, options))
    valid = np.ones(4, bool)
    temperature = np.array([0.0, 1.0, 0.6, 1.0], np.float32)
    seed = np.array([3, 3, 4, 11], np.int32)
    got, _, _ = decode(params, mel, valid, None, temperature, seed)
    want = reference_sampling(model, eot, temperature, seed)
    np.testing.assert_array_equal(np.asarray(got), want)
    greedy, _, _ = decode(params, mel, valid)
    np.testing.assert_array_equal(np.asarray(got)[0], np.asarray(greedy)[0])  # T = 0 is greedy
    assert (np.asarray(got)[1:] != np.asarray(greedy)[1:]).any(axis=1).all()  # sampling differs


# ---- which attempt a window keeps, against faster-whisper ----

WORDS = [f"w{i}" for i in range(50)]
EOT, BEGIN_TS = 1000, 2000


def decode_text(ids):
    return " ".join(WORDS[i] for i in ids)


def scripted_windows(n, seed=0):
    """Per window, per temperature: (ids, sum_logprob), plus the window's no-speech prob.
    Half the attempts are repetition loops; average log-probs straddle the -1 threshold."""
    rng = np.random.default_rng(seed)
    windows = []
    for _ in range(n):
        attempts = []
        for _t in FALLBACK_TEMPERATURES:
            length = int(rng.integers(3, 30))
            if rng.random() < 0.5:
                ids = [int(rng.integers(50))] * length  # a loop: compression ratio above 2.4
            else:
                ids = rng.integers(50, size=length).tolist()
            attempts.append((ids, float(rng.uniform(-1.6, -0.3)) * (length + 1)))
        windows.append((attempts, float(rng.choice([0.1, 0.9]))))
    return windows


def faster_whisper_choice(attempts, no_speech, options):
    fw = pytest.importorskip("faster_whisper.transcribe")

    def generate(encoder_output, prompts, **kwargs):
        t = kwargs.get("sampling_temperature", 0.0)
        ids, sum_lp = attempts[FALLBACK_TEMPERATURES.index(t)]
        # CTranslate2's score: cumulated log-prob / length ** length_penalty (1)
        score = sum_lp / len(ids)
        return [types.SimpleNamespace(sequences_ids=[ids], scores=[score], no_speech_prob=no_speech)]

    this = types.SimpleNamespace(
        model=types.SimpleNamespace(generate=generate), max_length=448, time_precision=0.02,
        logger=logging.getLogger("faster_whisper"),
    )  # fmt: skip
    opts = fw.TranscriptionOptions(
        beam_size=5, best_of=options.best_of, patience=1, length_penalty=1, repetition_penalty=1,
        no_repeat_ngram_size=0, log_prob_threshold=options.log_prob_threshold,
        no_speech_threshold=options.no_speech_threshold,
        compression_ratio_threshold=options.compression_ratio_threshold,
        condition_on_previous_text=False, prompt_reset_on_temperature=0.5,
        temperatures=list(options.temperatures), initial_prompt=None, prefix=None, suppress_blank=True,
        suppress_tokens=[-1], without_timestamps=True, max_initial_timestamp=1.0, word_timestamps=False,
        prepend_punctuations="", append_punctuations="", multilingual=False, max_new_tokens=None,
        clip_timestamps="0", hallucination_silence_threshold=None, hotwords=None,
    )  # fmt: skip
    tokenizer = types.SimpleNamespace(decode=decode_text)
    result, avg_logprob, _, _ = fw.WhisperModel.generate_with_fallback(this, None, [1], tokenizer, opts)
    skipped = no_speech > options.no_speech_threshold and avg_logprob <= options.log_prob_threshold
    return None if skipped else result.sequences_ids[0]


def test_the_kept_attempt_is_faster_whispers(caplog):
    options = LongformOptions("windows", temperatures=FALLBACK_TEMPERATURES, best_of=3)
    windows = scripted_windows(40)
    calls = []

    def run(mel, valid, temperature, seed):
        """Row k of file k (its mel holds k): the scripted attempt at its temperature (every
        sample of it the same: best_of's ranking is tested below)."""
        tokens = np.full((len(mel), 40), EOT, np.int32)
        sum_lp, no_speech = np.zeros(len(mel)), np.zeros(len(mel))
        calls.append(valid.sum())
        for i in np.flatnonzero(valid):
            k = int(mel[i, 0, 0])
            attempts, no_speech[i] = windows[k]
            ids, lp = attempts[FALLBACK_TEMPERATURES.index(round(float(temperature[i]), 1))]
            tokens[i, : len(ids)] = ids
            sum_lp[i] = lp
        return tokens, sum_lp, no_speech

    dec = LongformDecoder(BatchSlots(run, 8), 2, EOT, BEGIN_TS, decode_text, options)
    results = {}
    with caplog.at_level(logging.ERROR):
        for k in range(len(windows)):
            dec.add_features(k, np.full((2, 1001), k, np.float32))  # 10 s each
            results.update(dec.pump())
        results.update(dec.pump(final=True))
    assert len(calls) > len(windows) / 8 + 1  # retries took more batches
    kept = {"greedy": 0, "later": 0, "skipped": 0}
    for k, (attempts, no_speech) in enumerate(windows):
        want = faster_whisper_choice(attempts, no_speech, options)
        segs = results[k].segments
        if want is None:
            assert segs == []
            kept["skipped"] += 1
            continue
        assert [t for s in segs for t in s.tokens] == want
        kept["greedy" if want == attempts[0][0] else "later"] += 1
    assert min(kept.values()) > 0, kept  # every outcome occurs


def test_best_of_keeps_the_sample_with_the_highest_log_prob_per_token():
    """OpenAI's ranking (MaximumLikelihoodRanker without a length penalty): sum / length."""
    samples = {}

    # per token -0.9 -0.2 -0.5 -0.3 -0.8: the second is best per token, the first by its sum
    lengths, per_token = [2, 20, 5, 10, 3], [-0.9, -0.2, -0.5, -0.3, -0.8]
    scripted = [(list(range(1, 1 + n)), lp * n) for n, lp in zip(lengths, per_token)]

    def run(mel, valid, temperature, seed):
        tokens = np.full((len(mel), 40), EOT, np.int32)
        sum_lp = np.zeros(len(mel))
        for i in np.flatnonzero(valid):
            if temperature[i] == 0:
                tokens[i, :3], sum_lp[i] = [1, 2, 3], -20.0  # too unlikely: fall back
                continue
            ids, sum_lp[i] = scripted[len(samples)]
            tokens[i, : len(ids)] = ids
            samples[int(seed[i])] = ids
        return tokens, sum_lp, np.zeros(len(mel))

    options = LongformOptions("windows", temperatures=(0.0, 0.5), best_of=5)
    dec = LongformDecoder(BatchSlots(run, 4), 2, EOT, BEGIN_TS, decode_text, options)
    dec.add_features(0, np.ones((2, 1001), np.float32))
    ((_, result),) = dec.pump(final=True)
    assert len(samples) == 5  # five distinct seeds
    assert result.segments[0].tokens == scripted[1][0] and result.segments[0].temperature == 0.5


def test_one_temperature_is_greedy_and_keeps_a_loop(caplog):
    loop = [4] * 20

    def run(mel, valid, temperature, seed):
        assert not temperature.any()
        tokens = np.full((len(mel), 30), EOT, np.int32)
        tokens[:, :20] = loop
        return tokens, np.full(len(mel), -2.0), np.zeros(len(mel))

    dec = LongformDecoder(BatchSlots(run, 2), 2, EOT, BEGIN_TS, decode_text, LongformOptions("windows"))
    dec.add_features(0, np.zeros((2, 1001), np.float32))
    with caplog.at_level(logging.WARNING):
        ((_, result),) = dec.pump(final=True)
    assert result.segments[0].tokens == loop and "no temperature fallback" in caplog.text


@pytest.mark.parametrize("bad", [dict(temperatures=()), dict(temperatures=(0.0, -0.2)), dict(best_of=0)])
def test_bad_fallback_options(bad):
    with pytest.raises(ValueError, match="temperatures|best_of"):
        LongformOptions(**bad)


@pytest.mark.parity
@pytest.mark.slow
def test_real_speech_falls_back_where_faster_whisper_does(tiny_en, fixture_manifest):
    """tiny.en on 10 real clips with a strict log-prob threshold (-0.25) so that about a third
    fall back: the clips decoded again are faster-whisper's (its decision at temperature 0,
    on its own log-probs), and the others keep faster-whisper's greedy text. What the
    samples say after that is random on both sides and not compared."""
    faster_whisper = pytest.importorskip("faster_whisper")
    from jaxwhisper.data.audio import load_audio
    from jaxwhisper.evaluation.wer import normalize_text
    from jaxwhisper.inference.inputs import read_manifest
    from jaxwhisper.inference.transcribe import Transcriber
    from jaxwhisper.models.weights.resolve import bundled_model_files

    utts = [u for u in read_manifest(fixture_manifest) if "sonnet" in u.id or "mfa" in u.id][:10]
    clips = [load_audio(u.audio) for u in utts]
    settings = dict(log_prob_threshold=-0.25, best_of=1)
    fw = faster_whisper.WhisperModel(
        str(bundled_model_files("tiny.en")[1]), device="cpu", compute_type="float32", cpu_threads=2
    )
    theirs = []
    for audio in clips:
        segments, _ = fw.transcribe(
            audio, language="en", beam_size=1, temperature=[0.0, 1.0], condition_on_previous_text=False,
            without_timestamps=True, vad_filter=False, **settings,
        )  # fmt: skip
        segments = list(segments)
        theirs.append(("".join(s.text for s in segments).strip(), max(s.temperature for s in segments)))
    ours = Transcriber(tiny_en, batch_size=8, temperatures=(0.0, 1.0), **settings)
    results = dict(ours.decode_results(enumerate(clips)))
    fell_back = 0
    for i, (text, temperature) in enumerate(theirs):
        ours_t = max(s.temperature for s in results[i].segments)
        assert (ours_t > 0) == (temperature > 0), (utts[i].id, ours_t, temperature)
        if temperature == 0:
            assert normalize_text(ours.text(results[i])) == normalize_text(text), utts[i].id
        fell_back += temperature > 0
    assert 2 <= fell_back <= 8, fell_back  # both outcomes are exercised
