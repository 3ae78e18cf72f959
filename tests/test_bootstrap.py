"""The one percentile bootstrap (``synthvlp.bootstrap``) against plain reference computations, and the callers
(zero-shot, grounding, segmentation) giving exactly its numbers."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from synthvlp.bootstrap import percentile_bootstrap
from synthvlp.evaluation.grounding import METRICS as GROUNDING_METRICS
from synthvlp.evaluation.grounding import summarise
from synthvlp.evaluation.zeroshot import mean_auc_interval, score_classes


def test_mean_interval_equals_the_vectorised_percentile_bootstrap():
    values = np.random.default_rng(0).random(37)
    interval = percentile_bootstrap(lambda rows: values[rows].mean(), len(values), 200, np.random.default_rng(4))
    means = values[np.random.default_rng(4).integers(0, len(values), (200, len(values)))].mean(axis=1)
    assert (float(interval.low), float(interval.high)) == tuple(np.percentile(means, [2.5, 97.5]))
    assert float(interval.estimate) == values.mean()


def test_unscorable_draws_and_nan_values_are_left_out_column_by_column():
    values = np.arange(10, dtype=np.float64)

    def statistic(rows):
        if rows[0] % 2:
            return None  # the draws starting at an odd row are unscorable
        return [values[rows].mean(), np.nan if rows[1] % 2 else values[rows].max()]

    interval = percentile_bootstrap(statistic, 10, 100, np.random.default_rng(1))
    reference = np.random.default_rng(1)
    draws = [rows for rows in (reference.integers(0, 10, 10) for _ in range(100)) if rows[0] % 2 == 0]
    assert interval.low[0] == np.percentile([values[r].mean() for r in draws], 2.5)
    assert interval.high[1] == np.percentile([values[r].max() for r in draws if r[1] % 2 == 0], 97.5)


def test_no_rows_or_no_resamples_draw_nothing_and_give_nan_bounds():
    rng = np.random.default_rng(2)
    state = rng.bit_generator.state
    for n, resamples in ((0, 50), (5, 0)):
        interval = percentile_bootstrap(lambda rows: np.full(3, float(len(rows))), n, resamples, rng)
        assert interval.estimate.tolist() == [float(n)] * 3 and np.isnan(interval.low).all() and np.isnan(interval.high).all()
    assert rng.bit_generator.state == state


def test_zero_shot_auc_interval_is_the_bootstrap_of_sklearn_auc():
    rng = np.random.default_rng(3)
    y = rng.random(60) < 0.3
    p = np.clip(y * 0.3 + rng.random(60) * 0.7, 0, 1)
    result = score_classes(p[:, None], y[:, None].astype(float), ["x"], bootstrap=80, seed=5)[0]
    stream = np.random.default_rng(5)
    draws = [rows for rows in (stream.integers(0, 60, 60) for _ in range(80)) if 0 < y[rows].sum() < 60]
    reference = np.percentile([roc_auc_score(y[rows], p[rows]) for rows in draws], [2.5, 97.5])
    assert np.allclose(result.ci["auc"], reference, rtol=0, atol=1e-12)
    mean = mean_auc_interval(p[:, None], y[:, None].astype(float), ["x"], 1, 80, seed=5)
    assert np.allclose(mean["mean_auc_ci"], reference, rtol=0, atol=1e-12)


def test_grounding_intervals_ignore_nan_and_match_the_bootstrap_of_means():
    rng = np.random.default_rng(6)
    rows = [{"label": "a", **{m: float(rng.random()) for m in GROUNDING_METRICS}} for _ in range(15)]
    rows[3]["cnr"] = float("nan")
    entry = summarise(rows, {}, bootstrap=60, seed=7)[0]
    values = np.array([[row[m] for m in GROUNDING_METRICS] for row in rows])
    stream = np.random.default_rng(7)
    draws = np.stack([np.nanmean(values[stream.integers(0, 15, 15)], axis=0) for _ in range(60)])
    low = np.percentile(draws, 2.5, axis=0)
    assert [entry[f"{m}_ci_low"] for m in GROUNDING_METRICS] == low.tolist()
