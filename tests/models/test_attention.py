"""Attention: gate parameters and values, clipped softmax, and the blocked (tiled) path, each
against numpy written from the formulas (float64), not against the module's own output."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxwhisper.models.attention import (
    MultiHeadAttention,
    _query_block,
    blocked_attention,
    cache_buckets,
    clipped_softmax,
)
from jaxwhisper.models.config import WhisperConfig

CFG = WhisperConfig(
    n_vocab=120, d_model=64, n_heads=4, encoder_layers=2, decoder_layers=2, ffn_dim=128, n_text_ctx=16
)


def _softmax64(s):
    s = np.asarray(s, np.float64)
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _mha_reference(p, x, c: WhisperConfig, causal=False):
    """Whisper attention in float64 numpy from its definition (paper eq. 4 for the gate)."""
    x = np.asarray(x, np.float64)
    w = lambda name: np.asarray(p[name]["kernel"], np.float64)  # noqa: E731
    b = lambda name: np.asarray(p[name]["bias"], np.float64)  # noqa: E731
    batch, n, _ = x.shape
    heads = lambda t: t.reshape(batch, n, c.n_heads, c.head_dim).transpose(0, 2, 1, 3)  # noqa: E731
    q = heads(x @ w("q_proj") + b("q_proj"))
    k = heads(x @ w("k_proj"))
    v = heads(x @ w("v_proj") + b("v_proj"))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(c.head_dim)
    if causal:
        scores = np.where(np.tril(np.ones((n, n), bool)), scores, -np.inf)
    probs = _softmax64(scores)
    gamma, zeta = c.softmax_clip_gamma, c.softmax_clip_zeta
    probs = np.clip((zeta - gamma) * probs + gamma, 0.0, 1.0)
    ctx = (probs @ v).transpose(0, 2, 1, 3)  # [b, q, heads, head_dim]
    gate = None
    if c.gate == "shared":
        gate = 1 / (1 + np.exp(-(x @ w("gate_proj") + b("gate_proj")))) / c.gate_pi_init  # [b, q, 1]
    elif c.gate == "per_head":
        xs = x.reshape(batch, n, c.n_heads, c.head_dim)
        logits = np.einsum("bqhd,hd->bqh", xs, np.asarray(p["gate_kernel"], np.float64))
        gate = 1 / (1 + np.exp(-(logits + np.asarray(p["gate_bias"], np.float64)))) / c.gate_pi_init
    if gate is not None:
        ctx = ctx * gate[..., None]
    ctx = ctx.reshape(batch, n, c.d_model)
    return ctx @ w("out_proj") + b("out_proj"), gate


def _init(c: WhisperConfig, n: int = 10, batch: int = 2, causal: bool = False, seed: int = 0):
    """The module, params from its own initialisers, and an input [batch, n, d_model]."""
    x = np.random.default_rng(seed).normal(size=(batch, n, c.d_model)).astype(np.float32)
    mha = MultiHeadAttention(c, causal=causal)
    params = mha.init(jax.random.PRNGKey(seed), jnp.asarray(x))["params"]
    return mha, params, x


def _random(c: WhisperConfig, n: int = 10, batch: int = 2, causal: bool = False, seed: int = 0):
    """As `_init`, with params drawn in numpy on the abstract shapes (a Flax init is seconds of
    eager work on a busy CPU, and these tests need any weights, not the initialisers'):
    weights ~ N(0, 1/fan_in), biases ~ N(0, 0.1), the gate's ~ N(0, gate_init_std)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, n, c.d_model)).astype(np.float32)
    mha = MultiHeadAttention(c, causal=causal)
    shapes = jax.eval_shape(lambda: mha.init(jax.random.PRNGKey(0), jnp.asarray(x))["params"])

    def draw(path, leaf):
        names = tuple(str(k.key) for k in path)
        if any(n.startswith("gate") for n in names):
            std = c.gate_init_std
        else:
            std = 1 / np.sqrt(leaf.shape[0]) if names[-1] == "kernel" else 0.1
        return (std * rng.normal(size=leaf.shape)).astype(np.float32)

    return mha, jax.tree_util.tree_map_with_path(draw, shapes), x


def _shapes(c: WhisperConfig) -> dict:
    x = jnp.zeros((2, 10, c.d_model))
    params = jax.eval_shape(lambda: MultiHeadAttention(c).init(jax.random.PRNGKey(0), x)["params"])
    return jax.tree.map(lambda a: a.shape, params)


def test_gate_parameter_shapes():
    shared = _shapes(CFG.replace(gate="shared"))
    assert shared["gate_proj"] == {"kernel": (64, 1), "bias": (1,)}  # one Linear(d_model -> 1)
    assert "gate_kernel" not in shared
    per_head = _shapes(CFG.replace(gate="per_head"))
    assert per_head["gate_kernel"] == (4, 16) and per_head["gate_bias"] == (
        4,
    )  # Linear(d_head -> 1) per head
    assert "gate_proj" not in per_head
    assert not any(k.startswith("gate") for k in _shapes(CFG))


@pytest.mark.parametrize("gate", ["shared", "per_head"])
def test_gate_initialisation(gate):
    """G's bias is logit(pi_init) and its weights ~ N(0, gate_init_std), so that gates start at
    sigmoid(logit(pi)) / pi = 1 up to the weights' small contribution."""
    c = CFG.replace(d_model=256, n_heads=4, gate=gate, gate_pi_init=0.7, gate_init_std=0.05)
    _, p, _ = _init(c, n=2, batch=1)
    kernel = np.asarray(p["gate_proj"]["kernel"] if gate == "shared" else p["gate_kernel"])
    bias = np.asarray(p["gate_proj"]["bias"] if gate == "shared" else p["gate_bias"])
    np.testing.assert_allclose(bias, math.log(0.7 / 0.3), rtol=1e-6)
    assert abs(kernel.mean()) < 0.01 and 0.04 < kernel.std() < 0.06  # 256 draws of N(0, 0.05)


@pytest.mark.parametrize("gate", ["shared", "per_head"])
def test_gate_values_and_output_match_the_formula(gate):
    """gate = sigmoid(G(x)) / pi_init, shape [b, q, 1] (shared) or [b, q, heads] (per head),
    multiplying each head's context before the output projection."""
    c = CFG.replace(gate=gate, gate_pi_init=0.8, gate_init_std=0.5)
    mha, p, x = _random(c)
    (out, _), state = mha.apply({"params": p}, x, mutable=["intermediates"])
    want, want_gate = _mha_reference(p, x, c)
    got_gate = np.asarray(state["intermediates"]["gate"][0])
    assert got_gate.shape == ((2, 10, 1) if gate == "shared" else (2, 10, 4))
    np.testing.assert_allclose(got_gate, want_gate, rtol=1e-5, atol=1e-6)
    assert want_gate.std() > 0.05  # the gate varies per token, so the match is not trivial
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("gamma, zeta", [(-0.03, 1.0), (-0.1, 1.05), (0.0, 1.2)])
def test_clipped_softmax_matches_formula(gamma, zeta):
    x = np.random.default_rng(1).normal(size=(3, 5, 9)) * 4
    want = np.clip((zeta - gamma) * _softmax64(x) + gamma, 0.0, 1.0)
    got = np.asarray(clipped_softmax(jnp.asarray(x, jnp.float32), gamma, zeta))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-6)
    if gamma < 0:
        assert (got == 0).any()  # exact zeros are reachable
    if zeta > 1:
        assert (got == 1).any()  # and exact ones


def test_plain_softmax_when_clipping_is_off():
    x = np.random.default_rng(2).normal(size=(4, 7)) * 3
    np.testing.assert_allclose(
        clipped_softmax(jnp.asarray(x, jnp.float32), 0.0, 1.0), _softmax64(x), atol=1e-6
    )


@pytest.mark.parametrize("causal", [False, True])
def test_dense_attention_matches_numpy(causal):
    c = CFG.replace(softmax_clip_gamma=-0.02, softmax_clip_zeta=1.01)
    mha, p, x = _random(c, causal=causal)
    out, cache = mha.apply({"params": p}, x)
    assert cache is None
    np.testing.assert_allclose(out, _mha_reference(p, x, c, causal=causal)[0], rtol=1e-4, atol=1e-5)


def test_query_block():
    assert _query_block(1500) == 500
    assert _query_block(512) == 512
    assert _query_block(1500, 256) == 250
    assert _query_block(1009) == 1  # a prime above the target: one query per tile
    assert _query_block(97) == 97
    assert _query_block(100) == 100


@pytest.mark.parametrize("block", [1, 8, 32])
def test_blocked_attention_equals_dense_float64(block):
    rng = np.random.default_rng(3)
    q, k, v = (rng.normal(size=(2, 3, n, 8)) for n in (32, 20, 20))
    gamma, zeta = -0.05, 1.0
    probs_fn = lambda s: clipped_softmax(s, gamma, zeta)  # noqa: E731
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    got = blocked_attention(f32(q), f32(k), f32(v), probs_fn, block)
    probs = np.clip((zeta - gamma) * _softmax64(q @ k.transpose(0, 1, 3, 2)) + gamma, 0, 1)
    np.testing.assert_allclose(got, probs @ v, rtol=1e-5, atol=1e-5)


def test_long_self_attention_takes_the_blocked_path_and_matches_numpy():
    """512 queries, no mask, no cache, no intermediates: the module tiles the queries (a
    `lax.map` scan in its program); the result is still the dense formula."""
    c = CFG.replace(gate="shared", gate_init_std=0.3, softmax_clip_gamma=-0.03)
    mha, p, x = _random(c, n=512, batch=1)
    assert "scan" in str(jax.make_jaxpr(lambda a: mha.apply({"params": p}, a))(x))
    out, _ = mha.apply({"params": p}, x)
    np.testing.assert_allclose(out, _mha_reference(p, x, c)[0], rtol=1e-4, atol=2e-5)


def test_cache_buckets():
    assert cache_buckets(448) == (64, 128, 256, 448)
    assert cache_buckets(227) == (64, 128, 227)
    assert cache_buckets(128) == (64, 128)
    assert cache_buckets(32) == (32,)


def test_decoding_steps_over_cache_prefixes_match_numpy_causal_attention():
    """One query at a time with a 160-position cache (prefixes of 64, 128 and 160 positions):
    at every position, across each prefix boundary, the output is the causal formula's."""
    c = CFG.replace(n_text_ctx=160, gate="shared", gate_init_std=0.3)
    n = 160
    mha, p, x = _random(c, n=n, batch=2, causal=True)
    want = _mha_reference(p, x, c, causal=True)[0]
    shape = (2, c.n_heads, n, c.head_dim)
    cache = {"k": jnp.zeros(shape), "v": jnp.zeros(shape)}
    step = jax.jit(lambda xt, cache, t: mha.apply({"params": p}, xt, cache=cache, offset=t))
    assert "cond" in str(jax.make_jaxpr(step)(jnp.asarray(x[:, :1]), cache, 0))  # the prefix switch
    got = []
    for t in range(n):
        out, cache = step(jnp.asarray(x[:, t : t + 1]), cache, t)
        got.append(out)
    np.testing.assert_allclose(np.concatenate(got, axis=1), want, rtol=1e-4, atol=2e-5)


def test_rows_at_their_own_positions_match_numpy_causal_attention():
    """Per-row offsets ([batch] positions, rows that joined a decoding batch at different
    times): row 1 starts 25 steps after row 0 and each step writes and attends at the row's
    own position. Every row's outputs are the causal formula's over its own sequence."""
    c = CFG.replace(n_text_ctx=64, gate="per_head", gate_init_std=0.3)
    n, lag = 40, 25
    mha, p, x = _random(c, n=n, batch=2, causal=True)
    want = _mha_reference(p, x, c, causal=True)[0]
    shape = (2, c.n_heads, 64, c.head_dim)
    cache = {"k": jnp.zeros(shape), "v": jnp.zeros(shape)}
    step = jax.jit(lambda xt, cache, t: mha.apply({"params": p}, xt, cache=cache, offset=t))
    got = {0: [], 1: []}
    for t in range(n + lag):
        pos = np.array([min(t, n - 1), max(t - lag, 0)], np.int32)  # a finished or waiting row
        xt = np.stack([x[0, pos[0]], x[1, pos[1]]])[:, None]  # repeats its last/first token
        out, cache = step(jnp.asarray(xt), cache, jnp.asarray(pos))
        for r in (0, 1):
            if (r == 0 and t < n) or (r == 1 and t >= lag):
                got[r].append(np.asarray(out[r, 0]))
    for r in (0, 1):
        np.testing.assert_allclose(np.stack(got[r]), want[r], rtol=1e-4, atol=2e-5)
