"""WhisperConfig: the official sizes (OpenAI's model dimensions, written out here, not derived
from the presets) and the values the config rejects."""

import pytest

from jaxwhisper.models.config import PRESETS, WhisperConfig, preset

# name: (d_model, heads, encoder layers, decoder layers, n_vocab, n_mels), OpenAI's ModelDimensions.
OFFICIAL = {
    "tiny.en": (384, 6, 4, 4, 51864, 80),
    "tiny": (384, 6, 4, 4, 51865, 80),
    "base.en": (512, 8, 6, 6, 51864, 80),
    "base": (512, 8, 6, 6, 51865, 80),
    "small.en": (768, 12, 12, 12, 51864, 80),
    "small": (768, 12, 12, 12, 51865, 80),
    "medium.en": (1024, 16, 24, 24, 51864, 80),
    "medium": (1024, 16, 24, 24, 51865, 80),
    "large-v1": (1280, 20, 32, 32, 51865, 80),
    "large-v2": (1280, 20, 32, 32, 51865, 80),
    "large": (1280, 20, 32, 32, 51865, 80),
    "large-v3": (1280, 20, 32, 32, 51866, 128),
    "large-v3-turbo": (1280, 20, 32, 4, 51866, 128),
}


def test_preset_names_are_exactly_the_official_sizes():
    assert set(PRESETS) == set(OFFICIAL)


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_preset_sizes(name):
    d_model, heads, enc, dec, vocab, mels = OFFICIAL[name]
    c = preset(name)
    got = (c.d_model, c.n_heads, c.encoder_layers, c.decoder_layers, c.n_vocab, c.n_mels)
    assert got == (d_model, heads, enc, dec, vocab, mels)
    assert c.ffn_dim == 4 * d_model and c.head_dim == 64
    assert (c.n_audio_ctx, c.n_text_ctx, c.n_frames) == (1500, 448, 3000)
    assert c.is_multilingual == (not name.endswith(".en"))
    assert c.gate == "none" and (c.softmax_clip_gamma, c.softmax_clip_zeta) == (0.0, 1.0)


def test_preset_overrides_and_replace_leave_the_table_alone():
    gated = preset("tiny.en", gate="shared", decoder_layers=2)
    assert (gated.gate, gated.decoder_layers, gated.d_model) == ("shared", 2, 384)
    assert PRESETS["tiny.en"].gate == "none" and PRESETS["tiny.en"].decoder_layers == 4


def test_dict_round_trip():
    c = preset("base", gate="per_head", softmax_clip_gamma=-0.03, dtype="bfloat16")
    assert WhisperConfig.from_dict(c.to_dict()) == c


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"gate": "sometimes"}, "gate must be one of"),
        ({"d_model": 65, "n_heads": 4}, "divisible"),
        ({"gate_pi_init": 0.0}, "gate_pi_init"),
        ({"gate_pi_init": 1.0}, "gate_pi_init"),
        ({"softmax_clip_gamma": 0.01}, "clipped softmax"),
        ({"softmax_clip_zeta": 0.99}, "clipped softmax"),
        ({"dtype": "float64"}, "dtype must be"),
        ({"param_dtype": "int8"}, "param_dtype must be"),
    ],
)
def test_invalid_values_are_rejected(bad, match):
    with pytest.raises(ValueError, match=match):
        WhisperConfig(**bad)
    with pytest.raises(ValueError, match=match):
        preset("tiny.en", **bad)


def test_unknown_keys_and_sizes_are_rejected():
    with pytest.raises(ValueError, match=r"unknown WhisperConfig keys: \['n_head'\]"):
        WhisperConfig.from_dict({"d_model": 64, "n_head": 4})
    with pytest.raises(ValueError, match="unknown Whisper size 'huge'"):
        preset("huge")
