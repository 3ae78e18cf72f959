"""Distribution distances between two sets of films, each meaningful beside the same distance between two halves
of the real set (the floor a perfect renderer would reach with that many films).

- ``histogram``: Wasserstein-1 distance between the pooled pixel intensities (exposure, window, tissue mix).
- ``spectrum``: mean absolute difference, in decades, of the radially averaged power spectra (each film scaled
  to unit variance first, so this is texture and sharpness, not contrast).
- ``contrast``: Wasserstein-1 distance between the per-film contrasts of mediastinum over lung fields.

Each is computed from per-film features (``features``), so many pairs of subsets can be compared cheaply: real
films differ a lot from each other (a film's high-frequency power spans two decades), and one halving of the real
set can land a floor several times below the typical one, so floors are averaged over many halvings.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

BINS = 256
BAND = (0.25, 0.6)  # rows (fraction of height) where both lungs and the mediastinum are in every frontal film
CENTRE = (0.35, 0.65)  # columns searched for the mediastinum
SIDES = ((0.08, 0.45), (0.55, 0.92))  # columns searched for each lung field
NAMES = ("histogram", "spectrum", "contrast")


def wasserstein_1d(a: np.ndarray, b: np.ndarray, points: int = 1000) -> float:
    """W1 between two empirical distributions: the mean gap between their quantile functions."""
    q = (np.arange(points) + 0.5) / points
    return float(np.mean(np.abs(np.quantile(a, q) - np.quantile(b, q))))


def histograms(films: np.ndarray) -> np.ndarray:
    """(n, 256) pixel counts of each film over [0, 1]."""
    bins = np.minimum(films * BINS, BINS - 1).astype(np.int32)
    return np.stack([np.bincount(f.ravel(), minlength=BINS) for f in bins]).astype(np.float64)


def radial_spectrum(films: np.ndarray) -> np.ndarray:
    """(n, size // 2) log10 radially averaged power of each film at integer radii 1 .. size/2 (cycles per image)."""
    n, size, _ = films.shape
    centred = films - films.mean(axis=(1, 2), keepdims=True)
    centred /= np.maximum(centred.std(axis=(1, 2), keepdims=True), 1e-6)
    power = np.abs(np.fft.rfft2(centred)) ** 2 / (size * size)  # half plane: P(-k) = P(k) for a real film
    fy, fx = np.fft.fftfreq(size) * size, np.fft.rfftfreq(size) * size
    radius = np.rint(np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)).astype(int).ravel()
    keep = (radius >= 1) & (radius <= size // 2)
    counts = np.bincount(radius[keep], minlength=size // 2 + 1)[1:]
    sums = np.stack([np.bincount(radius[keep], p.ravel()[keep], minlength=size // 2 + 1)[1:] for p in power])
    return np.log10(np.maximum(sums / counts, 1e-12))


def contrast(films: np.ndarray) -> np.ndarray:
    """Per film: the brightest central column (mediastinum) minus the mean of each side's darkest column (lung
    fields), on column profiles averaged over the chest's middle rows and smoothed over ~3% of the width.

    Found per film rather than in fixed boxes, so a film shifted or narrower than another is measured alike.
    """
    n, size, _ = films.shape
    rows = slice(int(BAND[0] * size), int(BAND[1] * size))
    profile = films[:, rows, :].mean(axis=1)
    width = max(3, size // 32)
    kernel = np.ones(width) / width
    profile = np.stack([np.convolve(p, kernel, mode="same") for p in profile])
    cols = lambda lo, hi: slice(int(lo * size), int(hi * size))  # noqa: E731
    mediastinum = profile[:, cols(*CENTRE)].max(axis=1)
    lungs = np.mean([profile[:, cols(*side)].min(axis=1) for side in SIDES], axis=0)
    return mediastinum - lungs


def features(films: np.ndarray) -> dict[str, np.ndarray]:
    """Per-film features every distance is computed from."""
    return {"histogram": histograms(films), "spectrum": radial_spectrum(films), "contrast": contrast(films)}


def _histogram(a: np.ndarray, b: np.ndarray) -> float:
    cdfs = [np.cumsum(h.sum(axis=0) / h.sum()) for h in (a, b)]
    return float(np.abs(cdfs[0] - cdfs[1]).sum() / BINS)


def _spectrum(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.mean(axis=0) - b.mean(axis=0))))


FEATURE_DISTANCES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "histogram": _histogram,
    "spectrum": _spectrum,
    "contrast": wasserstein_1d,
}


def between(a: dict[str, np.ndarray], b: dict[str, np.ndarray], pick_a=slice(None), pick_b=slice(None)) -> dict[str, float]:
    """Every distance between the films ``pick_a`` of feature set ``a`` and ``pick_b`` of ``b``."""
    return {name: FEATURE_DISTANCES[name](a[name][pick_a], b[name][pick_b]) for name in NAMES}


def distances(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Every distance between film sets ``a`` and ``b`` (values in [0, 1])."""
    return between(features(a), features(b))
