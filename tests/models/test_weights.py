"""Loader parity: a random transformers PyTorch Whisper, saved in every supported format,
loaded by jaxwhisper, gives the reference logits (f32, 1e-4)."""

import os
import struct

import numpy as np
import pytest

from jaxwhisper.models.weights.base import ModelFormatError, ModelNotFoundError
from jaxwhisper.models.weights.ct2 import read_model_bin
from jaxwhisper.models.weights.hf import hf_state_dict_to_params
from jaxwhisper.models.weights.native import save_checkpoint
from jaxwhisper.models.weights.resolve import resolve_model
from jaxwhisper.models.whisper import Whisper

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.parity
BUNDLED_TOKENIZER = None


def _tiny_hf_config():
    return transformers.WhisperConfig(
        vocab_size=51864,
        num_mel_bins=80,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        d_model=64,
        encoder_ffn_dim=256,
        decoder_ffn_dim=256,
        max_source_positions=1500,
        max_target_positions=448,
    )


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    """A random small WhisperForConditionalGeneration saved as safetensors (+ tokenizer)."""
    from jaxwhisper.models.weights.resolve import bundled_model_files

    torch.manual_seed(0)
    model = transformers.WhisperForConditionalGeneration(_tiny_hf_config()).eval()
    # Random init leaves LayerNorms at (1, 0); perturb them so a mis-mapped norm shows.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    d = tmp_path_factory.mktemp("hf")
    model.save_pretrained(d)
    _, tok_dir = bundled_model_files("tiny.en")
    transformers.WhisperTokenizerFast(tokenizer_file=str(tok_dir / "tokenizer.json")).save_pretrained(d)
    return model, d


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    mel = rng.normal(size=(2, 80, 3000)).astype(np.float32)
    tokens = rng.integers(0, 51864, size=(2, 7)).astype(np.int32)
    return mel, tokens


@pytest.fixture(scope="module")
def reference_logits(hf_model, inputs):
    model, _ = hf_model
    mel, tokens = inputs
    with torch.no_grad():
        out = model(input_features=torch.from_numpy(mel), decoder_input_ids=torch.from_numpy(tokens).long())
    return out.logits.numpy()


def _logits(loaded, inputs):
    mel, tokens = inputs
    return np.asarray(Whisper(loaded.config).apply({"params": loaded.params}, mel, tokens))


def test_safetensors_dir(hf_model, inputs, reference_logits):
    loaded = resolve_model(str(hf_model[1]))
    np.testing.assert_allclose(_logits(loaded, inputs), reference_logits, atol=1e-4, rtol=0)


def test_pytorch_model_bin_dir(hf_model, inputs, reference_logits, tmp_path):
    model, _ = hf_model
    model.save_pretrained(tmp_path, safe_serialization=False)
    if not (tmp_path / "pytorch_model.bin").exists():  # transformers 5 always writes safetensors
        torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
        for f in tmp_path.glob("*.safetensors"):
            f.unlink()
    loaded = resolve_model(str(tmp_path))
    np.testing.assert_allclose(_logits(loaded, inputs), reference_logits, atol=1e-4, rtol=0)


def test_ctranslate2_converted_by_ctranslate2(hf_model, inputs, reference_logits, tmp_path):
    """ctranslate2's own converter writes the model.bin; our reader and map must undo it."""
    ct2 = pytest.importorskip("ctranslate2.converters")
    out = tmp_path / "ct2"
    ct2.TransformersConverter(str(hf_model[1])).convert(str(out), quantization="float32")
    loaded = resolve_model(str(out))
    np.testing.assert_allclose(_logits(loaded, inputs), reference_logits, atol=1e-4, rtol=0)


def test_openai_pt(inputs, tmp_path):
    """A random openai-whisper model saved as OpenAI saves checkpoints."""
    whisper_model = pytest.importorskip("whisper.model")
    dims = whisper_model.ModelDimensions(
        n_mels=80,
        n_audio_ctx=1500,
        n_audio_state=64,
        n_audio_head=4,
        n_audio_layer=2,
        n_vocab=51864,
        n_text_ctx=448,
        n_text_state=64,
        n_text_head=4,
        n_text_layer=2,
    )
    torch.manual_seed(1)
    model = whisper_model.Whisper(dims).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.05 * torch.randn_like(p))
    path = tmp_path / "tiny-random.pt"
    torch.save({"dims": dims.__dict__, "model_state_dict": model.state_dict()}, path)
    mel, tokens = inputs
    with torch.no_grad():
        ref = model(torch.from_numpy(mel), torch.from_numpy(tokens).long()).numpy()
    loaded = resolve_model(str(path))
    np.testing.assert_allclose(_logits(loaded, inputs), ref, atol=1e-4, rtol=0)


def test_convert_roundtrip_is_bitwise(hf_model, inputs, tmp_path):
    loaded = resolve_model(str(hf_model[1]))
    save_checkpoint(loaded, tmp_path / "ckpt")
    again = resolve_model(str(tmp_path / "ckpt"))
    assert again.config == loaded.config
    np.testing.assert_array_equal(_logits(again, inputs), _logits(loaded, inputs))
    assert (tmp_path / "ckpt" / "tokenizer.json").exists()


def test_config_round_trips_through_transformers(hf_model):
    from jaxwhisper.models.weights.hf import config_from_hf, config_to_hf

    loaded = resolve_model(str(hf_model[1]))
    assert config_to_hf(loaded.config) == {
        k: hf_model[0].config.to_dict()[k] for k in config_to_hf(loaded.config)
    }
    assert config_from_hf(config_to_hf(loaded.config) | {"model_type": "whisper"}) == loaded.config


def test_missing_gates_are_initialised_and_nothing_else(hf_model):
    plain = resolve_model(str(hf_model[1]))
    assert "gate_proj" not in plain.params["decoder"]["layers_0"]["self_attn"]
    gated = resolve_model(str(hf_model[1]), gate="shared")
    attn = gated.params["decoder"]["layers_0"]["encoder_attn"]
    assert attn["gate_proj"]["kernel"].shape == (64, 1)
    np.testing.assert_allclose(attn["gate_proj"]["bias"], np.log(0.9 / 0.1), rtol=1e-6)
    np.testing.assert_array_equal(
        attn["q_proj"]["kernel"], plain.params["decoder"]["layers_0"]["encoder_attn"]["q_proj"]["kernel"]
    )


def test_missing_weight_is_named(hf_model):
    from safetensors.numpy import load_file

    sd = load_file(str(hf_model[1] / "model.safetensors"))
    del sd["model.decoder.layers.1.fc2.weight"]
    loaded = resolve_model(str(hf_model[1]))
    with pytest.raises(ModelFormatError, match="decoder.layers.1.fc2.weight"):
        hf_state_dict_to_params(sd, loaded.config, source="x")


def test_truncated_model_bin(tmp_path):
    from jaxwhisper.models.weights.resolve import bundled_model_files

    parts, _ = bundled_model_files("tiny.en")
    bad = tmp_path / "model.bin"
    bad.write_bytes(parts[0].read_bytes()[:100_000])
    with pytest.raises(ModelFormatError, match="truncated"):
        read_model_bin(bad)
    bad.write_bytes(struct.pack("<I", 99) + b"\0" * 64)
    with pytest.raises(ModelFormatError, match="binary version 99"):
        resolve_model(str(bad))


def test_unknown_model_name_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="unknown model 'tinny.en'"):
        resolve_model("tinny.en")
    with pytest.raises(ModelNotFoundError, match="hub could not provide it"):
        resolve_model("nobody/no-such-whisper")
    with pytest.raises(ModelNotFoundError, match="no such file"):
        resolve_model(os.path.join(".", "missing", "dir"))
