"""Outlier statistics against scipy/numpy on known arrays."""

import numpy as np
import pytest
import scipy.stats

from jaxwhisper.analysis.outlier_stats import batch_stats, merge, summarize


def _data():
    rng = np.random.default_rng(0)
    x = rng.standard_t(df=4, size=(3, 50, 16)).astype(np.float32)
    x[:, :, 5] *= 20  # one outlier dimension
    mask = np.ones((3, 50), np.float32)
    mask[1, 30:] = 0  # a padded sample tail
    return x, mask


def test_kurtosis_and_inf_norm_match_scipy_per_sample():
    x, mask = _data()
    s = summarize(batch_stats(x, mask))
    per_sample = [x[i][mask[i] > 0].ravel() for i in range(3)]
    kurt = [scipy.stats.kurtosis(v, fisher=False, bias=True) for v in per_sample]  # Pearson, ddof 0
    assert s["kurtosis"] == pytest.approx(np.mean(kurt), rel=1e-4)
    assert s["inf_norm"] == pytest.approx(np.mean([np.abs(v).max() for v in per_sample]), rel=1e-6)
    assert s["max_inf_norm"] == pytest.approx(max(np.abs(v).max() for v in per_sample), rel=1e-6)


def test_outliers_per_dimension_match_numpy():
    x, mask = _data()
    s = summarize(batch_stats(x, mask))
    ref = np.zeros(16, int)
    for i in range(3):
        v = x[i][mask[i] > 0]  # [positions, hidden]
        ref += (np.abs(v - v.mean()) > 6 * v.std()).sum(0)
    assert s["outliers_per_dim"] == ref.tolist()
    assert int(np.argmax(ref)) == 5 and ref[5] > 0


def test_streaming_equals_one_batch():
    x, mask = _data()
    whole = summarize(batch_stats(x, mask))
    parts = None
    for i in range(3):
        parts = merge(parts, batch_stats(x[i : i + 1], mask[i : i + 1]))
    streamed = summarize(parts)
    assert streamed["outliers_per_dim"] == whole["outliers_per_dim"]
    for k in ("kurtosis", "inf_norm", "max_inf_norm", "outlier_share"):
        assert streamed[k] == pytest.approx(whole[k], rel=1e-6)
