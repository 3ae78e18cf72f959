"""Exposure and display: the projected attenuation becomes a film as a detector and its processing make it.

The chain, each step drawn per film from ``Appearance``'s ranges (RaSD-style randomisation, so a model cannot key
on one exposure, but around what real departments produce):

1. primary transmission ``exp(-k A)``, plus scatter: a smooth veil, the blurred transmission times a
   scatter-to-primary ratio, which lifts the dense mediastinum and flattens contrast as on film;
2. quantum noise, larger where fewer photons arrive (sd ~ sqrt of the signal), then the detector's blur;
3. the log of the signal (back to attenuation units), a large-scale equalisation (dynamic range compression);
4. a window set from the patient's own attenuation range, a toe and a shoulder (the display curve), a floor;
5. optionally a look-up table on the finished film (``tone``), as a vendor's processing maps detector values to
   display values; ``synthvlp render calibrate`` fits it so the pooled histogram matches real films'.

Everything that looks beyond a pixel (scatter, equalisation, the window) is computed from the anatomy without
findings (``plain``), so a finding changes the film only where it is drawn plus the detector blur's reach
(``halo``): its mask stays exact. That is an approximation (a large effusion does scatter) and a deliberate one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from synthvlp.generation.phantom.shapes import BLUR_REACH, blur, blur2d, interp_matrix, upsample

COARSE = 8  # scatter and equalisation are computed on a grid this many times coarser


@dataclass(frozen=True)
class Appearance:
    """Ranges (low, high) each film's exposure and display settings are drawn from uniformly.

    ``synthvlp render calibrate`` fits them to a folder of real films and writes them as a config fragment.
    """

    exposure: tuple[float, float] = (5.0, 8.0)  # k: transmission exp(-k A)
    scatter: tuple[float, float] = (0.0, 0.72)  # scatter share of the blurred primary transmission
    scatter_width: tuple[float, float] = (0.1656, 0.25)  # scatter kernel sd, share of the image
    noise: tuple[float, float] = (0.004, 0.008)  # quantum noise sd at full transmission
    blur: tuple[float, float] = (0.36, 1.04)  # detector blur sd in pixels at 256 px (scaled with size)
    equalise: tuple[float, float] = (0.3, 0.548)  # share of the large-scale attenuation taken out
    window_low: tuple[float, float] = (-0.1, -0.068)  # window bottom above the air level, attenuation units
    window_high: tuple[float, float] = (1.252, 1.6)  # window top, times the patient's 90th percentile
    gamma: tuple[float, float] = (0.4, 1.972)  # display toe (<1 lifts the darks)
    shoulder: tuple[float, float] = (0.208, 2.208)  # display shoulder (compresses the brights)
    floor: tuple[float, float] = (0.032, 0.082)  # film value where nothing attenuates
    tone: tuple[float, ...] = ()  # display levels at evenly spaced film levels 0..1 (empty: none); not a range

    @classmethod
    def from_dict(cls, values: dict) -> Appearance:
        """From ``{name: [low, high], "tone": [levels...]}``; unknown names, a range that is not a pair and a
        look-up table that falls or leaves [0, 1] are errors naming them."""
        unknown = sorted(set(values) - set(RANGES) - {"tone"})
        if unknown:
            raise ValueError(f"unknown appearance setting(s) {unknown}; known: {sorted(RANGES + ('tone',))}")
        for name in set(values) & set(RANGES):
            if len(values[name]) != 2:
                raise ValueError(f"{name}: a range is [low, high], got {list(values[name])}")
        tone = tuple(float(v) for v in values.get("tone", ()))
        if tone and (len(tone) < 2 or min(tone) < 0.0 or max(tone) > 1.0 or any(b < a for a, b in zip(tone, tone[1:]))):
            raise ValueError(f"tone: a look-up table is 2 or more non-decreasing levels in [0, 1], got {list(tone)}")
        return cls(**{k: (float(v[0]), float(v[1])) for k, v in values.items() if k != "tone"}, tone=tone)

    def as_dict(self) -> dict[str, list[float]]:
        """The settings as ``from_dict`` reads them: every range, then the look-up table if there is one."""
        out = {name: list(getattr(self, name)) for name in RANGES}
        return out | ({"tone": list(self.tone)} if self.tone else {})


RANGES = tuple(f.name for f in fields(Appearance) if f.name != "tone")
"""The settings drawn per film from a (low, high) range, in the order they are drawn."""


def apply_tone(film: np.ndarray, tone: tuple[float, ...]) -> np.ndarray:
    """``film`` (values in [0, 1]) through the look-up table ``tone``, linear between its evenly spaced levels."""
    if not tone:
        return film
    levels = np.linspace(0.0, 1.0, len(tone), dtype=np.float32)
    return np.interp(film, levels, np.asarray(tone, dtype=np.float32)).astype(film.dtype, copy=False)


def halo(size: int, settings: Appearance = Appearance()) -> int:
    """Pixels a finding's drawing can reach past its mask: its one-pixel soft edge plus the detector blur's reach."""
    return 1 + math.ceil(BLUR_REACH * settings.blur[1] * size / 256)


def _draw(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return bounds[0] + (bounds[1] - bounds[0]) * float(rng.random())


def _coarse(image: np.ndarray, factor: int) -> np.ndarray:
    """Block means (the image side need not be a multiple of ``factor``)."""
    size = image.shape[0]
    n = -(-size // factor)
    pad = n * factor - size
    padded = np.pad(image, ((0, pad), (0, pad)), mode="edge") if pad else image
    return padded.reshape(n, factor, n, factor).mean(axis=(1, 3))


def _upsample(small: np.ndarray, size: int) -> np.ndarray:
    """A coarse map (block means of ``COARSE`` pixels) interpolated back to ``size`` pixels."""
    n = small.shape[0]
    up = interp_matrix(n, size, (0.5 / COARSE) - 0.5, n - 0.5 - 0.5 / COARSE)
    return upsample(up, small.astype(np.float32), up)


def expose(attenuation: np.ndarray, plain: np.ndarray, rng: np.random.Generator, settings: Appearance = Appearance()) -> np.ndarray:
    """Film in [0, 1] of ``attenuation`` (the whole composite); ``plain`` is the same patient without findings."""
    size = attenuation.shape[0]
    draws = {name: _draw(rng, getattr(settings, name)) for name in RANGES}
    k = draws["exposure"]
    # what is smooth (scatter, the equalisation trend, the window) is worked out on the coarse grid, from ``plain``
    transmitted = np.exp(-k * _coarse(plain, COARSE))
    scatter = draws["scatter"] * blur2d(transmitted, draws["scatter_width"] * size / COARSE)
    plain_level = -np.log(transmitted + scatter) * (1.0 / k)
    trend = draws["equalise"] * blur2d(plain_level, 0.08 * size / COARSE)
    air, top = np.quantile(plain_level - trend, [0.01, 0.9]).tolist()
    signal = np.exp(-k * attenuation) + np.maximum(_upsample(scatter, size), 0.0)  # linear extrapolation at the border can dip below 0
    if draws["noise"] > 0:
        signal += (draws["noise"] * np.sqrt(signal)) * rng.standard_normal(attenuation.shape, dtype=np.float32)
    sigma = draws["blur"] * size / 256
    signal = blur(blur(signal, sigma, 0), sigma, 1)
    level = -np.log(np.maximum(signal, 1e-6)) * (1.0 / k) - _upsample(trend, size)
    low = air + draws["window_low"]
    high = low + max(draws["window_high"] * top - low, 0.05)
    x = np.clip((level - low) * (1.0 / (high - low)), 0.0, 1.25)
    x = np.exp(draws["gamma"] * np.log(np.maximum(x, 1e-6)))
    shoulder = draws["shoulder"]
    x = (1.0 - np.exp(-shoulder * x)) * (1.0 / (1.0 - math.exp(-1.25 * shoulder)))
    return draws["floor"] + (1.0 - draws["floor"]) * x
