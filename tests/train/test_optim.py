"""The optimizer: the learning-rate schedule against transformers' linear schedule with warm-up
(what distil-whisper trains with), the weight-decay mask, and frozen parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxwhisper.config import OptimizerConfig
from jaxwhisper.train.optim import (
    FROZEN,
    GATE,
    TRAINED,
    decay_mask,
    learning_rate_schedule,
    make_optimizer,
    param_groups,
)


def hf_linear_with_warmup(step: int, peak: float, warmup: int, total: int) -> float:
    """transformers.get_linear_schedule_with_warmup's rate at `step`."""
    if step < warmup:
        return peak * step / max(1, warmup)
    return peak * max(0.0, (total - step) / max(1, total - warmup))


@pytest.mark.parametrize("warmup, total", [(10, 50), (1, 20), (0, 20), (19, 20)])
def test_schedule_against_the_formula(warmup, total):
    peak = 3e-4
    sched = learning_rate_schedule(OptimizerConfig(learning_rate=peak, warmup_steps=warmup), total)
    for step in range(total + 5):
        assert float(sched(step)) == pytest.approx(
            hf_linear_with_warmup(step, peak, warmup, total), abs=1e-10
        ), step


def test_schedule_landmarks():
    sched = learning_rate_schedule(OptimizerConfig(learning_rate=1e-3, warmup_steps=10), 50)
    assert float(sched(0)) == 0.0  # warm-up starts from 0
    assert float(sched(5)) == pytest.approx(5e-4)
    assert float(sched(10)) == pytest.approx(1e-3)  # the peak at the end of warm-up
    assert float(sched(30)) == pytest.approx(5e-4)  # half-way down
    assert float(sched(50)) == 0.0 and float(sched(80)) == 0.0  # 0 at the run's last update


def _params():
    f = lambda *shape: jnp.full(shape, 2.0)  # noqa: E731
    return {
        "encoder": {"conv1": {"kernel": f(3, 4, 4), "bias": f(4)}, "embed_positions": f(6, 4)},
        "decoder": {
            "embed_tokens": {"embedding": f(10, 4)},
            "layer_norm": {"scale": f(4), "bias": f(4)},
            "self_attn": {
                "gate_proj": {"kernel": f(4, 1), "bias": f(1)},
                "gate_kernel": f(2, 2),
                "gate_bias": f(2),
            },
        },
    }


DECAYED = {
    ("encoder", "conv1", "kernel"),
    ("decoder", "embed_tokens", "embedding"),
    ("decoder", "self_attn", "gate_proj", "kernel"),
    ("decoder", "self_attn", "gate_kernel"),
}


def _flat(tree) -> dict:
    return {tuple(str(k.key) for k in path): v for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_decay_mask_and_groups():
    assert {k for k, v in _flat(decay_mask(_params())).items() if v} == DECAYED
    groups = _flat(param_groups(_params(), frozen=lambda names: names[0] == "encoder"))
    assert {k for k, g in groups.items() if g == FROZEN} == {
        ("encoder", "conv1", "kernel"),
        ("encoder", "conv1", "bias"),
        ("encoder", "embed_positions"),
    }
    assert {k for k, g in groups.items() if g == GATE} == {
        ("decoder", "self_attn", "gate_proj", "kernel"),
        ("decoder", "self_attn", "gate_proj", "bias"),
        ("decoder", "self_attn", "gate_kernel"),
        ("decoder", "self_attn", "gate_bias"),
    }
    assert {k for k, g in groups.items() if g == TRAINED} == {
        ("decoder", "embed_tokens", "embedding"),
        ("decoder", "layer_norm", "scale"),
        ("decoder", "layer_norm", "bias"),
    }


def test_weight_decay_only_where_the_mask_says_and_frozen_params_get_nothing():
    """Zero gradients: Adam's step is 0, so an update is the decoupled decay alone,
    -rate * weight_decay * p, on decayed leaves, and nothing elsewhere; frozen leaves get
    zero updates and hold no optimizer state."""
    lr, wd = 1e-2, 0.1
    cfg = OptimizerConfig(learning_rate=lr, warmup_steps=0, weight_decay=wd, clip_norm=1.0)
    frozen = lambda names: names[0] == "encoder"  # noqa: E731
    params = _params()
    tx = make_optimizer(cfg, total_steps=100, frozen=frozen)
    state = tx.init(params)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, state = jax.jit(tx.update)(zeros, state, params)
    for k, u in _flat(updates).items():
        want = -lr * wd * 2.0 if (k in DECAYED and k[0] != "encoder") else 0.0
        np.testing.assert_allclose(u, want, rtol=1e-6, atol=0, err_msg=str(k))
    # Adam's moments: two per trained element, none for the frozen encoder.
    state_elems = sum(x.size for x in jax.tree.leaves(state) if getattr(x, "ndim", 0) > 0)
    trained = sum(v.size for k, v in _flat(params).items() if k[0] != "encoder")
    assert state_elems == 2 * trained


def test_frozen_params_get_zero_updates_under_real_gradients():
    cfg = OptimizerConfig(learning_rate=1e-2, warmup_steps=0, weight_decay=0.1)
    params = _params()
    tx = make_optimizer(cfg, total_steps=10, frozen=lambda names: names[0] == "encoder")
    grads = jax.tree.map(lambda p: jnp.linspace(-1.0, 1.0, p.size).reshape(p.shape) + 0.3, params)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    for k, u in _flat(updates).items():
        if k[0] == "encoder":
            np.testing.assert_array_equal(u, 0.0)
        else:
            assert np.abs(np.asarray(u)).max() > 0, k
