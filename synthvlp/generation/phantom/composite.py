"""Applies the findings' effects to the anatomy: one linear attenuation image, before any appearance change."""

from __future__ import annotations

import numpy as np

from synthvlp.generation.phantom.anatomy import Body
from synthvlp.generation.phantom.findings import Effect


def compose(body: Body, effects: list[Effect]) -> np.ndarray:
    """Tissue plus ribs plus markings minus remaining air, with every finding applied (overlaps take the max).

    Computed in float32 throughout, in the same order with or without findings, so a pixel no finding touches
    comes out bit-identical (a float64 map would round every pixel differently and move the film everywhere).
    """
    opacify: np.ndarray | float = 0.0
    no_markings: np.ndarray | float = 0.0
    rib_gap: np.ndarray | float = 0.0
    added = np.zeros(body.grid.shape, dtype=np.float32)
    for effect in effects:
        opacify = _maximum(opacify, effect.opacify)
        no_markings = _maximum(no_markings, effect.no_markings)
        rib_gap = _maximum(rib_gap, effect.rib_gap)
        added += _float32(effect.density) - _float32(effect.lucency)
    d = body.anatomy.density
    markings = body.markings * (1.0 - no_markings)
    ribs = body.ribs * (1.0 - rib_gap)
    return body.density + d["bone"] * ribs + d["vessel"] * markings - body.air * (1.0 - opacify) + added


def _float32(value: np.ndarray | float) -> np.ndarray | float:
    return value.astype(np.float32, copy=False) if isinstance(value, np.ndarray) else float(value)


def _maximum(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray | float:
    """Elementwise max that stays float32 for maps and a Python float for two scalars (``np.maximum`` of two
    floats is a NumPy float64, which would promote every float32 map it later touches)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.maximum(_float32(a), _float32(b))
    return max(float(a), float(b))
