"""The projection phantom draws its lungs' proportions from a normal law fitted to real lung fields."""

from __future__ import annotations

import numpy as np

from synthvlp.generation.phantom.frame import LungProportions
from synthvlp.generation.phantom.patient import LUNG_PROPORTIONS, PRIORS, draw_anatomy
from synthvlp.generation.phantom.scene import read_scene


def _draws(law: LungProportions, count: int, seed: int = 0) -> np.ndarray:
    u = np.random.default_rng(seed).random((count, len(law.names)))
    return np.array([[row[n] for n in law.names] for row in (law.draw(v.tolist()) for v in u)])


def test_draws_follow_the_fitted_mean_and_covariance():
    cholesky = np.diag([0.2, 0.03, 0.03, 0.07, 0.06, 0.1])
    cholesky[1, 0], cholesky[5, 3] = 0.02, -0.05
    wide = LungProportions(  # cut far from the mean, so the cut does not bias the moments
        mean=(1.5, 0.1, 0.1, 0.1, 0.05, 0.06), cholesky=tuple(map(tuple, cholesky)), low=(-9.0,) * 6, high=(9.0,) * 6
    )
    x = _draws(wide, 20000)
    assert np.allclose(x.mean(0), wide.mean, atol=0.01)
    assert np.allclose(np.cov(x, rowvar=False), cholesky @ cholesky.T, atol=0.003)


def test_draws_stay_inside_the_fitted_range_and_repeat():
    x = _draws(LUNG_PROPORTIONS, 2000)
    assert (x >= np.array(LUNG_PROPORTIONS.low) - 1e-12).all() and (x <= np.array(LUNG_PROPORTIONS.high) + 1e-12).all()
    assert np.array_equal(x, _draws(LUNG_PROPORTIONS, 2000))


def test_the_projection_phantoms_lungs_have_the_drawn_proportions():
    """Height, medial borders and domes are the law's proportions times the half width, for PA and AP films."""
    views = set()
    for seed in range(40):
        a = draw_anatomy(read_scene([]), np.random.default_rng(seed))
        views.add(a.view)
        shift = -0.03 if a.view == "AP" else 0.0  # a supine film's shallower breath
        u = np.random.default_rng(seed).random(32).tolist()  # the same draws draw_anatomy takes
        p = PRIORS.proportions.draw([u[0], u[1], u[2], u[4], u[5], u[8]])
        w = a.half_width
        assert np.isclose(a.height, p["height"] * w + shift)
        assert np.isclose(a.medial["right"], p["medial_right"] * w) and np.isclose(a.medial["left"], p["medial_left"] * w)
        assert np.isclose(a.dome["left"], p["dome_left"] * w)
        assert np.isclose(a.base["left"] - a.base["right"], p["left_lower"] * w)
    assert views == {"PA", "AP"}
