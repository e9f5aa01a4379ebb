"""Distillation loss against numpy formulas."""

import numpy as np

from jaxwhisper.train.losses import IGNORE, distillation_loss, hidden_mse


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_loss_matches_numpy():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(2, 5, 11)).astype(np.float32) * 3
    t = rng.normal(size=(2, 5, 11)).astype(np.float32) * 3
    labels = rng.integers(0, 11, size=(2, 5))
    labels[0, :2] = IGNORE
    labels[1, 4] = IGNORE
    mask = labels != IGNORE
    ce = -np.take_along_axis(_log_softmax(s), np.where(mask, labels, 0)[..., None], -1)[..., 0]
    ce = (ce * mask).sum() / mask.sum()
    ls, lt = _log_softmax(s / 2), _log_softmax(t / 2)
    kl = ((np.exp(lt) * (lt - ls)).sum(-1) * mask).sum() / mask.sum()
    loss, parts = distillation_loss(s, t, labels, temperature=2.0, ce_weight=0.8, kl_weight=1.0)
    np.testing.assert_allclose(parts["ce"], ce, rtol=1e-5)
    np.testing.assert_allclose(parts["kl"], kl, rtol=1e-5)
    np.testing.assert_allclose(loss, 0.8 * ce + 4.0 * kl, rtol=1e-5)
    assert float(parts["tokens"]) == mask.sum()


def test_kl_is_zero_for_identical_logits_and_masked_rows_count_nothing():
    s = np.random.default_rng(1).normal(size=(1, 3, 7)).astype(np.float32)
    labels = np.array([[1, 2, 3]])
    _, parts = distillation_loss(s, s, labels)
    assert abs(float(parts["kl"])) < 1e-6
    loss, parts = distillation_loss(s, s + 1.0, np.full((1, 3), IGNORE))
    assert float(loss) == 0.0 and float(parts["tokens"]) == 1.0  # clamped count, no NaN


def test_hidden_mse_matches_numpy_over_target_tokens_only():
    rng = np.random.default_rng(2)
    hs, ht = rng.normal(size=(2, 4, 6)).astype(np.float32), rng.normal(size=(2, 4, 6)).astype(np.float32)
    labels = np.array([[IGNORE, 3, 4, IGNORE], [5, 6, IGNORE, IGNORE]])
    mask = labels != IGNORE
    ref = ((hs - ht) ** 2).mean(-1)[mask].mean()
    np.testing.assert_allclose(float(hidden_mse(hs, ht, labels)), ref, rtol=1e-6)
    # Padding positions may hold anything: they do not count.
    hs[0, 0] += 100.0
    np.testing.assert_allclose(float(hidden_mse(hs, ht, labels)), ref, rtol=1e-6)
