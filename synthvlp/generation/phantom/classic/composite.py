"""Applies the findings' effects to the anatomy: one linear attenuation image, before any appearance change."""

from __future__ import annotations

import numpy as np

from synthvlp.generation.phantom.classic.anatomy import Body
from synthvlp.generation.phantom.findings import Effect


def compose(body: Body, effects: list[Effect]) -> np.ndarray:
    """Tissue plus ribs plus markings minus remaining air, with every finding applied (overlaps take the max)."""
    opacify: np.ndarray | float = 0.0
    no_markings: np.ndarray | float = 0.0
    rib_gap: np.ndarray | float = 0.0
    added = np.zeros(body.grid.shape, dtype=np.float32)
    for effect in effects:
        opacify = np.maximum(opacify, effect.opacify)
        no_markings = np.maximum(no_markings, effect.no_markings)
        rib_gap = np.maximum(rib_gap, effect.rib_gap)
        added += effect.density - effect.lucency
    d = body.anatomy.density
    markings = body.markings * (1.0 - no_markings)
    ribs = body.ribs * (1.0 - rib_gap)
    return (body.density + d["bone"] * ribs + d["vessel"] * markings - body.air * (1.0 - opacify) + added).astype(np.float32)
