"""SmoothQuant: the smoothed float model is the same function; scales follow the paper's
formula; the statistics are the LayerNorm outputs' per-channel maxima."""

import flax.traverse_util
import jax
import numpy as np
import pytest

from jaxwhisper.models.config import WhisperConfig
from jaxwhisper.models.whisper import Whisper, init_params
from jaxwhisper.quant import smoothquant as sq
from jaxwhisper.quant.calibrate import Calibration
from jaxwhisper.quant.config import QuantConfig, preset


def _cfg(gate, **overrides):
    return WhisperConfig(
        n_audio_ctx=32, n_text_ctx=16, n_vocab=96, d_model=32, n_heads=4, encoder_layers=2,
        decoder_layers=2, ffn_dim=64, gate=gate, **overrides,
    )  # fmt: skip


def _params(cfg):
    """Random params with non-trivial LayerNorms and a few outlier channels, like Whisper's."""
    params = init_params(cfg, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    flat = flax.traverse_util.flatten_dict(params)
    for k, v in flat.items():
        if k[-2].endswith("layer_norm"):
            v = np.asarray(v) + rng.normal(size=v.shape).astype(np.float32) * 0.3
            if k[-1] == "scale":
                v[3] *= 20.0  # an outlier channel
            flat[k] = v
    return flax.traverse_util.unflatten_dict(flat)


def _batches(cfg, n=2):
    rng = np.random.default_rng(1)
    return [
        (rng.normal(size=(2, 80, 2 * cfg.n_audio_ctx)).astype(np.float32),
         rng.integers(0, cfg.n_vocab, size=(2, 6)).astype(np.int32))
        for _ in range(n)
    ]  # fmt: skip


@pytest.mark.parametrize(
    "gate,overrides",
    [("none", {}), ("shared", {}), ("per_head", {}), ("shared", {"gated_cross_attention": False})],
)
def test_smoothed_model_is_the_same_function(gate, overrides):
    cfg = _cfg(gate, **overrides)
    params = _params(cfg)
    batches = _batches(cfg)
    scales = sq.smoothing_scales(cfg, params, sq.collect_absmax(cfg, params, batches), 0.5)
    assert max(float(s.max()) / float(s.min()) for s in scales.values()) > 5  # really rescaled
    smoothed = sq.apply_smoothing(cfg, params, scales)
    model = Whisper(cfg)
    for mel, tokens in batches:
        ref = model.apply({"params": params}, mel, tokens)
        out = model.apply({"params": smoothed}, mel, tokens)
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def _ln_outputs(cfg, params, batches):
    """Per-channel max |output| of each LayerNorm, from flax's capture_intermediates (numpy)."""
    out = {}
    for mel, tokens in batches:
        _, cols = Whisper(cfg).apply(
            {"params": params}, mel, tokens, capture_intermediates=True, mutable=["intermediates"]
        )
        for k, v in flax.traverse_util.flatten_dict(cols["intermediates"]).items():
            if len(k) > 2 and k[-2].endswith("layer_norm") and k[-1] == "__call__":
                path = "/".join(k[:-1])
                a = np.abs(np.asarray(v[0])).reshape(-1, cfg.d_model).max(0)
                out[path] = np.maximum(out.get(path, a), a)
    return out


def test_absmax_scales_and_balance_against_numpy():
    cfg = _cfg("shared")
    params = _params(cfg)
    batches = _batches(cfg)
    absmax = sq.collect_absmax(cfg, params, batches)
    ref = _ln_outputs(cfg, params, batches)
    assert set(absmax) == set(sq.smoothing_groups(cfg))  # final LayerNorms are not smoothed
    for path, a in absmax.items():
        # float32 through two layers by two paths (jitted statistics, flax's intermediates):
        # up to ~9 ulp apart (1.03e-6 measured)
        np.testing.assert_allclose(a, ref[path], rtol=2e-6)
    flat = {"/".join(k): np.asarray(v) for k, v in flax.traverse_util.flatten_dict(params).items()}
    ln = "decoder/layers_1/self_attn_layer_norm"
    names = ("q_proj", "k_proj", "v_proj", "gate_proj")
    w = np.concatenate([flat[f"decoder/layers_1/self_attn/{p}/kernel"] for p in names], axis=1)
    for alpha in (0.5, 0.8):
        s = sq.smoothing_scales(cfg, params, absmax, alpha)[ln]
        np.testing.assert_allclose(s, absmax[ln] ** alpha / np.abs(w).max(1) ** (1 - alpha), rtol=1e-5)
    # alpha = 0.5 balances the two: after smoothing, each channel's activation max equals its
    # weight rows' max (both sqrt(max|X_j| max|W_j|)).
    smoothed = sq.apply_smoothing(cfg, params, sq.smoothing_scales(cfg, params, absmax, 0.5))
    sflat = {"/".join(k): np.asarray(v) for k, v in flax.traverse_util.flatten_dict(smoothed).items()}
    ref = _ln_outputs(cfg, smoothed, batches)
    for ln_path, kernels in sq.smoothing_groups(cfg).items():
        w_max = np.abs(np.concatenate([sflat[k] for k in kernels], axis=1)).max(1)
        np.testing.assert_allclose(ref[ln_path], w_max, rtol=1e-4)


def test_per_head_gate_kernel_rows_are_input_channels():
    cfg = _cfg("per_head")
    params = _params(cfg)
    s = {ln: np.arange(1, cfg.d_model + 1, dtype=np.float32) for ln in sq.smoothing_groups(cfg)}
    out = sq.apply_smoothing(cfg, params, s)
    g0 = np.asarray(params["encoder"]["layers_0"]["self_attn"]["gate_kernel"])
    g1 = np.asarray(out["encoder"]["layers_0"]["self_attn"]["gate_kernel"])
    np.testing.assert_allclose(
        g1, g0 * s["encoder/layers_0/self_attn_layer_norm"].reshape(g0.shape), rtol=1e-6
    )


def test_scales_round_trip_with_ranges_and_bad_input(tmp_path):
    path = tmp_path / "r.json"
    scales = {"encoder/layers_0/final_layer_norm": np.array([0.5, 2.0], np.float32)}
    Calibration({"a/output": (-1.0, 2.0)}, scales, {"model": "m"}).save(path)
    assert Calibration.load(path).ranges == {"a/output": (-1.0, 2.0)}
    np.testing.assert_array_equal(
        Calibration.load(path).smoothing["encoder/layers_0/final_layer_norm"], [0.5, 2.0]
    )
    Calibration({"a/output": (-1.0, 2.0)}, None, {"model": "m"}).save(path)
    assert Calibration.load(path).smoothing is None
    assert Calibration.load(path).meta == {"model": "m"}
    with pytest.raises(ValueError, match="alpha"):
        QuantConfig(smoothquant=True, smooth_alpha=1.5)
    with pytest.raises(KeyError, match="not a smoothed LayerNorm"):
        sq.apply_smoothing(_cfg("none"), _params(_cfg("none")), {"decoder/layer_norm": np.ones(32)})
    assert preset("w8a8-smoothquant").name == "w8a8-smoothquant"
