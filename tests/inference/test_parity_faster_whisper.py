"""Parity with faster-whisper / CTranslate2 on the same weights (tiny.en, base) and real speech.

Settings on both sides: greedy, English, no VAD, no timestamps, no previous-text
conditioning, no temperature fallback, float32.
"""

import json

import numpy as np
import pytest

from jaxwhisper.data.audio import load_audio
from jaxwhisper.data.features import N_SAMPLES, log_mel_numpy
from jaxwhisper.evaluation.wer import normalize_text, word_error_rate
from jaxwhisper.inference.transcribe import Transcriber
from jaxwhisper.models.weights.resolve import bundled_model_files
from jaxwhisper.models.whisper import Whisper

faster_whisper = pytest.importorskip("faster_whisper")
ctranslate2 = pytest.importorskip("ctranslate2")

pytestmark = [pytest.mark.parity, pytest.mark.slow]


@pytest.fixture(scope="module")
def clips(fixture_manifest):
    rows = [json.loads(line) for line in fixture_manifest.read_text().splitlines()]
    out = []
    for r in rows:
        audio = load_audio(fixture_manifest.parent / r["audio"])
        if audio.shape[0] <= N_SAMPLES:
            out.append((r, audio))
    assert len(out) >= 50
    return out


@pytest.fixture(scope="module")
def ct2_dir():
    parts, tok_dir = bundled_model_files("tiny.en")
    return str(tok_dir)


def faster_whisper_texts(model_dir: str, clips) -> list[str]:
    model = faster_whisper.WhisperModel(model_dir, device="cpu", compute_type="float32", cpu_threads=2)
    texts = []
    for _, audio in clips:
        segments, _ = model.transcribe(
            audio,
            language="en",
            beam_size=1,
            temperature=0.0,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
            no_speech_threshold=None,
            log_prob_threshold=None,
            compression_ratio_threshold=None,
        )
        texts.append("".join(s.text for s in segments).strip())
    return texts


@pytest.fixture(scope="module")
def fw_texts(clips, ct2_dir):
    return faster_whisper_texts(ct2_dir, clips)


@pytest.fixture(scope="module")
def our_texts(clips, tiny_en):
    return Transcriber(tiny_en, batch_size=16).transcribe_arrays([a for _, a in clips])


def test_transcripts_match_faster_whisper(clips, fw_texts, our_texts):
    diff = word_error_rate(fw_texts, our_texts)
    refs = [r["text"] for r, _ in clips]
    ours, theirs = word_error_rate(refs, our_texts), word_error_rate(refs, fw_texts)
    mismatches = [(a, b) for a, b in zip(fw_texts, our_texts) if normalize_text(a) != normalize_text(b)]
    print(
        f"\nWER vs faster-whisper {diff.wer:.2f}%; vs refs: ours {ours.wer:.2f}%, "
        f"faster-whisper {theirs.wer:.2f}% ({len(clips)} clips); mismatches: {mismatches}"
    )
    assert diff.wer <= 1.0
    assert abs(ours.wer - theirs.wer) <= 0.5


def test_base_multilingual_matches_faster_whisper(clips, tmp_path):
    """The multilingual base model (two-part package, language/task prefix) on 8 clips."""
    import shutil

    from jaxwhisper.models.weights.resolve import resolve_model

    parts, tok_dir = bundled_model_files("base")
    with open(tmp_path / "model.bin", "wb") as out:
        for part in parts:
            out.write(part.read_bytes())
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(tok_dir / name, tmp_path / name)
    subset = clips[:8]
    theirs = faster_whisper_texts(str(tmp_path), subset)
    ours = Transcriber(resolve_model("base"), batch_size=8).transcribe_arrays([a for _, a in subset])
    diff = word_error_rate(theirs, ours)
    print(f"\nbase: WER vs faster-whisper {diff.wer:.2f}% on {len(subset)} clips")
    assert diff.wer <= 1.0


def _torch_f64_encoder(tiny_en, mel):
    """The same weights in transformers' PyTorch encoder, evaluated in float64."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from jaxwhisper.models.weights.ct2 import ct2_to_hf_state_dict, read_model_bin
    from jaxwhisper.models.weights.hf import config_to_hf

    c = tiny_en.config
    hf_config = transformers.WhisperConfig(**config_to_hf(c))
    model = transformers.WhisperForConditionalGeneration(hf_config).double().eval()
    parts, _ = bundled_model_files("tiny.en")
    _, sd = ct2_to_hf_state_dict(read_model_bin(parts)[1], "tiny.en")
    missing, _ = model.model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=False)
    assert not [k for k in missing if "proj_out" not in k]
    with torch.no_grad():
        return model.model.encoder(torch.from_numpy(mel.astype(np.float64))).last_hidden_state.numpy()


def test_encoder_matches_ctranslate2(clips, ct2_dir, tiny_en):
    """Encoder output against CTranslate2 and against a float64 evaluation of the same weights.

    The bulk of the output must agree to f32 rounding (99.9% of values within 1e-4; frames
    without outliers agree to ~3e-5). The largest differences sit in tiny.en's outlier
    dimensions (142, 354), where the residual stream reaches the hundreds and two f32
    runtimes cannot agree better than each agrees with the exact result; how close each
    lands there depends on the machine's kernels. Measured: on the earlier Intel machine
    ours was 2.8e-3 from float64 and CTranslate2 2.8e-3 (max difference 2.0e-3); on this
    AMD EPYC (avx512, jax 0.10.2, ctranslate2 4.8.5) ours is 6.9e-3 and CTranslate2 9.0e-4
    (max difference 7.4e-3), and our dense attention path gives 7.6e-4 against the tiled
    one's 6.9e-3 on the same input: a rounding-order effect, not a formula difference. So
    the maximum is bounded at 1e-2 and ours must stay within 10x CTranslate2's distance
    from float64.
    """
    model = ctranslate2.models.Whisper(ct2_dir, device="cpu", compute_type="float32", intra_threads=2)
    mel = np.stack([log_mel_numpy(a) for _, a in clips[:4]])
    theirs = np.asarray(model.encode(ctranslate2.StorageView.from_array(mel)))
    ours = np.asarray(Whisper(tiny_en.config).apply({"params": tiny_en.params}, mel, method=Whisper.encode))
    exact = _torch_f64_encoder(tiny_en, mel)
    err = np.abs(ours - theirs)
    ours_exact, theirs_exact = np.abs(ours - exact).max(), np.abs(theirs - exact).max()
    print(
        f"\nencoder vs CTranslate2: max {err.max():.2e}, median {np.median(err):.1e}, "
        f"99.9% {np.quantile(err, 0.999):.1e}; "
        f"vs float64: ours {ours_exact:.2e}, CTranslate2 {theirs_exact:.2e}"
    )
    assert np.quantile(err, 0.999) <= 1e-4
    assert err.max() <= 1e-2
    assert ours_exact <= 10 * theirs_exact
