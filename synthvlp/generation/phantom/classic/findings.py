"""The classic phantom's findings: drawn into its painted 2D anatomy, as effects plus their extent.

Where each finding lies (fluid, a collapsed lung, an airspace, a plate, a round lesion, a rib break), the support
devices, the sides and the ``Effect`` are the projection renderer's (``phantom.findings``); what each finding does
to this anatomy's units is drawn here. A finding does not paint pixels: it says how much lung air it replaces
(fluid, consolidation), what density it adds (a nodule, a tube), what air it adds (pneumothorax) and where lung
markings vanish. The composer applies every effect to the anatomy, so overlapping findings combine physically,
and ``Effect.shape`` is the exact extent drawn: the finding's mask is where it is at least one half.
"""

from __future__ import annotations

import numpy as np

from synthvlp.generation.phantom import findings as projection
from synthvlp.generation.phantom.classic.anatomy import Body, rib_centre
from synthvlp.generation.phantom.findings import Drawer, Effect
from synthvlp.generation.phantom.scene import Finding
from synthvlp.generation.phantom.shapes import power, smooth_noise


def draw(finding: Finding, body: Body, rng: np.random.Generator) -> Effect:
    """The effect of one finding; lateral findings on both sides are merged into one effect and one mask."""
    return projection.effect_of(finding, body, rng, _DRAWERS)


def _effusion(body: Body, side: str, severity: int, rng: np.random.Generator) -> Effect:
    """Dependent fluid with a meniscus climbing the lateral wall; the costophrenic angle fills (blunts)."""
    fluid, _, _ = projection.pleural_fluid(body, side, severity, rng)
    return Effect(shape=fluid, opacify=0.95 * fluid, density=0.45 * body.anatomy.density["organ"] * fluid, no_markings=fluid)


def _pneumothorax(body: Body, side: str, severity: int, rng: np.random.Generator) -> Effect:
    """Air between the chest wall and a collapsed lung: lucent, without markings, edged by a thin pleural line."""
    inner, rim = projection.collapsed_lung(body, side, severity, rng)
    line = 4.0 * inner * (1.0 - inner) * body.lungs[side]
    mu = body.anatomy.density["body"]
    return Effect(shape=rim, lucency=0.22 * mu * rim, no_markings=rim, density=0.35 * mu * line)


def _consolidation(body: Body, side: str, severity: int, rng: np.random.Generator, bronchograms: bool = True) -> Effect:
    """Lobar or patchy airspace density with air bronchograms branching from the hilum."""
    a, grid = body.anatomy, body.grid
    region, _ = projection.airspace(body, side, severity, rng)
    region = region * body.lungs[side]
    opacify = 0.9 * region
    if bronchograms:
        hy, hx = a.hilum(side)
        theta = np.arctan2(grid.y - hy, np.abs(grid.x - hx))
        tubes = power(0.5 + 0.5 * np.cos(theta * 28.0 + 3.0 * smooth_noise(rng, grid.shape[0], 6)), 40.0)
        opacify = opacify * (1.0 - 0.5 * tubes)
    return Effect(shape=region, opacify=opacify, density=0.25 * a.density["organ"] * region, no_markings=region)


def _opacity(body: Body, side: str, severity: int, rng: np.random.Generator) -> Effect:
    """A generic patchy density: also what an entity without its own drawing becomes."""
    effect = _consolidation(body, side, severity, rng, bronchograms=False)
    effect.opacify = 0.65 * effect.shape
    effect.density = 0.2 * body.anatomy.density["organ"] * effect.shape
    return effect


def _edema(body: Body, side: str, severity: int, rng: np.random.Generator) -> Effect:
    """Bilateral perihilar (bat-wing) haze with Kerley B lines at the lateral bases."""
    haze, lines, shape = projection.edema_pattern(body, severity, rng)
    return Effect(shape=shape, opacify=0.6 * haze, density=body.anatomy.density["organ"] * (0.15 * haze + 0.25 * lines))


def _atelectasis(body: Body, side: str, severity: int, rng: np.random.Generator) -> Effect:
    """Plate-like (discoid) band at the base; the volume loss raised this hemidiaphragm in ``draw_anatomy``."""
    plate = projection.discoid_plate(body, side, severity, rng)
    return Effect(shape=plate, opacify=0.9 * plate, density=0.25 * body.anatomy.density["organ"] * plate, no_markings=plate)


def _round(body: Body, side: str, radius: float, rng: np.random.Generator) -> Effect:
    """A flat disk of density (the projection phantom draws a sphere's thickness)."""
    disk, _ = projection.round_outline(body, side, radius, rng)
    return Effect(shape=disk, opacify=0.8 * disk, density=0.35 * body.anatomy.density["organ"] * disk)


def _emphysema(body: Body, side: str, severity: int, rng: np.random.Generator) -> Effect:
    """Hyperinflated, hyperlucent lungs with sparse markings; the flat low diaphragm is in ``draw_anatomy``."""
    lung = np.maximum(body.lungs["right"], body.lungs["left"])
    return Effect(shape=lung, lucency=0.12 * body.anatomy.density["body"] * lung, no_markings=0.5 * lung)


_DRAWERS: dict[str, Drawer] = {
    **projection._DRAWERS,  # the devices and cardiomegaly; the rest drawn for this anatomy:
    "pleural effusion": _effusion,
    "pneumothorax": _pneumothorax,
    "consolidation": _consolidation,
    "pulmonary edema": _edema,
    "atelectasis": _atelectasis,
    "nodule": projection.round_lesion("nodule", _round),
    "mass": projection.round_lesion("mass", _round),
    "opacity": _opacity,
    "emphysema": _emphysema,
    "fracture": projection.rib_fracture(rib_centre),
}
