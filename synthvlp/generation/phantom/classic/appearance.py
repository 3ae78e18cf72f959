"""RaSD-style appearance randomisation of a phantom, so a model cannot key on one texture or exposure.

The tissue densities were already drawn per sample (the intensity mixture, in ``anatomy``). This maps the
attenuation image to film intensity through a fixed per-patient window (metal saturates, as on a real film),
then applies the chain of ``synthvlp.rasd.appearance.RandAppearance`` with the same ranges: a smooth
multiplicative bias field, additive noise, an anisotropic blur, and a random gamma. It is written here in NumPy
rather than calling ``RandAppearance`` because one image is too small for torch: its per-call overhead and dense
(size x size) blur matrices were a third of a 256 px render, and torch threads contend on busy cores. Unlike RaSD
it never min-max normalises: that would let a bright finding dim the whole image, and a pixel's value should
change only where something is drawn.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from synthvlp.generation.phantom.shapes import interp_matrix, power, upsample

GAMMA = (0.7, 1.4)
FLOOR = 0.04  # film intensity of air outside the body, kept above 0 so noise is not clipped away
BIAS_STD = (0.02, 0.12)  # log bias sd, scaled as RaSD does (to sd * the max of size^2 normals)
NOISE_STD = (0.003, 0.02)  # additive noise sd as a fraction of the image's peak
FWHM_PER_SIGMA = 2 * math.sqrt(2 * math.log(2))


def randomise(linear: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Film intensity in [0, 1] of an attenuation image whose tissue peaks near ``scale`` (dense metal saturates)."""
    size = linear.shape[0]
    low, high = 0.05 * rng.random(), scale * (1.1 + 0.15 * rng.random())
    image = np.clip((linear - low) * ((1.0 - FLOOR) / (high - low)) + FLOOR, FLOOR, 1.0)
    image *= np.exp(_log_bias(size, rng))
    image += (_uniform(rng, NOISE_STD) * float(image.max())) * rng.standard_normal(image.shape, dtype=np.float32)
    blur = (0.0, 0.2 + 0.8 * size / 256)  # up to ~1 px at 256
    image = _blur(_blur(image, _uniform(rng, blur), 0), _uniform(rng, blur), 1)
    return power(np.clip(image, 0.0, 1.0, out=image), _uniform(rng, GAMMA))


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return bounds[0] + (bounds[1] - bounds[0]) * rng.random()


def _log_bias(size: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth log bias field a quarter to half the image wide (FWHM, per axis), as RaSD's ``log_bias``.

    White noise blurred by a Gaussian that wide carries nothing finer than half its sigma, so it is drawn on a
    grid of that spacing, blurred there and interpolated up (two small matrix products). Its largest magnitude is
    set to sd times the max of size^2 normals, drawn exactly from its distribution, Phi^-1(U^(1/N)).
    """
    sigmas = [_uniform(rng, (size / 4, size / 2)) / FWHM_PER_SIGMA for _ in range(2)]
    mats = []
    for sigma in sigmas:
        step, pad = sigma / 2, 3 * sigma  # padded by 3 sigma so the border sees a stationary field
        nodes = math.ceil((size - 1 + 2 * pad) / step) + 1
        spacing = (size - 1 + 2 * pad) / (nodes - 1)
        mats.append(interp_matrix(nodes, size, pad / spacing, (size - 1 + pad) / spacing) @ _gaussian(sigma / spacing, nodes))
    field = upsample(mats[0], rng.standard_normal((mats[0].shape[1], mats[1].shape[1]), dtype=np.float32), mats[1])
    tail = -math.expm1(math.log(1.0 - rng.random()) / (size * size))  # 1 - U^(1/N), without cancellation
    target = _uniform(rng, BIAS_STD) * -NormalDist().inv_cdf(tail)
    return field * np.float32(target / max(float(np.abs(field).max()), 1e-12))


def _gaussian(sigma: float, size: int) -> np.ndarray:
    """(size, size) Gaussian blur matrix with rows renormalised, so the border averages only what is inside."""
    offsets = np.arange(size, dtype=np.float32)
    weights = np.exp(-((offsets[:, None] - offsets[None, :]) ** 2) / np.float32(2 * sigma * sigma))
    return weights / weights.sum(axis=1, keepdims=True)


def _blur(image: np.ndarray, sigma: float, axis: int) -> np.ndarray:
    """Gaussian blur of ``sigma`` pixels along ``axis`` as a sum of shifted copies (a few taps at these sigmas),
    renormalised at the border like RaSD's blur matrices."""
    radius = math.ceil(3 * sigma)
    if radius == 0 or sigma < 1e-3:
        return image
    taps = np.exp(-np.arange(-radius, radius + 1, dtype=np.float32) ** 2 / np.float32(2 * sigma * sigma))
    size = image.shape[axis]
    moved = np.moveaxis(image, axis, 0)
    out = np.zeros_like(moved)
    norm = np.zeros(size, dtype=np.float32)
    for offset, tap in zip(range(-radius, radius + 1), taps, strict=True):
        lo, hi = max(0, -offset), min(size, size - offset)  # out[i] += tap * in[i + offset]
        out[lo:hi] += tap * moved[lo + offset : hi + offset]
        norm[lo:hi] += tap
    out /= norm[:, None]
    return np.moveaxis(out, 0, axis)
