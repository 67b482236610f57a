"""Robust statistics for short, noisy training curves: trend tests that need no noise model.

Why these: a logged loss is noisy, autocorrelated and full of outliers (one hard batch), and the rules must
work from 8 rows to 100,000. Mann-Kendall (Mann 1945; Kendall 1975) tests a monotonic trend by ranks; the
Theil-Sen slope (Theil 1950; Sen 1968) is the median of pairwise slopes; the noise is the MAD of first
differences (robust to a trend, unlike a standard deviation of the values).
"""

from __future__ import annotations

import math
import statistics


def mann_kendall_z(values: list[float]) -> float:
    """Mann-Kendall trend statistic z (normal approximation, continuity corrected; ties reduce variance).

    Rank-based: no noise model, and one outlier changes S by at most n - 1.
    """
    n = len(values)
    if n < 3:
        return 0.0
    s = 0
    for i in range(n - 1):
        vi = values[i]
        for j in range(i + 1, n):
            d = values[j] - vi
            s += (d > 0) - (d < 0)
    counts: dict[float, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    ties = sum(t * (t - 1) * (2 * t + 5) for t in counts.values() if t > 1)
    var = (n * (n - 1) * (2 * n + 5) - ties) / 18
    if var <= 0:
        return 0.0
    if s > 0:
        return (s - 1) / math.sqrt(var)
    if s < 0:
        return (s + 1) / math.sqrt(var)
    return 0.0


def theil_sen_slope(values: list[float]) -> float:
    """Median of the pairwise slopes (per row): a slope one bad point cannot drag."""
    slopes = [
        (values[j] - values[i]) / (j - i) for i in range(len(values) - 1) for j in range(i + 1, len(values))
    ]
    return statistics.median(slopes) if slopes else 0.0


def robust_noise(values: list[float]) -> float:
    """Step-to-step noise: 1.4826 x MAD of first differences / sqrt(2) (sigma for Gaussian noise)."""
    diffs = [b - a for a, b in zip(values, values[1:], strict=False)]
    if len(diffs) < 2:
        return 0.0
    med = statistics.median(diffs)
    return 1.4826 * statistics.median(abs(d - med) for d in diffs) / math.sqrt(2)


def rolling_medians(values: list[float], k: int) -> list[float]:
    if len(values) <= k:
        return [statistics.median(values)] if values else []
    return [statistics.median(values[i : i + k]) for i in range(len(values) - k + 1)]
