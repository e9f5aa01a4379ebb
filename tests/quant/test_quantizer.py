"""Quantizer math against hand-computed values, and its properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxwhisper.quant import quantizer as Q
from jaxwhisper.quant.config import QuantConfig, preset
from jaxwhisper.quant.fakequant import quantize_params


def test_asymmetric_by_hand():
    # [-1, 3] at 8 bits: s = 4/255, z = round(1 / s) = round(63.75) = 64.
    p = Q.qparams(-1.0, 3.0, 8)
    assert np.isclose(float(p.scale), 4 / 255) and float(p.zero_point) == 64.0
    x = jnp.array([-2.0, -1.0, 0.0, 1.0, 3.0, 5.0])
    codes = np.asarray(Q.quantize(x, p))
    # -2 clamps to 0; -1 -> round(-63.75) + 64 = 0; 0 -> 64; 1 -> 64 + 64; 3 -> 191 + 64; 5 clamps.
    np.testing.assert_array_equal(codes, [0, 0, 64, 128, 255, 255])
    s = 4 / 255
    np.testing.assert_allclose(
        Q.fake_quant(x, p), [-64 * s, -64 * s, 0.0, 64 * s, 191 * s, 191 * s], rtol=1e-6
    )


def test_range_is_widened_to_include_zero():
    p = Q.qparams(2.0, 6.0, 8)  # as [0, 6]
    assert np.isclose(float(p.scale), 6 / 255) and float(p.zero_point) == 0.0
    p = Q.qparams(-6.0, -2.0, 4)  # as [-6, 0]: z at the top of [0, 15]
    assert np.isclose(float(p.scale), 6 / 15) and float(p.zero_point) == 15.0
    assert float(Q.fake_quant(jnp.float32(0.0), p)) == 0.0


def test_symmetric_by_hand():
    p = Q.qparams(-1.0, 3.0, 8, symmetric=True)  # s = 3 / 127, grid [-127, 127]
    assert np.isclose(float(p.scale), 3 / 127) and float(p.zero_point) == 0.0
    codes = np.asarray(Q.quantize(jnp.array([-2.0, -5.0, 3.0]), p))
    np.testing.assert_array_equal(codes, [round(-2 / (3 / 127)), -127, 127])


def test_degenerate_range_is_exact_zero():
    p = Q.qparams(0.0, 0.0, 8)
    assert float(Q.fake_quant(jnp.float32(0.0), p)) == 0.0


def test_ema_update():
    s = Q.ema_update(None, -1.0, 2.0, 0.9)
    assert s == (-1.0, 2.0)  # the first batch initialises
    lo, hi = Q.ema_update(s, -3.0, 1.0, 0.9)
    assert np.isclose(lo, 0.9 * -1 + 0.1 * -3) and np.isclose(hi, 0.9 * 2 + 0.1 * 1)


@pytest.mark.parametrize("bits, symmetric", [(8, False), (4, False), (8, True)])
def test_idempotent_and_half_step_error(bits, symmetric):
    x = jax.random.uniform(jax.random.PRNGKey(bits), (4096,), minval=-2.5, maxval=7.0)
    p = Q.qparams(-2.5, 7.0, bits, symmetric)
    once = Q.fake_quant(x, p)
    np.testing.assert_array_equal(Q.fake_quant(once, p), once)
    assert float(jnp.max(jnp.abs(once - x))) <= float(p.scale) / 2 * (1 + 1e-5)


def test_per_channel_weights_match_numpy():
    w = np.random.default_rng(0).normal(size=(16, 5)).astype(np.float32) * np.array([0.1, 1, 10, 100, 0.01])
    got = np.asarray(Q.fake_quant_weight(jnp.asarray(w), 8, False, channel_axis=-1))
    for j in range(5):
        lo, hi = min(w[:, j].min(), 0), max(w[:, j].max(), 0)
        s = (hi - lo) / 255
        z = np.round(-lo / s)
        ref = (np.clip(np.round(w[:, j] / s) + z, 0, 255) - z) * s
        np.testing.assert_allclose(got[:, j], ref, rtol=1e-5, atol=1e-7)
    # Per tensor: the tiny column collapses to a few levels; per channel keeps it.
    per_tensor = np.asarray(Q.fake_quant_weight(jnp.asarray(w), 8, False, channel_axis=None))
    assert np.abs(per_tensor[:, 4] - w[:, 4]).max() > 10 * np.abs(got[:, 4] - w[:, 4]).max()


def test_quantize_params_touches_weights_only():
    params = {
        "encoder": {
            "layers_0": {
                "fc1": {"kernel": jnp.linspace(-1, 1, 12).reshape(3, 4), "bias": jnp.linspace(-1, 1, 4) / 3},
                "ln": {"scale": jnp.linspace(0.9, 1.1, 4)},
                "self_attn": {"gate_proj": {"kernel": jnp.linspace(-1, 1, 4).reshape(4, 1) / 7}},
            },
            "embed_positions": jnp.linspace(-1, 1, 8).reshape(2, 4) / 3,
        },
        "decoder": {"embed_tokens": {"embedding": jnp.linspace(-1, 1, 8).reshape(2, 4) / 3}},
    }
    q = quantize_params(params, QuantConfig(weight_bits=2))
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), params, q)
    assert changed["encoder"]["layers_0"]["fc1"] == {"kernel": True, "bias": False}
    assert not changed["encoder"]["layers_0"]["ln"]["scale"]
    assert not changed["encoder"]["layers_0"]["self_attn"]["gate_proj"]["kernel"]
    assert not changed["encoder"]["embed_positions"]  # fixed sinusoids, not a learned weight
    assert changed["decoder"]["embed_tokens"]["embedding"]


def test_config_exclusions_and_validation():
    c = QuantConfig()
    assert c.is_excluded("encoder/layers_3/mlp/fc2/output", 4)
    assert not c.is_excluded("encoder/layers_2/mlp/fc2/output", 4)
    assert c.is_excluded("encoder/layer_norm/output", 4)
    assert c.is_excluded("decoder/layers_1/encoder_attn/k_proj/input", 4)
    assert c.is_excluded("decoder/layers_0/self_attn/gate", 4) and c.is_excluded("decoder/logits", 4)
    assert not QuantConfig(paper_exclusion=False).is_excluded("encoder/layer_norm/output", 4)
    assert QuantConfig(exclude=("*/attn_scores",)).is_excluded("decoder/layers_0/self_attn/attn_scores", 2)
    with pytest.raises(ValueError, match="unknown quantization config key"):
        QuantConfig.from_dict({"act_bit": 8})
    with pytest.raises(ValueError, match="unknown quantization"):
        preset("w9a9")
    with pytest.raises(ValueError):
        QuantConfig(act_bits=1)
