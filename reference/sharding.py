"""Combining per-shard statistics: what SyncBatchNorm does across ranks, in float64."""

from __future__ import annotations

import numpy as np


def chan_combine(counts, means, m2s) -> tuple[np.ndarray, np.ndarray, int]:
    """Combine (count, mean, M2 = sum of squared deviations) of shards into the whole's.

    Chan, Golub & LeVeque (1979/1983), pairwise update: for shards A and B,
    delta = mean_B - mean_A, mean = mean_A + delta n_B / n, M2 = M2_A + M2_B + delta^2 n_A n_B / n.
    Returns (mean, M2, n); the unbiased variance is M2 / (n - 1).
    """
    if not (len(counts) == len(means) == len(m2s)) or not counts:
        raise ValueError(
            f"counts, means and m2s must be equally long and non-empty; got "
            f"{len(counts)}, {len(means)}, {len(m2s)}"
        )
    n = int(counts[0])
    mean = np.asarray(means[0], dtype=np.float64)
    m2 = np.asarray(m2s[0], dtype=np.float64)
    for n_b, mean_b, m2_b in zip(counts[1:], means[1:], m2s[1:], strict=True):
        mean_b = np.asarray(mean_b, dtype=np.float64)
        total = n + int(n_b)
        delta = mean_b - mean
        mean = mean + delta * n_b / total
        m2 = m2 + np.asarray(m2_b, dtype=np.float64) + delta**2 * n * n_b / total
        n = total
    return mean, m2, n
