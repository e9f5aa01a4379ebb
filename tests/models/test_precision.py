"""bf16 compute with float32 accumulation: a Dense against a float64 numpy reference of the
same bf16-rounded operands, the dot's result type in the jaxpr and the lowered StableHLO of a
whole bf16 model, and the plain Flax Dense for float32."""

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from jaxprs import dot_generals

from jaxwhisper.models import precision
from jaxwhisper.models.config import WhisperConfig
from jaxwhisper.models.whisper import Whisper, init_kv_cache, init_params

U32 = 2.0**-24  # unit roundoff of float32
SMALL = WhisperConfig(
    n_audio_ctx=50,
    n_text_ctx=32,
    n_vocab=100,
    d_model=64,
    n_heads=4,
    encoder_layers=2,
    decoder_layers=2,
    ffn_dim=128,
    gate="shared",
)


def _operands(k=384, n=1536, m=64, seed=0, lead=2):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((lead, m, k)).astype(np.float32)
    w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    return x, w, b


def _bf16(a):
    return np.asarray(a).astype(ml_dtypes.bfloat16).astype(np.float64)


def _sum_error_bound(xr, wr, y):
    """|fl(sum) - sum| <= K u sum_k |x_k w_k| (+ u |y| for adding the bias) for any order of
    summation in float32 (Higham, Accuracy and Stability, eq. 3.5); the products of two bf16
    numbers (8-bit significands) are exact in float32 (24 bits), so summing is the only
    rounding."""
    k = xr.shape[-1]
    return k * U32 * (np.abs(xr) @ np.abs(wr)) + U32 * np.abs(y)


@pytest.mark.parametrize("lead, m", [(2, 64), (1, 1)])
def test_bf16_dense_is_the_f32_sum_of_the_bf16_rounded_operands(lead, m):
    """Rows [2, 64], and a single row (the decoder prefilled with one token)."""
    x, w, b = _operands(m=m, lead=lead)
    layer = precision.dense(w.shape[1], jnp.bfloat16, jnp.float32)
    params = {"params": {"kernel": jnp.asarray(w), "bias": jnp.asarray(b)}}
    y = layer.apply(params, jnp.asarray(x))
    assert y.dtype == jnp.float32
    xr, wr = _bf16(x), _bf16(w)
    ref = xr @ wr + b.astype(np.float64)  # the bias is kept in float32, so not rounded to bf16
    err = np.abs(np.asarray(y, np.float64) - ref)
    bound = _sum_error_bound(xr, wr, ref)
    assert (err <= bound).all(), float((err / bound).max())
    if m == 1:
        # A single row stays a bf16 product: XLA:CPU would convert the whole kernel (stored
        # in bf16, as `inference_variables` stores it) to f32 at every call for a
        # matrix-vector product (f32[384,1536] in the compiled program).
        stored = {"params": {"kernel": jnp.asarray(w, jnp.bfloat16), "bias": jnp.asarray(b)}}
        compiled = jax.jit(layer.apply).lower(stored, jnp.asarray(x)).compile().as_text()
        assert "f32[384,1536]" not in compiled
        return

    # The check tells a bf16 result apart: Flax's own bf16 Dense (a bf16 dot result and a bf16
    # bias, each rounded to 8 significant bits) misses the bound, with errors ~100x larger.
    flax_bf16 = nn.Dense(w.shape[1], dtype=jnp.bfloat16).apply(params, jnp.asarray(x))
    assert flax_bf16.dtype == jnp.bfloat16
    flax_err = np.abs(np.asarray(flax_bf16, np.float64) - ref)
    assert (flax_err > bound).any()
    assert np.median(flax_err) > 100 * np.median(err)


def test_bf16_dense_gradients_are_f32_sums_of_bf16_operands():
    """Backward: the cotangent is rounded to bf16 and both gradients are bf16 x bf16 dots
    summed in float32; x's gradient is then rounded to bf16 (x is bf16), the kernel's stays
    float32. Against float64 numpy on the same rounded operands, with the summation bound of
    the forward test (plus one bf16 rounding, at most 2^-8 relative, for x's gradient)."""
    x, w, b = _operands(m=16)
    c = np.random.default_rng(1).standard_normal((2, 16, w.shape[1])).astype(np.float32)
    layer = precision.dense(w.shape[1], jnp.bfloat16, jnp.float32)

    def loss(params, x):
        return jnp.sum(layer.apply({"params": params}, x) * c)

    params = {"kernel": jnp.asarray(w), "bias": jnp.asarray(b)}
    x16 = jnp.asarray(x, jnp.bfloat16)
    grads, dx = jax.grad(loss, argnums=(0, 1))(params, x16)
    assert grads["kernel"].dtype == jnp.float32 and dx.dtype == jnp.bfloat16
    xr, wr, gr = _bf16(x), _bf16(w), _bf16(c)
    dk_ref = np.einsum("bmk,bmn->kn", xr, gr)
    dk_bound = 32 * U32 * np.einsum("bmk,bmn->kn", np.abs(xr), np.abs(gr)) + U32 * np.abs(dk_ref)
    assert (np.abs(np.asarray(grads["kernel"], np.float64) - dk_ref) <= dk_bound).all()
    dx_ref = gr @ wr.T
    dx_bound = _sum_error_bound(gr, wr.T, dx_ref) * (1 + 2.0**-8) + 2.0**-8 * np.abs(dx_ref)
    assert (np.abs(np.asarray(dx, np.float64) - dx_ref) <= dx_bound).all()
    db_ref = c.astype(np.float64).sum(axis=(0, 1))  # the bias gradient: a float32 sum of rows
    assert (
        np.abs(np.asarray(grads["bias"], np.float64) - db_ref) <= 32 * U32 * np.abs(c).sum(axis=(0, 1))
    ).all()
    # All three dots of forward and backward take two bf16 operands and sum in float32.
    dots = list(dot_generals(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(params, x16).jaxpr))
    assert len(dots) == 3
    for e in dots:
        assert [v.aval.dtype for v in e.invars] == [jnp.bfloat16] * 2
        assert e.params["preferred_element_type"] == jnp.float32


def test_f32_dense_is_flax_dense():
    layer = precision.dense(8, jnp.float32, jnp.float32, use_bias=False, name="q")
    assert layer == nn.Dense(8, dtype=jnp.float32, param_dtype=jnp.float32, use_bias=False, name="q")


def _model_fn(dtype):
    config = SMALL.replace(dtype=dtype)
    params = init_params(SMALL, jax.random.PRNGKey(0))
    mel = jnp.zeros((2, 80, 100), jnp.float32)
    tokens = jnp.zeros((2, 5), jnp.int32)
    return (lambda p: Whisper(config).apply({"params": p}, mel, tokens)), params


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_every_low_precision_dot_accumulates_in_f32(dtype):
    fn, params = _model_fn(dtype)
    dots = list(dot_generals(jax.make_jaxpr(fn)(params).jaxpr))
    low = [e for e in dots if e.invars[0].aval.dtype == jnp.dtype(dtype)]
    # Encoder block: q, k, v, out, fc1, fc2 and the score and value einsums (8); decoder
    # block: those of two attentions (cross keys/values included) and the MLP (14); the tied
    # logits.
    assert len(low) == 2 * 8 + 2 * 14 + 1
    for e in low:
        assert e.invars[1].aval.dtype == jnp.dtype(dtype)
        assert e.params["preferred_element_type"] == jnp.float32, e
        assert e.outvars[0].aval.dtype == jnp.float32
    # The rest are float32 by design: the 6 shared gates.
    rest = [e for e in dots if e.invars[0].aval.dtype != jnp.dtype(dtype)]
    assert len(rest) == 6 and all(e.invars[0].aval.dtype == jnp.float32 for e in rest)


def test_lowered_bf16_model_has_bf16_dots_with_f32_results():
    """The same in what XLA receives: every stablehlo.dot_general with bf16 operands returns
    f32 (the result type of `preferred_element_type`)."""
    fn, params = _model_fn("bfloat16")
    text = jax.jit(fn).lower(params).as_text()
    dots = [line for line in text.splitlines() if "stablehlo.dot_general" in line]
    typed = [line.rsplit(":", 1)[-1] for line in dots]  # "(tensor<..>, tensor<..>) -> tensor<..>"
    bf16_dots = [t for t in typed if t.split("->")[0].count("bf16>") == 2]
    assert len(bf16_dots) == 2 * 8 + 2 * 14 + 1
    assert all(t.split("->")[1].strip().endswith("xf32>") for t in bf16_dots), bf16_dots


@pytest.mark.slow
def test_bf16_transcripts_of_real_speech_are_within_3_points_of_f32_wer(tiny_en, fixture_manifest):
    """tiny.en in bf16 against the reference transcripts, beside f32 on the same 8 clips.

    3 points of WER (about 2 of the 70 words): bf16 operands keep 8 significant bits, the
    encoder output moves by ~1% (relative L2) from f32, and greedy decoding follows a
    different token where two were nearly tied. On the 58 fixture clips of at most 30 s:
    10.27% (f32) and 10.58% (bf16), one transcript of 58 differs (one word)."""
    from jaxwhisper.data.audio import load_audio
    from jaxwhisper.evaluation.wer import word_error_rate
    from jaxwhisper.inference.inputs import read_manifest
    from jaxwhisper.inference.transcribe import Transcriber
    from jaxwhisper.models.weights.base import LoadedModel

    rows = [u for u in read_manifest(fixture_manifest) if "arctic" in u.id or "pocketsphinx" in u.id][:8]
    clips = [load_audio(u.audio) for u in rows]
    refs = [u.text for u in rows]
    bf16 = LoadedModel(
        tiny_en.config.replace(dtype="bfloat16"), tiny_en.params, tiny_en.tokenizer_dir, tiny_en.source
    )
    transcribers = {name: Transcriber(m, batch_size=8) for name, m in (("f32", tiny_en), ("bf16", bf16))}
    # On CPU the bf16 model decodes with float32 keys and values (precision.inference_config).
    assert transcribers["bf16"].config.kv_dtype == "float32" and transcribers["f32"].config == tiny_en.config
    wer = {name: word_error_rate(refs, t.transcribe_arrays(clips)).wer for name, t in transcribers.items()}
    assert wer["f32"] < 15.0  # percent; the float model transcribes these clips (sanity of the setup)
    assert wer["bf16"] <= wer["f32"] + 3.0, wer


def test_inference_config_keeps_decoding_keys_and_values_in_f32_on_cpu_only():
    bf16 = SMALL.replace(dtype="bfloat16")
    assert precision.inference_config(bf16, "cpu").kv_dtype == "float32"
    assert precision.inference_config(bf16, "cpu").dtype == "bfloat16"
    assert precision.inference_config(bf16, "gpu") == bf16
    assert precision.inference_config(bf16, "tpu") == bf16
    assert precision.inference_config(SMALL, "cpu") == SMALL  # float32: nothing to change
    explicit = bf16.replace(kv_dtype="bfloat16")
    assert precision.inference_config(explicit, "cpu") == explicit  # a choice already made


def test_f32_keys_and_values_move_only_the_attention_products_of_decoding():
    """bf16 model, kv_dtype float32: a decoding step's Dense layers keep bf16 operands, its
    attention products (self and cross) and cache are float32; the encoder's tiled
    attention stays bf16."""
    config = SMALL.replace(dtype="bfloat16", kv_dtype="float32", n_audio_ctx=512)
    params = init_params(config, jax.random.PRNGKey(0))
    model = Whisper(config)
    mel = jnp.zeros((1, 80, 1024), jnp.float32)
    enc_dots = list(
        dot_generals(
            jax.make_jaxpr(lambda p: model.apply({"params": p}, mel, method=Whisper.encode))(params).jaxpr
        )
    )
    # Per block: q, k, v, out, fc1, fc2 and the two einsums of the tiles (512 queries) in
    # bf16; the shared gate in f32.
    enc_bf16 = [e for e in enc_dots if e.invars[0].aval.dtype == jnp.bfloat16]
    assert len(enc_bf16) == 2 * 8 and all(e.invars[1].aval.dtype == jnp.bfloat16 for e in enc_bf16)
    assert len(enc_dots) == 2 * 8 + 2

    enc = jnp.zeros((1, 512, config.d_model), jnp.bfloat16)
    cross = model.apply({"params": params}, enc, method=Whisper.cross_kv)
    assert all(k.dtype == jnp.float32 and v.dtype == jnp.float32 for k, v in cross)
    cache = init_kv_cache(config, 1)
    assert all(c["k"].dtype == jnp.float32 for c in cache)
    step = lambda p: model.apply(  # noqa: E731
        {"params": p}, jnp.zeros((1, 1), jnp.int32), cross, cache, 3, method=Whisper.decode
    )
    dots = list(dot_generals(jax.make_jaxpr(step)(params).jaxpr))
    bf16 = [e for e in dots if e.invars[0].aval.dtype == jnp.bfloat16]
    f32 = [e for e in dots if e.invars[0].aval.dtype == jnp.float32]
    # Per block: self q, k, v, out, cross q, out, fc1, fc2 in bf16, and the tied logits;
    # the four attention products and the two shared gates in f32.
    assert len(bf16) == 2 * 8 + 1 and all(e.invars[1].aval.dtype == jnp.bfloat16 for e in bf16)
    assert len(f32) == 2 * (4 + 2) and all(e.invars[1].aval.dtype == jnp.float32 for e in f32)


@pytest.mark.parametrize("rows", [(1, 1), (2, 5), (3, 40)])
def test_tied_logits_gradients_are_those_of_the_plain_projection(rows):
    """f32: value and both gradients equal JAX's autodiff of `x @ E.T`; bf16: against float64
    numpy on the bf16-rounded operands and cotangent (the products are exact in f32). One
    row (padded to two), 10 rows (decoding's `E x^T`) and 120 (training's `x E^T`)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((*rows, 16)).astype(np.float32)
    e = (rng.standard_normal((40, 16)) * 0.1).astype(np.float32)
    g = rng.standard_normal((*rows, 40)).astype(np.float32)

    def grads(fn):
        y, vjp = jax.vjp(fn, jnp.asarray(x), jnp.asarray(e))
        return (y, *vjp(jnp.asarray(g)))

    got = grads(lambda a, b: precision.tied_logits(a, b, jnp.dtype(jnp.float32)))
    want = grads(lambda a, b: a @ b.T)
    # Two float32 sums of the same terms in any order differ by at most twice the sum bound
    # (`_sum_error_bound`): K terms, K = 16, 40 and the number of rows.
    ax, ae, ag = np.abs(x).astype(np.float64), np.abs(e).astype(np.float64), np.abs(g).astype(np.float64)
    bounds = (16 * ax @ ae.T, 40 * ag @ ae, x.size // 16 * np.einsum("abv,abd->vd", ag, ax))
    for a, b, bound in zip(got, want, bounds):
        diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
        assert np.all(diff <= 2 * U32 * bound + 1e-12)

    y, dx, de = grads(lambda a, b: precision.tied_logits(a, b, jnp.dtype(jnp.bfloat16)))
    assert y.dtype == dx.dtype == de.dtype == jnp.float32
    xr, er, gr = _bf16(x), _bf16(e), _bf16(g)
    for value, ref in ((y, xr @ er.T), (dx, gr @ er), (de, np.einsum("btv,btd->vd", gr, xr))):
        np.testing.assert_allclose(np.asarray(value, np.float64), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_embed_gathers_the_values_of_flax_embed(dtype):
    ids = jnp.asarray([[0, 7, 99], [3, 3, 50]])
    table = np.random.default_rng(5).standard_normal((100, 8)).astype(np.float32)
    ours = precision.Embed(100, 8, dtype=dtype).apply({"params": {"embedding": table}}, ids)
    flax_ = nn.Embed(100, 8, dtype=dtype).apply({"params": {"embedding": table}}, ids)
    assert ours.dtype == flax_.dtype == jnp.dtype(dtype)
    assert np.array_equal(np.asarray(ours, np.float32), np.asarray(flax_, np.float32))


@pytest.mark.parametrize("gate", ["shared", "per_head", "none"])
def test_inference_variables_decode_the_same_bits(gate):
    """bf16: the kernels of the bf16 Dense layers and a bf16 copy of the token embedding are
    stored cast (the gates' float32 projection is not); a cached decoding step and the
    encoder give exactly the logits and outputs of the plain params. float32: unchanged."""
    c = SMALL.replace(dtype="bfloat16", kv_dtype="float32", gate=gate)
    params = init_params(c, jax.random.PRNGKey(1))
    v = precision.inference_variables(params, c)
    flat = flax.traverse_util.flatten_dict(v["params"], sep="/")
    cast = {k for k, a in flat.items() if a.dtype == jnp.bfloat16}
    assert cast and all(k.split("/")[-2] in precision.CAST_KERNELS and k.endswith("kernel") for k in cast)
    # per encoder block q, k, v, out, fc1, fc2; per decoder block 4 + 2 + 2
    assert len(cast) == c.encoder_layers * 6 + c.decoder_layers * 10
    assert all(a.dtype == jnp.float32 for k, a in flat.items() if k not in cast)
    assert v["cast"]["decoder"]["embedding"].dtype == jnp.bfloat16

    model = Whisper(c)
    mel = jax.random.normal(jax.random.PRNGKey(2), (2, c.n_mels, 2 * c.n_audio_ctx))

    def run(variables):
        enc = model.apply(variables, mel, method=Whisper.encode)
        cross = model.apply(variables, enc, method=Whisper.cross_kv)
        cache = init_kv_cache(c, 2, c.n_text_ctx)
        prefix = jnp.asarray([[1, 2, 3]] * 2)
        logits, cache = model.apply(variables, prefix, cross, cache, 0, method=Whisper.decode)
        step, _ = model.apply(variables, jnp.asarray([[4], [5]]), cross, cache, 3, method=Whisper.decode)
        return enc, logits, step

    for a, b in zip(jax.jit(run)({"params": params}), jax.jit(run)(v)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    f32 = SMALL.replace(gate=gate)
    assert precision.inference_variables(params, f32) == {"params": params}
