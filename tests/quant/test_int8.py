"""Real INT8 Dense layers (and the int8 token embedding) against fake quantization: the same
numbers up to float rounding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from captures import decoder_final_layer_norm
from jaxprs import dot_generals

from jaxwhisper.inference.decoding import DecodeOptions, make_greedy_decoder
from jaxwhisper.models.config import WhisperConfig
from jaxwhisper.models.weights.base import LoadedModel
from jaxwhisper.models.whisper import Whisper, init_params
from jaxwhisper.quant import fakequant, int8
from jaxwhisper.quant import quantizer as Q
from jaxwhisper.quant.calibrate import Calibration
from jaxwhisper.quant.config import QuantConfig
from jaxwhisper.quant.ptq import quantize_model

CFG = WhisperConfig(
    n_audio_ctx=64, n_text_ctx=16, n_vocab=96, d_model=32, n_heads=2, encoder_layers=2,
    decoder_layers=2, ffn_dim=64, gate="shared",
)  # fmt: skip


@pytest.mark.parametrize("per_channel", [False, True])
def test_int8_dense_is_fake_quant_in_exact_arithmetic(per_channel):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(48, 20)).astype(np.float32) * np.linspace(0.1, 3, 20, dtype=np.float32)
    b = rng.normal(size=(20,)).astype(np.float32)
    x = (rng.normal(size=(5, 7, 48)) * 2 + 0.5).astype(np.float32)
    q = QuantConfig(weight_per_channel=per_channel)
    k = int8.int8_kernels({"fc": {"kernel": w, "bias": b}}, q)["fc"]
    assert k["q"].dtype == jnp.int8
    x_range = (float(x.min()) * 0.8, float(x.max()) * 0.8)  # some clipping too
    got = np.asarray(int8.int8_dense(jnp.asarray(x), k, x_range, jnp.asarray(b), q), np.float64)
    emulated = np.asarray(int8.emulated_dense(jnp.asarray(x), k, x_range, jnp.asarray(b), q), np.float64)
    np.testing.assert_array_equal(emulated, got)  # exact integer sums in float32
    # Reference in float64: fake-quantized x and W, then a matmul.
    xq = np.asarray(Q.fake_quant(jnp.asarray(x), Q.qparams(*x_range, 8)), np.float64)
    wq = np.asarray(Q.fake_quant_weight(jnp.asarray(w), 8, False, -1 if per_channel else None), np.float64)
    ref = xq @ wq + b
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)


def test_int8_model_equals_its_float_emulation_and_is_close_to_fake_quant():
    params = init_params(CFG, jax.random.PRNGKey(0))
    rng = np.random.default_rng(1)
    mel = rng.normal(size=(2, 80, 128)).astype(np.float32)
    tokens = rng.integers(0, 96, size=(2, 7)).astype(np.int32)
    q = QuantConfig(real_int8=True)
    ranges = fakequant.calibrate(CFG, params, [(mel, tokens)], q)
    qp = fakequant.quantize_params(params, q)
    kernels = int8.int8_kernels(params, q)
    assert "encoder/layers_0/mlp/fc1" in kernels and "decoder/layers_1/self_attn/q_proj" in kernels
    out = {}
    for real in (True, False):
        with int8.integer_dense_interceptor(kernels, ranges, q, CFG, real=real):
            out[real] = Whisper(CFG).apply({"params": qp}, mel, tokens)
    np.testing.assert_array_equal(out[True], out[False])
    with fakequant.activation_interceptor(ranges, q, CFG):
        fake = Whisper(CFG).apply({"params": qp}, mel, tokens)
    # Quantize-dequantize then float matmuls: the same up to float rounding, which the 8-bit
    # requantization of outputs turns into an occasional whole step.
    assert float(jnp.mean(jnp.abs(out[True] - fake))) < 1e-3 * float(jnp.abs(fake).max())


@pytest.mark.parametrize("per_channel", [False, True])
def test_int8_embedding_rows_are_the_fake_quantized_ones_bitwise(per_channel):
    params = init_params(CFG, jax.random.PRNGKey(3))
    q = QuantConfig(weight_per_channel=per_channel)
    k = int8.int8_kernels(params, q)[int8.EMBEDDING]
    assert k["q"].shape == (CFG.d_model, CFG.n_vocab) and k["q"].dtype == jnp.int8
    assert k["scale"].shape == ((CFG.n_vocab,) if per_channel else (1,))
    fake = fakequant.quantize_params(params, q)["decoder"]["embed_tokens"]["embedding"]
    tokens = jnp.asarray([[0, 5, 95], [7, 7, 1]])
    got = int8.embedding_rows(k, tokens, jnp.float32, jnp.float32)
    np.testing.assert_array_equal(got, jnp.take(fake, tokens, axis=0))


def test_logits_are_an_int8_matmul_with_the_embedding_codes():
    """The tied output projection runs as int8 x int8 -> int32 with the vocabulary as its
    output channels, and equals float64 arithmetic on the fake-quantized operands."""
    params = init_params(CFG, jax.random.PRNGKey(0))
    rng = np.random.default_rng(1)
    mel = rng.normal(size=(2, 80, 128)).astype(np.float32)
    tokens = rng.integers(0, 96, size=(2, 7)).astype(np.int32)
    ranges = fakequant.calibrate(CFG, params, [(mel, tokens)], QuantConfig())
    only = "decoder/layer_norm/output"
    q = QuantConfig(real_int8=True, exclude=tuple(p for p in ranges if p != only))
    qp = fakequant.quantize_params(params, q)
    kernels = int8.int8_kernels(params, q)

    def logits(mel, tokens):
        with int8.integer_dense_interceptor(kernels, ranges, q, CFG, real=True):
            return Whisper(CFG).apply({"params": qp}, mel, tokens)

    int8_dots = [
        e for e in dot_generals(jax.make_jaxpr(logits)(mel, tokens).jaxpr)
        if e.invars[0].aval.dtype == jnp.int8 and e.outvars[0].aval.shape[-1] == CFG.n_vocab
    ]  # fmt: skip
    assert len(int8_dots) == 1

    final_ln = decoder_final_layer_norm(CFG, qp, mel, tokens)
    ln = np.asarray(Q.fake_quant(final_ln, Q.qparams(*ranges[only], 8)), np.float64)
    table = np.asarray(qp["decoder"]["embed_tokens"]["embedding"], np.float64)
    np.testing.assert_allclose(logits(mel, tokens), ln @ table.T, rtol=1e-5, atol=1e-5)


def test_real_int8_needs_w8a8():
    with pytest.raises(ValueError, match="real_int8"):
        QuantConfig(real_int8=True, weight_bits=4)
    with pytest.raises(ValueError, match="real_int8"):
        QuantConfig(real_int8=True, act_bits=16)
    with pytest.raises(ValueError):
        int8.int8_kernels({}, QuantConfig(weight_bits=16))


def test_int8_model_is_smaller_on_disk():
    params = init_params(CFG.replace(d_model=128, n_heads=4, ffn_dim=512), jax.random.PRNGKey(0))
    kernels = int8.int8_kernels(params, QuantConfig())
    small, big = int8.serialized_size(kernels, params)
    assert small < big


def test_quantized_decoder_takes_its_int8_kernels_as_an_argument():
    """The W8A8 model's kernels reach the compiled decoder as an argument: closed over, they
    were compiled in as constants (tiny.en: 33 MB of HLO text against 1.3 MB for float)."""
    # Wide enough that the kernels (~1.8 MB) dwarf the program's own text.
    big = CFG.replace(d_model=256, ffn_dim=1024, n_heads=4, encoder_layers=1, decoder_layers=1)
    params = init_params(big, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    mel = rng.normal(size=(1, 80, 128)).astype(np.float32)
    ranges = fakequant.calibrate(big, params, [(mel, np.zeros((1, 3), np.int32))], QuantConfig())
    quantized = quantize_model(LoadedModel(big, params, None, "random"), QuantConfig(), Calibration(ranges))
    kernel_bytes = sum(np.asarray(v).nbytes for v in jax.tree.leaves(quantized.state))
    assert kernel_bytes > 10**6  # int8 kernels with their scales, zero points, column sums
    decode = make_greedy_decoder(big, DecodeOptions((1, 2), 3, max_new_tokens=4), quantized.intercept)
    hlo = decode.lower(quantized.model.params, mel, quantized.state).as_text()
    assert len(hlo) < kernel_bytes / 2  # lowered only: running it is the evaluation tests'
