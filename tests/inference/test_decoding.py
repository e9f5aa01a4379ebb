"""Greedy decoding with the KV cache against the definition: at every step, the argmax of the
full teacher-forced logits of the sequence so far (suppressed ids masked at every step, the
begin-suppressed ones at the first), end-of-text from a row's first one on."""

import jax
import numpy as np
import pytest

from jaxwhisper.inference.decoding import DecodeOptions, make_greedy_decoder, strip_tokens
from jaxwhisper.models.config import WhisperConfig
from jaxwhisper.models.whisper import Whisper, param_shapes

CFG = WhisperConfig(
    n_vocab=120,
    d_model=64,
    n_heads=4,
    encoder_layers=1,
    decoder_layers=2,
    ffn_dim=128,
    n_text_ctx=16,
    n_audio_ctx=8,
)
PREFIX = (100, 101)
SUPPRESS = (13, 7)
BEGIN = (89,)
MAX_NEW = CFG.n_text_ctx - len(PREFIX)  # the default: fill the decoder's positions


def _random_params() -> dict:
    """Random weights drawn in numpy on the abstract shapes (a Flax init costs seconds on a busy
    CPU): kernels ~ N(0, 1/fan_in), token embeddings ~ N(0, 0.02), decoder positions
    ~ N(0, 0.6), so that the model emits varied tokens instead of one id over and over and a
    wrong cache position would show."""
    rng = np.random.default_rng(0)

    def fill(path, leaf):
        names = tuple(str(k.key) for k in path)
        if names[-1] == "scale":
            return np.ones(leaf.shape, np.float32)
        if names[-1] == "bias":
            return np.zeros(leaf.shape, np.float32)
        std = {"kernel": 1 / np.sqrt(np.prod(leaf.shape[:-1])), "embedding": 0.02}.get(names[-1], 1.0)
        if names == ("decoder", "embed_positions"):
            std = 0.6
        return (std * rng.normal(size=leaf.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, param_shapes(CFG))


@pytest.fixture(scope="module")
def model():
    mel = 3 * np.random.default_rng(0).normal(size=(3, CFG.n_mels, CFG.n_frames)).astype(np.float32)
    # Full teacher-forced logits of a whole [batch, n_text_ctx] row; the decoder is causal,
    # so position t depends only on tokens 0..t and the padding after it does not matter.
    full = jax.jit(lambda p, m, t: Whisper(CFG).apply({"params": p}, m, t))
    return _random_params(), mel, full


def reference_greedy(model, eot: int, suppress=SUPPRESS, begin=BEGIN) -> np.ndarray:
    params, mel, full = model
    batch = mel.shape[0]
    tokens = np.zeros((batch, CFG.n_text_ctx), np.int32)
    tokens[:, : len(PREFIX)] = PREFIX
    out = np.full((batch, MAX_NEW), eot, np.int32)
    done = np.zeros(batch, bool)
    for step in range(MAX_NEW):
        pos = len(PREFIX) + step - 1  # the logits that predict token `step`
        logits = np.asarray(full(params, mel, tokens))[:, pos].astype(np.float64)
        logits[:, list(suppress) + (list(begin) if step == 0 else [])] = -np.inf
        nxt = np.where(done, eot, logits.argmax(-1))
        out[:, step] = tokens[:, len(PREFIX) + step] = nxt
        done |= nxt == eot
    return out


@pytest.fixture(scope="module")
def eot(model):
    """An id the model emits mid-sequence in some rows: those rows stop there."""
    free = reference_greedy(model, eot=119)
    assert not (free == 119).any()
    counts = {int(t): sum(t in r[:-1] for r in free) for t in np.unique(free[:, 1:-1])}
    candidates = [t for t, n in counts.items() if 0 < n < len(free)]  # some rows, not all
    return candidates[0]


def test_cached_greedy_equals_argmax_of_teacher_forced_logits(model, eot):
    params, mel, _ = model
    decode = make_greedy_decoder(CFG, DecodeOptions(PREFIX, eot, SUPPRESS, BEGIN))
    got = np.asarray(decode(params, mel))
    want = reference_greedy(model, eot)
    assert got.shape == (3, MAX_NEW)
    np.testing.assert_array_equal(got, want)
    # The case is not trivial: varied tokens, rows that stop at different steps or never,
    # and suppression that changes what is produced.
    assert len(set(got.ravel().tolist())) > 4
    stops = [np.flatnonzero(r == eot) for r in got]
    assert any(s.size == 0 for s in stops) and any(s.size and s[0] < MAX_NEW - 1 for s in stops)
    for r, s in zip(got, stops):
        if s.size:
            assert (r[s[0] :] == eot).all()
    assert not np.isin(got, SUPPRESS).any() and not np.isin(got[:, 0], BEGIN).any()
    unsuppressed = reference_greedy(model, eot, suppress=(), begin=())
    assert np.isin(unsuppressed, SUPPRESS + BEGIN).any()
    assert strip_tokens(got, eot) == [
        r[: s[0]].tolist() if s.size else r.tolist() for r, s in zip(got, stops)
    ]


def test_a_prefix_that_fills_the_context_is_an_error():
    with pytest.raises(ValueError, match="leaves no room"):
        make_greedy_decoder(CFG, DecodeOptions(tuple(range(16)), 119))


def test_strip_tokens():
    assert strip_tokens(np.array([[4, 5, 9, 9], [9, 1, 9, 9], [1, 2, 3, 4]]), 9) == [[4, 5], [], [1, 2, 3, 4]]


def test_padding_rows_decode_nothing_and_leave_the_others_unchanged(model, eot):
    """`valid` False rows give only `eot`, the others what they give alone; the encoder runs
    under a `cond` on `valid` (skipped for padding rows), and only when `valid` is given."""
    params, mel, _ = model
    decode = make_greedy_decoder(CFG, DecodeOptions(PREFIX, eot, SUPPRESS, BEGIN))
    want = reference_greedy(model, eot)
    garbage = mel.copy()
    garbage[1] = np.nan  # a row that is read would spread NaN into its tokens' argmax
    got = np.asarray(decode(params, garbage, valid=np.array([True, False, True])))
    np.testing.assert_array_equal(got[[0, 2]], want[[0, 2]])
    assert (got[1] == eot).all()
    assert " cond[" in str(jax.make_jaxpr(decode)(params, mel, valid=np.ones(3, bool)))
    assert " cond[" not in str(jax.make_jaxpr(decode)(params, mel))
