"""Fake quantization through interceptors: calibration statistics (on the dense attention),
the quantized points, and the encoder's tiled attention quantized a tile at a time."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from captures import decoder_final_layer_norm

from jaxwhisper.models.config import WhisperConfig
from jaxwhisper.models.whisper import Whisper, init_params
from jaxwhisper.quant import fakequant
from jaxwhisper.quant import quantizer as Q
from jaxwhisper.quant.config import QuantConfig

# n_audio_ctx >= 512: the encoder's self-attention takes the tiled path unless turned off.
CFG = WhisperConfig(
    n_audio_ctx=512, n_text_ctx=16, n_vocab=96, d_model=32, n_heads=2, encoder_layers=2,
    decoder_layers=2, ffn_dim=64, gate="shared",
)  # fmt: skip


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, jax.random.PRNGKey(0))


def _batches(n):
    rng = np.random.default_rng(1)
    return [
        (
            rng.normal(size=(2, 80, 1024)).astype(np.float32) * (1 + i),
            rng.integers(0, 96, size=(2, 7)).astype(np.int32),
        )
        for i in range(n)
    ]


def test_calibration_is_the_ema_of_batch_extremes(params):
    """Against the same tensors taken from the model's sow points and reduced in numpy."""
    batches = _batches(3)
    ranges = fakequant.calibrate(CFG, params, batches, QuantConfig(momentum=0.9))
    model = Whisper(CFG)
    for point, path in [
        ("encoder/embed", ("encoder", "embed")),
        ("decoder/layers_1/block_out", ("decoder", "layers_1", "block_out")),
        ("encoder/layers_0/self_attn/attn_probs", ("encoder", "layers_0", "self_attn", "attn_probs")),
    ]:
        lo = hi = None
        for mel, tokens in batches:
            _, cols = model.apply({"params": params}, mel, tokens, mutable=["intermediates"])
            node = cols["intermediates"]
            for k in path:
                node = node[k]
            x = np.asarray(node[0])
            lo = x.min() if lo is None else 0.9 * lo + 0.1 * x.min()
            hi = x.max() if hi is None else 0.9 * hi + 0.1 * x.max()
        np.testing.assert_allclose(ranges[point], (lo, hi), rtol=1e-5, atol=1e-6)
    # Dense/Conv inputs and outputs, LayerNorms, embeddings, taps; the encoder's scores too
    # (the tiled attention was turned off for calibration).
    for p in (
        "encoder/conv1/input",
        "encoder/layers_1/mlp/fc2/input",
        "encoder/layers_1/self_attn/attn_scores",
        "decoder/embed_tokens/output",
        "decoder/layers_0/encoder_attn/context",
        "decoder/layers_0/residual_cross_attn",
        "decoder/logits",
    ):
        assert p in ranges, p


def test_one_quantized_point_matches_numpy(params):
    """Only decoder/layer_norm/output quantized: the logits are that numpy-quantized tensor
    times the embedding table."""
    mel, tokens = _batches(1)[0]
    ranges = fakequant.calibrate(CFG, params, [(mel, tokens)], QuantConfig())
    everything_but = tuple(p for p in ranges if p != "decoder/layer_norm/output")
    q = QuantConfig(weight_bits=0, exclude=everything_but)
    with fakequant.activation_interceptor(ranges, q, CFG):
        logits = Whisper(CFG).apply({"params": params}, mel, tokens)

    final_ln = decoder_final_layer_norm(CFG, params, mel, tokens)
    lo, hi = ranges["decoder/layer_norm/output"]
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    s = (hi - lo) / 255
    z = np.round(-lo / s)
    ln = np.asarray(final_ln, np.float64)
    q_ln = (np.clip(np.round(ln / s) + z, 0, 255) - z) * s
    ref = q_ln @ np.asarray(params["decoder"]["embed_tokens"]["embedding"], np.float64).T
    np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=1e-4)


def test_quantized_forward_degrades_with_fewer_bits(params):
    mel, tokens = _batches(1)[0]
    ranges = fakequant.calibrate(CFG, params, [(mel, tokens)], QuantConfig())
    ref = Whisper(CFG).apply({"params": params}, mel, tokens)
    err = {}
    for bits in (16, 8, 4):
        q = QuantConfig(weight_bits=bits, act_bits=bits)
        with fakequant.activation_interceptor(ranges, q, CFG):
            out = Whisper(CFG).apply({"params": fakequant.quantize_params(params, q)}, mel, tokens)
        err[bits] = float(jnp.abs(out - ref).max())
    assert 0 < err[16] < err[8] < err[4]
    assert err[16] < 1e-3 * float(jnp.abs(ref).max())


def _dense_attention():
    """Forces the encoder's dense attention path (nested inside a quantizing interceptor)."""

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name == "use_blocked_attention":
            return False
        return next_fun(*args, **kwargs)

    return nn.intercept_methods(interceptor)


def test_tiled_encoder_attention_quantizes_its_probabilities_like_the_dense_path(params):
    """Only the first encoder layer's attention probabilities quantized, to 4 bits so that the
    effect is large: the tiled path (the default for 512 positions) gives what the dense path
    gives, and both differ from the float encoder; the tiles skipping the tap would give the
    float output."""
    mel, tokens = _batches(1)[0]
    ranges = fakequant.calibrate(CFG, params, [(mel, tokens)], QuantConfig())
    point = "encoder/layers_0/self_attn/attn_probs"
    q = QuantConfig(weight_bits=0, act_bits=4, exclude=tuple(p for p in ranges if p != point))
    model = Whisper(CFG)
    encode = lambda: model.apply({"params": params}, mel, method=Whisper.encode)  # noqa: E731
    reference = encode()
    with fakequant.activation_interceptor(ranges, q, CFG):
        tiled = encode()
        with _dense_attention():
            dense = encode()
    quant_error = float(jnp.mean(jnp.abs(dense - reference)))
    assert quant_error > 1e-3
    # Scores computed per tile may differ from the dense ones in the last bit, which can move
    # a probability across a 4-bit rounding boundary: a handful of the 1M probabilities.
    assert float(jnp.mean(jnp.abs(tiled - dense))) < 0.01 * quant_error


def test_missing_range_is_a_clear_error(params):
    mel, tokens = _batches(1)[0]
    with pytest.raises(KeyError, match="no calibrated range for activation point"):
        with fakequant.activation_interceptor({}, QuantConfig(), CFG):
            Whisper(CFG).apply({"params": params}, mel, tokens)


def test_weight_quantization_is_per_tensor_by_default(params):
    q = fakequant.quantize_params(params, QuantConfig(weight_bits=4))
    k = np.asarray(q["encoder"]["layers_0"]["mlp"]["fc1"]["kernel"])
    assert len(np.unique(k)) <= 16
    lo, hi = Q.channel_range(params["encoder"]["layers_0"]["mlp"]["fc1"]["kernel"], None)
    assert np.isclose(k.max(), float(hi), atol=float(hi - lo) / 15)


def test_percentile_and_mse_estimators_match_numpy():
    x = np.random.default_rng(3).standard_t(df=3, size=(64, 130)).astype(np.float32)  # heavy tails
    got = np.asarray(
        fakequant.batch_range(jnp.asarray(x), QuantConfig(estimator="percentile", percentile=99.0))
    )
    np.testing.assert_allclose(got, np.percentile(x, [1.0, 99.0]), rtol=1e-5)
    got = np.asarray(fakequant.batch_range(jnp.asarray(x), QuantConfig(estimator="mse", act_bits=4)))
    lo, hi = x.min(), x.max()
    best, best_err = None, np.inf
    for r in fakequant.MSE_RATIOS:  # brute force in numpy
        a, b = min(r * lo, 0), max(r * hi, 0)
        s = (b - a) / 15
        z = np.round(-a / s)
        err = np.mean(((np.clip(np.round(x / s) + z, 0, 15) - z) * s - x) ** 2)
        if err < best_err:
            best, best_err = r, err
    np.testing.assert_allclose(got, [best * lo, best * hi], rtol=1e-6)
    assert best < 1.0  # with heavy tails at 4 bits, clipping wins
    np.testing.assert_array_equal(fakequant.batch_range(jnp.asarray(x), QuantConfig()), [lo, hi])
