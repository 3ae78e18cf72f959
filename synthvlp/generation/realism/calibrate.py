"""Fit the phantom's exposure and display ranges to a folder of real films.

The anatomy and findings are projected once (``phantom.project``); only the film development (``phantom.develop``)
is repeated while the ranges of ``Appearance`` move, each film keeping its own random draws, so the objective is
a deterministic, smooth function of the ranges. The objective is the sum of the realism distances (intensity
histogram, power spectrum, mediastinum-over-lung contrast) between the rendered films and all the real ones, each
divided by the same distance between as many real films and the rest: 3.0 would be a renderer as close to the
real films as they are to each other. A compass
search moves each range's low and high end in turn within plausible limits, halving its step after a sweep that
improves nothing, until the step is small or the evaluations are spent.

With ``tone_levels`` > 0 every candidate's films also get a display look-up table (``Appearance.tone``) fitted in
closed form, histogram matching: each evenly spaced film level goes to the real films' quantile at the rendered
films' share below it. The search then moves the ranges for what a look-up table cannot fix (spectrum, contrast).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import yaml

from synthvlp.generation import phantom
from synthvlp.generation.phantom.appearance import RANGES, Appearance, apply_tone
from synthvlp.generation.realism.distances import BINS, NAMES, between, features, histograms
from synthvlp.generation.realism.films import Films

LIMITS = {
    "exposure": (1.0, 8.0),
    "scatter": (0.0, 1.5),
    "scatter_width": (0.03, 0.25),
    "noise": (0.0, 0.05),
    "blur": (0.0, 2.0),
    "equalise": (0.0, 0.95),
    "window_low": (-0.4, 0.3),
    "window_high": (0.5, 2.2),
    "gamma": (0.25, 2.5),
    "shoulder": (0.05, 5.0),
    "floor": (0.0, 0.2),
}
"""The box each range must stay in: beyond it a film stops looking like an exposure at all."""
TONE_LEVELS = 33
"""Levels of the fitted look-up table, one every 1/32 of the film range. A finer table buys little on films it was
not fitted to: 17 levels left a histogram distance of 0.0075 on 500 held-out films, 65 levels 0.0068."""
FINDINGS = ("cardiomegaly", "pleural effusion", "pneumothorax", "consolidation", "pulmonary edema", "atelectasis", "nodule", "emphysema")


@dataclass
class Fit:
    appearance: Appearance
    start: float  # objective of the starting ranges
    best: float  # objective of the fitted ranges
    terms: dict[str, float]  # each distance over its real-vs-real floor, fitted
    floors: dict[str, float]
    films: int


def sample_projections(count: int, size: int, seed: int = 0) -> list[phantom.Projection]:
    """``count`` patients with 0-2 findings each (the quickstart's kinds), projected at ``size`` pixels."""
    rng = np.random.default_rng(seed)
    out = []
    for child in rng.spawn(count):
        picks = child.choice(len(FINDINGS), int(child.integers(0, 3)), replace=False)
        plan = [{"name": FINDINGS[i], "category": "ABNORMALITY", "assertion": "present", "laterality": None} for i in picks]
        out.append(phantom.project(plan, size, child))
    return out


def _vector(appearance: Appearance) -> np.ndarray:
    """Ranges as one vector in [0, 1]^(2 x ranges), each end scaled to its limits."""
    out = []
    for name in RANGES:
        low, high = LIMITS[name]
        out += [(v - low) / (high - low) for v in getattr(appearance, name)]
    return np.array(out)


def _appearance(vector: np.ndarray, tone: tuple[float, ...] = ()) -> Appearance:
    values = {}
    for i, name in enumerate(RANGES):
        low, high = LIMITS[name]
        ends = np.round(np.clip(vector[2 * i : 2 * i + 2], 0.0, 1.0) * (high - low) + low, 4)  # as the fragment writes them
        values[name] = (float(min(ends)), float(max(ends)))
    return Appearance(**values, tone=tone)


def fit_tone(rendered: np.ndarray, real_histogram: np.ndarray, levels: int) -> tuple[float, ...]:
    """A look-up table of ``levels`` evenly spaced film values mapping the pooled histogram of ``rendered`` onto
    ``real_histogram`` (pixel counts in ``BINS`` bins over [0, 1]): level x goes to the real quantile at the
    rendered films' share below x. Non-decreasing by construction; rounded as the fragment writes it."""
    edges = np.linspace(0.0, 1.0, BINS + 1)
    rendered_cdf = np.concatenate([[0.0], np.cumsum(histograms(rendered).sum(axis=0))])
    real_cdf = np.concatenate([[0.0], np.cumsum(real_histogram)])
    share = np.interp(np.linspace(0.0, 1.0, levels), edges, rendered_cdf / rendered_cdf[-1])
    quantile = np.interp(share, real_cdf / real_cdf[-1], edges)  # flat stretches of the real CDF: its first edge
    return tuple(float(v) for v in np.maximum.accumulate(np.round(quantile, 4)))


def calibrate(
    real: Films,
    films: int = 160,
    size: int = 256,
    iterations: int = 300,
    seed: int = 0,
    start: Appearance = Appearance(),
    progress: Callable[[int, float], None] = lambda step, best: None,
    tone_levels: int = TONE_LEVELS,
) -> Fit:
    """Fit ``Appearance`` ranges so ``films`` rendered films match the real ones, and with ``tone_levels`` > 0 a
    look-up table of that many levels (``fit_tone``) for each candidate. Each distance is divided by its floor:
    the mean distance between ``films`` real films and the rest, over 10 random draws."""
    if tone_levels == 1 or tone_levels < 0:
        raise ValueError(f"a look-up table needs at least 2 levels (or 0 for none), got {tone_levels}")
    count = len(real.images)
    if count < 40:
        raise ValueError(f"calibration needs at least 40 real (training) films, got {count}")
    films = min(films, count // 2)
    target = features(real.images)
    rng = np.random.default_rng(seed)
    floors = {name: 0.0 for name in NAMES}
    for _ in range(10):
        order = rng.permutation(count)
        for name, value in between(target, target, order[:films], order[films:]).items():
            floors[name] += max(value, 1e-9) / 10
    projections = sample_projections(films, size, seed)

    real_histogram = target["histogram"].sum(axis=0)

    def score(vector: np.ndarray) -> tuple[float, dict[str, float], tuple[float, ...]]:
        rendered = np.stack([phantom.develop(p, _appearance(vector)) for p in projections]).astype(np.float32)
        tone = fit_tone(rendered, real_histogram, tone_levels) if tone_levels else ()
        rendered = apply_tone(rendered, tone)
        terms = {name: value / floors[name] for name, value in between(features(rendered), target).items()}
        return float(sum(terms.values())), terms, tone

    best = _vector(start)
    best_score, best_terms, best_tone = score(best)
    start_score, step, evaluations = best_score, 0.16, 0
    while evaluations < iterations and step > 0.01:
        improved = False
        for index in range(len(best)):
            for sign in (1.0, -1.0):
                candidate = best.copy()
                candidate[index] = np.clip(candidate[index] + sign * step, 0.0, 1.0)
                value, terms, tone = score(candidate)
                evaluations += 1
                progress(evaluations, min(value, best_score))
                if value < best_score:
                    best, best_score, best_terms, best_tone, improved = candidate, value, terms, tone, True
                    break
                if evaluations >= iterations:
                    break
            if evaluations >= iterations:
                break
        if not improved:
            step /= 2
    return Fit(_appearance(best, best_tone), start_score, best_score, best_terms, floors, films)


def fragment(fit: Fit, source: str) -> str:
    """The fitted ranges (and look-up table, if fitted) as a config fragment to paste into a run config
    (``images.appearance``)."""
    ranges = fit.appearance.as_dict()
    terms = ", ".join(f"{k} {v:.2f}x" for k, v in fit.terms.items())
    header = (
        f"# synthvlp render calibrate: phantom appearance fitted to {fit.films} real films of {source}\n"
        f"# objective (sum of distances over their real-vs-real floors; 3.0 = as close as real to real): "
        f"{fit.start:.2f} -> {fit.best:.2f} ({terms})\n"
    )
    return header + yaml.safe_dump({"images": {"phantom": "projection", "appearance": ranges}}, sort_keys=False, default_flow_style=None)
