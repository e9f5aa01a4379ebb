"""The Flax Whisper module: configs, cache decoding, gates in the model, sow points (attention on its
own: test_attention.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxwhisper.models.config import PRESETS, WhisperConfig
from jaxwhisper.models.weights.hf import config_to_hf
from jaxwhisper.models.whisper import Whisper, gelu, init_kv_cache, init_params, param_shapes

TINY = WhisperConfig(
    n_mels=80,
    n_audio_ctx=50,
    n_text_ctx=32,
    n_vocab=100,
    d_model=64,
    n_heads=4,
    encoder_layers=2,
    decoder_layers=2,
    ffn_dim=128,
)


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("name", ["tiny.en", "base", "small.en", "large-v2", "large-v3"])
def test_preset_param_counts_match_transformers(name):
    """Parameter counts against transformers' own model built on the meta device."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    c = PRESETS[name]
    hf = transformers.WhisperConfig(**config_to_hf(c))
    with torch.device("meta"):
        model = transformers.WhisperForConditionalGeneration(hf)
    # proj_out is tied to the token embedding, so counted once on both sides.
    expected = sum(p.numel() for p in model.parameters())
    assert _count(param_shapes(c)) == expected


@pytest.mark.parametrize("gate", ["shared", "per_head"])
def test_gated_cross_attention_false_gates_only_self_attention(gate):
    names = {"gate_proj", "gate_kernel", "gate_bias"}
    for cross in (True, False):
        params = init_params(TINY.replace(gate=gate, gated_cross_attention=cross), jax.random.PRNGKey(0))
        for side in ("encoder", "decoder"):
            for i in range(2):
                block = params[side][f"layers_{i}"]
                assert names & set(block["self_attn"])
                if side == "decoder":
                    assert bool(names & set(block["encoder_attn"])) == cross


@pytest.fixture(scope="module")
def tiny_params():
    return init_params(TINY, jax.random.PRNGKey(0))


def test_init_params_from_a_short_input_equals_an_init_from_a_full_window():
    """init_params creates the parameters from 4 frames; a full window gives the same ones."""
    cfg = TINY.replace(gate="shared")
    mel = jnp.zeros((1, cfg.n_mels, cfg.n_frames), jnp.float32)
    full = Whisper(cfg).init(jax.random.PRNGKey(0), mel, jnp.zeros((1, 1), jnp.int32))["params"]
    short = init_params(cfg, jax.random.PRNGKey(0))
    assert jax.tree.structure(short) == jax.tree.structure(full)
    for a, b in zip(jax.tree.leaves(short), jax.tree.leaves(full)):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def tiny_inputs():
    rng = np.random.default_rng(0)
    mel = rng.normal(size=(2, TINY.n_mels, TINY.n_frames)).astype(np.float32)
    tokens = rng.integers(0, TINY.n_vocab, size=(2, 9)).astype(np.int32)
    return mel, tokens


def test_more_frames_than_the_models_window_are_refused(tiny_params):
    mel = jnp.zeros((1, TINY.n_mels, TINY.n_frames + 2), jnp.float32)
    with pytest.raises(ValueError, match="102 mel frames do not fit the model's window of 100"):
        Whisper(TINY).apply({"params": tiny_params}, mel, method=Whisper.encode)


def test_cached_decoding_equals_teacher_forcing(tiny_params, tiny_inputs):
    mel, tokens = tiny_inputs
    model = Whisper(TINY)
    v = {"params": tiny_params}
    # Jitted, as decoding runs them: op by op, each of the ~190 distinct ops is its own compile.
    full = jax.jit(model.apply)(v, mel, tokens)
    cross = jax.jit(
        lambda v, m: model.apply(v, model.apply(v, m, method=Whisper.encode), method=Whisper.cross_kv)
    )(v, mel)
    decode = jax.jit(lambda v, tok, cache, t: model.apply(v, tok, cross, cache, t, method=Whisper.decode))
    cache = init_kv_cache(TINY, 2)
    # A 3-token prefix in one call, then one token at a time.
    logits, cache = decode(v, tokens[:, :3], cache, 0)
    steps = [logits]
    for t in range(3, tokens.shape[1]):
        logits, cache = decode(v, tokens[:, t : t + 1], cache, t)
        steps.append(logits)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5, rtol=1e-5)


def test_causal_mask_hides_the_future(tiny_params, tiny_inputs):
    mel, tokens = tiny_inputs
    changed = tokens.copy()
    changed[:, 5:] = (changed[:, 5:] + 1) % TINY.n_vocab
    model = Whisper(TINY)
    a = model.apply({"params": tiny_params}, mel, tokens)
    b = model.apply({"params": tiny_params}, mel, changed)
    np.testing.assert_array_equal(a[:, :5], b[:, :5])
    assert np.abs(a[:, 5:] - b[:, 5:]).max() > 1e-3


@pytest.mark.parametrize("gate", ["shared", "per_head"])
def test_gate_formula(gate, tiny_params, tiny_inputs):
    """Gated context == sigmoid(G(x)) / pi_init * ungated context, G as DESIGN.md says."""
    import flax.traverse_util as tu

    config = TINY.replace(gate=gate, gate_init_std=0.5, gate_pi_init=0.8)
    gated = tu.flatten_dict(init_params(config, jax.random.PRNGKey(1)))
    # The same non-gate weights as the ungated model, so only the gate differs.
    gated.update(tu.flatten_dict(tiny_params))
    gated = tu.unflatten_dict(gated)
    mel, tokens = tiny_inputs

    def get(c, p):
        return Whisper(c).apply({"params": p}, mel, tokens, mutable=["intermediates"])[1]["intermediates"][
            "decoder"
        ]["layers_0"]["self_attn"]

    plain, inter = get(TINY, tiny_params), get(config, gated)
    # x: the layer-normed block input, recomputed in numpy.
    blk = tiny_params["decoder"]["layers_0"]
    emb = np.asarray(tiny_params["decoder"]["embed_tokens"]["embedding"])[tokens]
    h = emb + np.asarray(tiny_params["decoder"]["embed_positions"])[: tokens.shape[1]]
    mu, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
    x = (h - mu) / np.sqrt(var + 1e-5) * blk["self_attn_layer_norm"]["scale"] + blk["self_attn_layer_norm"][
        "bias"
    ]
    attn = gated["decoder"]["layers_0"]["self_attn"]
    if gate == "shared":
        logits = x @ np.asarray(attn["gate_proj"]["kernel"]) + np.asarray(attn["gate_proj"]["bias"])
    else:
        xs = x.reshape(*x.shape[:2], 4, 16)
        logits = np.einsum("bqhd,hd->bqh", xs, attn["gate_kernel"]) + np.asarray(attn["gate_bias"])
    g = 1 / (1 + np.exp(-logits)) / 0.8
    np.testing.assert_allclose(inter["gate"][0], g, atol=1e-5)
    ctx = np.asarray(plain["context"][0]).reshape(2, 9, 4, 16) * g[..., None]
    np.testing.assert_allclose(inter["context"][0], ctx.reshape(2, 9, 64), atol=1e-5)
    assert g.std() > 0.01  # the gate varies per token, so the check above means something


def test_sow_points_and_their_cost(tiny_params, tiny_inputs):
    mel, tokens = tiny_inputs
    model = Whisper(TINY)
    plain = model.apply({"params": tiny_params}, mel, tokens)
    logits, state = model.apply({"params": tiny_params}, mel, tokens, mutable=["intermediates"])
    np.testing.assert_array_equal(plain, logits)
    enc0 = state["intermediates"]["encoder"]["layers_0"]
    dec1 = state["intermediates"]["decoder"]["layers_1"]
    assert enc0["self_attn"]["attn_probs"][0].shape == (2, 4, 50, 50)
    assert enc0["self_attn"]["context"][0].shape == (2, 50, 64)
    assert enc0["self_attn"]["out"][0].shape == (2, 50, 64)
    assert enc0["block_out"][0].shape == (2, 50, 64)
    assert dec1["encoder_attn"]["attn_probs"][0].shape == (2, 4, 9, 50)
    assert dec1["block_out"][0].shape == (2, 9, 64)
    # Without the collection, nothing is sown: the jaxpr has no extra outputs.
    n_out = len(jax.make_jaxpr(lambda p: model.apply({"params": p}, mel, tokens))(tiny_params).out_avals)
    assert n_out == 1


def test_bf16_compute_keeps_f32_params_and_is_close(tiny_params, tiny_inputs):
    mel, tokens = tiny_inputs
    f32 = Whisper(TINY).apply({"params": tiny_params}, mel, tokens)
    bf16 = Whisper(TINY.replace(dtype="bfloat16")).apply({"params": tiny_params}, mel, tokens)
    assert bf16.dtype == jnp.float32  # logits are computed in f32
    assert np.abs(np.asarray(bf16) - np.asarray(f32)).max() < 0.1 * np.abs(np.asarray(f32)).max()


def test_gelu_is_the_exact_gelu_with_its_derivative():
    import scipy.special
    import scipy.stats

    x = jnp.linspace(-12.0, 12.0, 20001, dtype=jnp.float32)
    x64 = np.asarray(x, np.float64)
    exact = 0.5 * x64 * (1.0 + scipy.special.erf(x64 / np.sqrt(2.0)))
    # erf's float32 approximation is within 3e-7 of erf; the cancellation in 1 + erf(x)
    # for negative x turns that into an absolute error of up to |x| * 1.5e-7 (1.05e-6
    # measured): the values there are below 1e-4 and not relatively accurate.
    np.testing.assert_allclose(gelu(x), exact, atol=1.5e-6, rtol=2e-7)
    # Relative error: a float32 rounding for x > 0; where the cancellation acts and |GELU|
    # is still 0.01-0.17 (x around -2.5), up to 1.9e-5 (PyTorch's own float32 GELU: 5.4e-5).
    ours, positive = np.asarray(gelu(x)), x64 > 0
    np.testing.assert_allclose(ours[positive], exact[positive], rtol=4e-7)
    visible = np.abs(exact) > 1e-2
    np.testing.assert_allclose(ours[visible], exact[visible], rtol=4e-5)
    grad = jax.grad(lambda v: jnp.sum(gelu(v)))(x)
    closed = scipy.stats.norm.cdf(x64) + x64 * scipy.stats.norm.pdf(x64)
    np.testing.assert_allclose(grad, closed, atol=1e-6, rtol=0)


def test_remat_changes_memory_not_values(tiny_params, tiny_inputs):
    """Same params, same logits, same gradients; the backward pass recomputes the blocks."""
    mel, tokens = tiny_inputs
    cfg = TINY.replace(gate="shared")
    params = init_params(cfg, jax.random.PRNGKey(1))

    def grads(c):
        loss = lambda p: jnp.mean(Whisper(c).apply({"params": p}, mel, tokens) ** 2)  # noqa: E731
        # Jitted: op-by-op, the remat version dispatches every recomputed op on its own.
        return jax.jit(jax.value_and_grad(loss))(params)

    (l0, g0), (l1, g1) = grads(cfg), grads(cfg.replace(remat=True))
    assert jax.tree.structure(g0) == jax.tree.structure(g1)
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
    # The remat version's backward pass recomputes inside remat calls; the plain one has none.
    loss = lambda c: lambda p: jnp.mean(Whisper(c).apply({"params": p}, mel, tokens))  # noqa: E731
    text = lambda c: str(jax.make_jaxpr(jax.grad(loss(c)))(params))  # noqa: E731
    assert "remat" in text(cfg.replace(remat=True)) and "remat" not in text(cfg)
    # Cached decoding goes through the same (remat) blocks and gives the same logits.
    v, m0, m1 = {"params": params}, Whisper(cfg), Whisper(cfg.replace(remat=True))
    cross = m0.apply(v, m0.apply(v, mel, method=Whisper.encode), method=Whisper.cross_kv)
    a, _ = m0.apply(v, tokens[:, :3], cross, init_kv_cache(cfg, 2), 0, method=Whisper.decode)
    b, _ = m1.apply(v, tokens[:, :3], cross, init_kv_cache(cfg, 2), 0, method=Whisper.decode)
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("gate", ["shared", "per_head"])
def test_gates_at_init_barely_move_the_real_teacher(gate, tiny_en, fixture_manifest):
    """tiny.en with gates added: the 1/pi_init scale makes a gate with small weights start at
    1, so the logits move < 1e-3 relative on real speech with weights ~ N(0, 1e-4), and in
    proportion to the weights' std (the default 0.01 moves them about 9%); with gate='none'
    the model is the teacher exactly."""
    from jaxwhisper.data.audio import load_audio
    from jaxwhisper.data.features import log_mel_numpy
    from jaxwhisper.models.weights.resolve import resolve_model

    audio = load_audio(fixture_manifest.parent / "audio" / "mfa__falsetto.flac")
    mel = log_mel_numpy(audio)[None]
    tokens = np.array([[50257, 50362, 639, 318, 477, 845, 1029]], np.int32)
    teacher = Whisper(tiny_en.config).apply({"params": tiny_en.params}, mel, tokens)
    same = resolve_model("tiny.en", gate="none")
    np.testing.assert_array_equal(Whisper(same.config).apply({"params": same.params}, mel, tokens), teacher)
    rel = {}
    for std in (1e-4, 1e-3):
        gated = resolve_model("tiny.en", gate=gate, gate_pi_init=0.9, gate_init_std=std)
        moved = Whisper(gated.config).apply({"params": gated.params}, mel, tokens)
        rel[std] = float(jnp.linalg.norm(moved - teacher) / jnp.linalg.norm(teacher))
    print(f"\n{gate}: relative logit change at init {rel}")
    assert 0 < rel[1e-4] < 1e-3
    assert 5 < rel[1e-3] / rel[1e-4] < 15  # about linear in the std


@pytest.mark.parametrize("gate, gamma", [("none", 0.0), ("shared", -0.03)])
def test_blocked_encoder_attention_equals_dense(gate, gamma):
    """Long encoder self-attention runs in query tiles unless intermediates are collected;
    both paths give the same output."""
    config = TINY.replace(n_audio_ctx=600, gate=gate, gate_init_std=0.3, softmax_clip_gamma=gamma)
    params = init_params(config, jax.random.PRNGKey(2))
    mel = np.random.default_rng(3).normal(size=(2, config.n_mels, config.n_frames)).astype(np.float32)
    model = Whisper(config)
    blocked = model.apply({"params": params}, mel, method=Whisper.encode)
    dense, state = model.apply({"params": params}, mel, method=Whisper.encode, mutable=["intermediates"])
    assert state["intermediates"]["encoder"]["layers_0"]["self_attn"]["attn_probs"][0].shape == (
        2,
        4,
        600,
        600,
    )
    np.testing.assert_allclose(blocked, dense, atol=1e-5, rtol=1e-5)
