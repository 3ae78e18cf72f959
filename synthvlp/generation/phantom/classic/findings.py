"""The classic phantom's findings: drawn into its painted 2D anatomy, as effects plus their extent.

The support devices, the sides and the ``Effect`` are the projection renderer's (``phantom.findings``); the rest
is drawn for this anatomy's units. A finding does not paint pixels: it says how much lung air it replaces (fluid, consolidation), what density it
adds (a nodule, a tube), what air it adds (pneumothorax) and where lung markings vanish. The composer applies
every effect to the anatomy, so overlapping findings combine physically, and ``Effect.shape`` is the exact
extent drawn: the finding's mask is where it is at least one half.
"""

from __future__ import annotations

import numpy as np

from synthvlp.generation.phantom import findings as projection
from synthvlp.generation.phantom.classic.anatomy import SIGN, Body
from synthvlp.generation.phantom.findings import LATERAL, ONE_SIDED, Drawer, Effect, _lateral_fraction, _merge, sides_of
from synthvlp.generation.phantom.scene import Finding
from synthvlp.generation.phantom.shapes import (
    band, distance, ellipse, falloff, fraction, polyline_distance, power, ramp, smooth_noise,
)  # fmt: skip


def draw(finding: Finding, body: Body, rng: np.random.Generator) -> Effect:
    """The effect of one finding; lateral findings on both sides are merged into one effect and one mask."""
    drawer = _DRAWERS[finding.kind]
    if finding.kind in ONE_SIDED:
        side = finding.laterality if finding.laterality in ("left", "right") else ONE_SIDED[finding.kind]
        return drawer(body, side, finding.severity, rng)
    if finding.kind not in LATERAL:
        return drawer(body, "", finding.severity, rng)
    effects = [drawer(body, side, finding.severity, rng) for side in sides_of(finding, rng)]
    return effects[0] if len(effects) == 1 else _merge(effects)


def _effusion(body: Body, side: str, severity: int, rng: np.random.Generator) -> Effect:
    """Dependent fluid with a meniscus climbing the lateral wall; the costophrenic angle fills (blunts)."""
    a, grid = body.anatomy, body.grid
    depth = (0.1, 0.25, 0.45)[severity] + 0.12 * rng.random()
    level = a.base[side] - depth * (a.base[side] - a.apex)
    surface = level - (0.05 + 0.04 * rng.random()) * _lateral_fraction(body, side) ** 2
    fluid = body.lungs[side] * ramp(grid.y - surface, grid.pixel)
    return Effect(shape=fluid, opacify=0.95 * fluid, density=0.45 * a.density["organ"] * fluid, no_markings=fluid)


def _pneumothorax(body: Body, side: str, severity: int, rng: np.random.Generator) -> Effect:
    """Air between the chest wall and a collapsed lung: lucent, without markings, edged by a thin pleural line."""
    a = body.anatomy
    shrink = (0.02, 0.045, 0.08)[severity] + 0.025 * rng.random()
    inner = body.lung(side, shrink)
    rim = np.clip(body.lungs[side] - inner, 0.0, 1.0)
    line = 4.0 * inner * (1.0 - inner) * body.lungs[side]
    return Effect(shape=rim, lucency=0.22 * a.density["body"] * rim, no_markings=rim, density=0.35 * a.density["body"] * line)


def _consolidation(body: Body, side: str, severity: int, rng: np.random.Generator, bronchograms: bool = True) -> Effect:
    """Lobar (bounded by a fissure) or patchy airspace density with air bronchograms branching from the hilum."""
    a, grid = body.anatomy, body.grid
    size = grid.shape[0]
    edge = smooth_noise(rng, size, 10) * 0.012
    lung = body.lungs[side]
    height = a.base[side] - a.apex
    if rng.random() < 0.5:  # lobar
        u = _lateral_fraction(body, side)
        if rng.random() < 0.6:
            region = ramp(grid.y - (a.apex + height * (0.4 + 0.28 * u)) + edge, grid.pixel)
        else:
            region = ramp(a.apex + height * (0.42 - 0.1 * u) - grid.y + edge, grid.pixel)
    else:  # patchy
        cy, cx = body.lung_point(side, 0.3 + 0.4 * rng.random(), 0.35 + 0.4 * rng.random())
        radius = (0.06, 0.08, 0.11)[severity] * (1.0 + 0.35 * smooth_noise(rng, size, 9))  # ragged edge
        region = ramp(radius - distance(grid.y - cy, (grid.x - cx) * 1.2), grid.pixel)
    region = region * lung
    opacify = 0.9 * region
    if bronchograms:
        hy, hx = a.hilum(side)
        theta = np.arctan2(grid.y - hy, np.abs(grid.x - hx))
        tubes = power(0.5 + 0.5 * np.cos(theta * 28.0 + 3.0 * smooth_noise(rng, size, 6)), 40.0)
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
    a, grid = body.anatomy, body.grid
    sigma = 0.09 + 0.03 * severity + 0.02 * rng.random()
    lung = np.maximum(body.lungs["right"], body.lungs["left"])
    radius2 = np.minimum(*(((grid.y - a.hilum(s)[0]) ** 2 + (grid.x - a.hilum(s)[1]) ** 2) for s in ("right", "left")))
    haze = lung * falloff(radius2, sigma)
    v = np.clip((grid.y - a.apex) / a.height, 0.0, 1.0)
    lateral = np.maximum(_lateral_fraction(body, "right"), _lateral_fraction(body, "left"))
    basal = lung * ramp((lateral - 0.8) * a.half_width, grid.pixel) * ramp((v - 0.6) * a.height, grid.pixel)
    period = 0.016 + 0.006 * rng.random()
    lines = band(period * fraction(grid.y / period) - period / 2, max(0.0025, grid.pixel * 0.6), grid.pixel) * basal
    shape = np.maximum(ramp((haze - 0.35) * sigma, grid.pixel), basal)
    return Effect(shape=shape, opacify=0.6 * haze, density=a.density["organ"] * (0.15 * haze + 0.25 * lines))


def _atelectasis(body: Body, side: str, severity: int, rng: np.random.Generator) -> Effect:
    """Plate-like (discoid) band at the base; the volume loss raised this hemidiaphragm in ``draw_anatomy``."""
    a, grid = body.anatomy, body.grid
    cy, cx = body.lung_point(side, 0.5, 0.62 + 0.12 * rng.random())
    slope = 0.3 * (rng.random() - 0.5)
    thickness = 0.006 + 0.004 * severity + grid.pixel * 0.5
    length = 0.4 * (a.half_width - a.medial[side])
    plate = band(grid.y - cy - slope * (grid.x - cx), thickness, grid.pixel) * ramp(length - np.abs(grid.x - cx), grid.pixel)
    plate = plate * body.lungs[side]
    return Effect(shape=plate, opacify=0.9 * plate, density=0.25 * a.density["organ"] * plate, no_markings=plate)


def _round(body: Body, side: str, radius: float, rng: np.random.Generator) -> Effect:
    a, grid = body.anatomy, body.grid
    radius = max(radius, 2.5 * grid.pixel)
    cy, cx = body.lung_point(side, 0.3 + 0.4 * rng.random(), 0.2 + 0.5 * rng.random())
    disk = ellipse(grid, cy, cx, radius, radius * (0.85 + 0.3 * rng.random()))
    return Effect(shape=disk, opacify=0.8 * disk, density=0.35 * a.density["organ"] * disk)


def _nodule(body: Body, side: str, severity: int, rng: np.random.Generator) -> Effect:
    """A round density under 3 cm (here under ~0.03 of the image side)."""
    return _round(body, side, 0.013 + 0.006 * severity + 0.008 * rng.random(), rng)


def _mass(body: Body, side: str, severity: int, rng: np.random.Generator) -> Effect:
    """A round density over 3 cm."""
    return _round(body, side, 0.045 + 0.012 * severity + 0.02 * rng.random(), rng)


def _emphysema(body: Body, side: str, severity: int, rng: np.random.Generator) -> Effect:
    """Hyperinflated, hyperlucent lungs with sparse markings; the flat low diaphragm is in ``draw_anatomy``."""
    lung = np.maximum(body.lungs["right"], body.lungs["left"])
    return Effect(shape=lung, lucency=0.12 * body.anatomy.density["body"] * lung, no_markings=0.5 * lung)


def _fracture(body: Body, side: str, severity: int, rng: np.random.Generator) -> Effect:
    """A lucent break across one lateral posterior rib."""
    a, grid = body.anatomy, body.grid
    rib = 3 + int(rng.integers(max(a.ribs - 5, 1)))
    t = 0.55 + 0.3 * rng.random()
    x0 = a.mid + SIGN[side] * t * a.half_width
    rib_top = a.apex - 0.035
    span = a.base["left"] + 0.03 - rib_top
    y0 = rib_top + (0.35 * t**2 - 0.12 * t) * span + span * ((rib + 0.5) / a.ribs) ** (1 / 0.85)
    on_rib = (body.rib_index >= rib) & (body.rib_index < rib + 1)
    gap = band(grid.x - x0 - 0.2 * (grid.y - y0), 0.003 + grid.pixel * 0.5, grid.pixel) * on_rib
    site = ellipse(grid, y0, x0, 0.025, 0.025)
    return Effect(shape=site, rib_gap=gap * site)


_DRAWERS: dict[str, Drawer] = {
    **projection._DRAWERS,  # the devices and cardiomegaly; the rest drawn for this anatomy:
    "pleural effusion": _effusion,
    "pneumothorax": _pneumothorax,
    "consolidation": _consolidation,
    "pulmonary edema": _edema,
    "atelectasis": _atelectasis,
    "nodule": _nodule,
    "mass": _mass,
    "opacity": _opacity,
    "emphysema": _emphysema,
    "fracture": _fracture,
}
