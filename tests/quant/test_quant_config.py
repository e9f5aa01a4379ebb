"""quant/config.py (named test_quant_config.py: test files need unique basenames, the test folders
are not packages). Quantization presets: the exact set of names, each preset's fields, its name, and the
defaults the paper fixes (8 bits, EMA momentum 0.9, 16 calibration batches)."""

import dataclasses

import pytest

from jaxwhisper.quant.config import PRESETS, QuantConfig, preset

# name: the fields that differ from QuantConfig().
EXPECTED = {
    "w8a8": {},
    "w8a8-no-exclusion": {"paper_exclusion": False},
    "w8a8-per-channel": {"weight_per_channel": True},
    "w8a8-real-int8": {"real_int8": True},
    "w8a8-per-channel-real-int8": {"weight_per_channel": True, "real_int8": True},
    "w4a8": {"weight_bits": 4},
    "w4a8-per-channel": {"weight_bits": 4, "weight_per_channel": True},
    "w8a8-smoothquant": {"smoothquant": True},
    "w8a8-per-channel-smoothquant": {"weight_per_channel": True, "smoothquant": True},
    "w8a8-percentile": {"estimator": "percentile"},
    "w8a8-mse": {"estimator": "mse"},
    "w8a16": {"act_bits": 16},
    "w8a32": {"act_bits": 0},
    "w32a8": {"weight_bits": 0},
}


def test_defaults_are_the_papers():
    assert QuantConfig().to_dict() == {
        "weight_bits": 8,
        "act_bits": 8,
        "weight_per_channel": False,
        "weight_symmetric": False,
        "act_symmetric": False,
        "estimator": "minmax_ema",
        "percentile": 99.99,
        "momentum": 0.9,
        "calibration_batches": 16,
        "paper_exclusion": True,
        "exclude": (),
        "quantize_gates": False,
        "quantize_logits": False,
        "real_int8": False,
        "smoothquant": False,
        "smooth_alpha": 0.5,
    }


def test_preset_names_are_exactly_these():
    assert list(PRESETS) == list(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_preset_fields_and_name(name):
    default = QuantConfig()
    p = preset(name)
    changed = {
        f.name: getattr(p, f.name)
        for f in dataclasses.fields(p)
        if getattr(p, f.name) != getattr(default, f.name)
    }
    assert changed == EXPECTED[name]
    assert p.name == name  # the name results are filed under is the preset's own
    assert QuantConfig.from_dict(p.to_dict()) == p


def test_name_of_configs_outside_the_presets():
    assert QuantConfig(smoothquant=True, smooth_alpha=0.8).name == "w8a8-smoothquant0.8"
    assert QuantConfig(weight_bits=4, estimator="percentile", paper_exclusion=False).name == (
        "w4a8-percentile-no-exclusion"
    )


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown quantization 'w9a9'; known: w8a8, w8a8-no-exclusion"):
        preset("w9a9")


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"act_bits": 1}, "act_bits must be 0"),
        ({"weight_bits": 17}, "weight_bits must be 0"),
        ({"estimator": "max"}, "estimator must be one of"),
        ({"percentile": 50.0}, "percentile"),
        ({"momentum": 1.0}, "momentum"),
        ({"real_int8": True, "weight_bits": 4}, "real_int8 needs"),
        ({"smooth_alpha": -0.1}, "smooth_alpha"),
        ({"calibration_batches": 0}, "calibration_batches"),
    ],
)
def test_invalid_values(bad, match):
    with pytest.raises(ValueError, match=match):
        QuantConfig(**bad)
