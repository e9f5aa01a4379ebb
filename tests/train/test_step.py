"""The distillation step on a small random teacher: it learns, and it is deterministic."""

import jax
import numpy as np

from jaxwhisper.config import OptimizerConfig
from jaxwhisper.data.pipeline import make_labels
from jaxwhisper.models.config import WhisperConfig
from jaxwhisper.models.whisper import init_params
from jaxwhisper.train.step import init_state, make_train_step
from jaxwhisper.train.student import make_student

TEACHER = WhisperConfig(
    n_vocab=120, d_model=64, n_heads=4, encoder_layers=4, decoder_layers=4, ffn_dim=128, n_text_ctx=16
)


def _batch():
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.normal(size=(2, 480000))).astype(np.float32)
    rows = [make_labels([1, 2], list(rng.integers(3, 100, size=n)), 0, 16) for n in (5, 9)]
    return {
        "audio": audio,
        "audio_len": np.array([480000, 32000], np.int32),
        "decoder_input_ids": np.stack([r[0] for r in rows]),
        "labels": np.stack([r[1] for r in rows]),
    }


def _run(steps):
    t_params = init_params(TEACHER, jax.random.PRNGKey(0))
    s_cfg, s_params = make_student(TEACHER, t_params, 2, 2, gate="shared")
    opt = OptimizerConfig(learning_rate=3e-3, warmup_steps=2)
    step, tx = make_train_step(s_cfg, TEACHER, opt, total_steps=50)
    step = jax.jit(step)
    state, batch, out = init_state(s_params, tx), _batch(), []
    for _ in range(steps):
        state, m = step(state, t_params, batch)
        out.append({k: float(v) for k, v in m.items()})
    return state, out


def test_step_learns_and_reports_metrics():
    state, metrics = _run(12)
    assert metrics[-1]["train/loss"] < 0.7 * metrics[0]["train/loss"]
    assert metrics[0]["train/tokens"] == 5 + 1 + 9 + 1  # text + end-of-text of both rows
    assert metrics[0]["train/learning_rate"] == 0.0 and metrics[2]["train/learning_rate"] > 0
    assert all(np.isfinite(list(m.values())).all() for m in metrics)
    assert int(state.step) == 12


def test_step_is_deterministic():
    a, _ = _run(3)
    b, _ = _run(3)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(x, y)


def test_non_finite_micro_step_is_skipped_and_counted():
    """With max_nan_skips, a NaN batch leaves params and optimizer state as they were."""
    t_params = init_params(TEACHER, jax.random.PRNGKey(0))
    s_cfg, s_params = make_student(TEACHER, t_params, 2, 2, gate="shared")
    opt = OptimizerConfig(learning_rate=3e-3, warmup_steps=1, accumulation_steps=2)
    step, tx = make_train_step(s_cfg, TEACHER, opt, total_steps=50, max_nan_skips=2)
    step = jax.jit(step)
    good = _batch()
    bad = dict(good, audio=np.full_like(good["audio"], np.nan))
    state = init_state(s_params, tx)
    state, m = step(state, t_params, good)
    before = state
    state, m = step(state, t_params, bad)
    assert not np.isfinite(m["train/loss"]) and int(m["train/skipped_steps"]) == 1
    for x, y in zip(
        jax.tree.leaves((before.params, before.opt_state.inner_state)),
        jax.tree.leaves((state.params, state.opt_state.inner_state)),
    ):
        np.testing.assert_array_equal(x, y)
    # The accumulation resumes where it was: the next good micro-step completes it.
    state, m = step(state, t_params, good)
    assert int(state.opt_state.inner_state.gradient_step) == 1
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))
    assert int(m["train/skipped_steps"]) == 1
