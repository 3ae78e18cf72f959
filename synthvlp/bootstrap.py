"""The percentile bootstrap every evaluation table uses for its 95% confidence intervals.

Zero-shot classification, grounding and segmentation all resample their rows (images or regions) with
replacement and read the 2.5th and 97.5th percentiles of a statistic; one function keeps their definition, their
handling of unscorable draws and their random stream the same.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Statistic = Callable[[np.ndarray], "float | np.ndarray | None"]
"""Row indices (with repeats) -> a value or a vector of values; None for a draw it cannot score."""


@dataclass(frozen=True)
class Interval:
    """A statistic on all rows and its percentile-bootstrap 95% bounds (arrays of the statistic's shape)."""

    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray


def percentile_bootstrap(statistic: Statistic, n: int, resamples: int, rng: np.random.Generator) -> Interval:
    """``statistic`` on rows 0..n-1, and the 2.5/97.5 percentiles of it over ``resamples`` draws of n rows.

    Draws the statistic cannot score (None) are left out, and so are NaN values, column by column: a resample
    with no positive image has no AUC, a mask covering the whole film no CNR. Bounds are NaN where nothing is
    left, and when n or ``resamples`` is 0 (no random numbers are then drawn). The caller passes ``rng`` so that
    several intervals can share one stream, as the per-class zero-shot table does.
    """
    estimate = np.asarray(statistic(np.arange(n)), dtype=np.float64)
    draws = []
    for _ in range(resamples if n else 0):
        value = statistic(rng.integers(0, n, n))
        if value is not None:
            draws.append(np.asarray(value, dtype=np.float64))
    if not draws:
        empty = np.full(estimate.shape, np.nan)
        return Interval(estimate, empty, empty.copy())
    with warnings.catch_warnings():  # a column with only NaN draws gets NaN bounds, on purpose
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(np.stack(draws), [2.5, 97.5], axis=0)
    return Interval(estimate, low, high)
