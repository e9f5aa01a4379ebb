"""Outlier statistics of activations (paper section 3.2; Bondarenko et al. 2021/2023), as pure
functions that reduce a batch to sums, so that any number of batches streams through in
memory proportional to the hidden size.

Per tensor x [batch, positions, hidden] with a mask [batch, positions] of the positions that
count (padded decoder tokens are masked; see the caller for what it masks):
  - kurtosis (Pearson, normal = 3): per sample over its flattened unmasked values,
    E[(x - mu)^4] / sigma^4 with the population (ddof = 0) moments, then averaged over
    samples;
  - infinity norm: per sample max |x|, averaged over samples (and its maximum);
  - outliers: values more than 6 standard deviations from the mean of the sample's tensor,
    counted per hidden dimension (Bondarenko et al. 2021; the paper's Fig. 2).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

OUTLIER_SIGMAS = 6.0


class BatchStats(NamedTuple):
    """Sums over the samples of one batch (add them up across batches)."""

    samples: jax.Array  # []
    kurtosis_sum: jax.Array  # []
    inf_norm_sum: jax.Array  # []
    inf_norm_max: jax.Array  # []
    outliers_per_dim: jax.Array  # [hidden]
    values: jax.Array  # [] unmasked values seen


def batch_stats(x: jax.Array, mask: jax.Array | None = None) -> BatchStats:
    """x [batch, positions, hidden]; mask [batch, positions] (1 = counts) or None."""
    x = x.astype(jnp.float32)
    if mask is None:
        mask = jnp.ones(x.shape[:2], jnp.float32)
    m = mask.astype(jnp.float32)[..., None]  # [b, p, 1]
    n = jnp.maximum(jnp.sum(m, axis=(1, 2)) * x.shape[-1], 1.0)  # values per sample
    mean = jnp.sum(x * m, axis=(1, 2)) / n
    d = (x - mean[:, None, None]) * m
    var = jnp.sum(d**2, axis=(1, 2)) / n
    m4 = jnp.sum(d**4, axis=(1, 2)) / n
    kurt = m4 / jnp.maximum(var, 1e-30) ** 2
    inf = jnp.max(jnp.abs(x) * m, axis=(1, 2))
    std = jnp.sqrt(var)
    out = (jnp.abs(d) > OUTLIER_SIGMAS * std[:, None, None]) & (m > 0)
    present = (jnp.sum(m, axis=(1, 2)) > 0).astype(jnp.float32)
    return BatchStats(
        samples=jnp.sum(present),
        kurtosis_sum=jnp.sum(kurt * present),
        inf_norm_sum=jnp.sum(inf * present),
        inf_norm_max=jnp.max(inf * present),
        outliers_per_dim=jnp.sum(out, axis=(0, 1)).astype(jnp.float32),
        values=jnp.sum(m) * x.shape[-1],
    )


def merge(a: BatchStats | None, b: BatchStats) -> BatchStats:
    """Streaming accumulation of two batches' sums."""
    if a is None:
        return b
    return BatchStats(
        samples=a.samples + b.samples,
        kurtosis_sum=a.kurtosis_sum + b.kurtosis_sum,
        inf_norm_sum=a.inf_norm_sum + b.inf_norm_sum,
        inf_norm_max=jnp.maximum(a.inf_norm_max, b.inf_norm_max),
        outliers_per_dim=a.outliers_per_dim + b.outliers_per_dim,
        values=a.values + b.values,
    )


def summarize(s: BatchStats) -> dict:
    """{"kurtosis", "inf_norm", "max_inf_norm", "outliers_per_dim", "outlier_share"}."""
    n = max(float(s.samples), 1.0)
    per_dim = np.asarray(s.outliers_per_dim)
    return {
        "kurtosis": float(s.kurtosis_sum) / n,
        "inf_norm": float(s.inf_norm_sum) / n,
        "max_inf_norm": float(s.inf_norm_max),
        "outliers_per_dim": per_dim.astype(int).tolist(),
        "outlier_share": float(per_dim.sum() / max(float(s.values), 1.0)),
    }
