"""Each finding drawn where and how it appears on a frontal film, as an effect on the anatomy plus its extent.

A finding does not paint pixels: it says how much lung air it replaces (fluid, consolidation), what density it
adds (a nodule, a tube), what air it adds (pneumothorax) and where lung markings vanish. The composer applies
every effect to the anatomy, so overlapping findings combine physically, and ``Effect.shape`` is the exact
extent drawn: the finding's mask is where it is at least one half.

The public pieces (where fluid, a collapsed lung, an airspace, a plate, a round lesion or a rib break lie) are
the geometry both phantoms share: the classic phantom (``classic.findings``) draws them on its own ``Body``,
which has the same attributes, with its own densities.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from synthvlp.generation.phantom.anatomy import SIGN, Body
from synthvlp.generation.phantom.scene import Finding
from synthvlp.generation.phantom.skeleton import rib_centre
from synthvlp.generation.phantom.shapes import (
    band, distance, ellipse, falloff, fraction, paste, polyline_distance, ramp, smooth_noise,
)  # fmt: skip

LATERAL = frozenset({
    "pleural effusion", "pneumothorax", "consolidation", "atelectasis", "nodule", "mass", "opacity", "fracture",
    "central venous catheter", "chest tube",
})  # fmt: skip
"""Kinds drawn on one side (or both when the plan says bilateral); the rest are central or diffuse."""

ONE_SIDED: dict[str, str] = {"pacemaker": "left"}
"""Kinds drawn on the side the plan states, else on their usual side (a pacemaker generator sits left)."""


@dataclass
class Effect:
    shape: np.ndarray  # soft extent in [0, 1]
    opacify: np.ndarray | float = 0.0  # share of lung air replaced
    density: np.ndarray | float = 0.0  # attenuation added
    lucency: np.ndarray | float = 0.0  # air depth added
    no_markings: np.ndarray | float = 0.0  # share of lung markings removed
    rib_gap: np.ndarray | float = 0.0  # share of rib density removed


Drawer = Callable[[Body, str, int, np.random.Generator], Effect]
"""Draws one finding of a severity grade on a side ("" for central and diffuse kinds) of a body."""


def sides_of(finding: Finding, rng: np.random.Generator) -> list[str]:
    """The sides a lateral finding is drawn on; an unstated side is drawn at random."""
    if finding.laterality == "bilateral":
        return ["right", "left"]
    if finding.laterality in ("left", "right"):
        return [finding.laterality]
    return [("right", "left")[int(rng.integers(2))]]


def draw(finding: Finding, body: Body, rng: np.random.Generator) -> Effect:
    """The effect of one finding, cut to its mask; lateral findings on both sides are merged into one effect."""
    return _confine(effect_of(finding, body, rng, _DRAWERS))


def effect_of(finding: Finding, body: Body, rng: np.random.Generator, drawers: dict[str, Drawer]) -> Effect:
    """The effect ``drawers`` draw for one finding on its side(s): both sides merged into one effect and one
    mask. ``body`` is either renderer's (the classic phantom draws with its own ``drawers``)."""
    drawer = drawers[finding.kind]
    if finding.kind in ONE_SIDED:
        side = finding.laterality if finding.laterality in ("left", "right") else ONE_SIDED[finding.kind]
        return drawer(body, side, finding.severity, rng)
    if finding.kind not in LATERAL:
        return drawer(body, "", finding.severity, rng)
    effects = [drawer(body, side, finding.severity, rng) for side in sides_of(finding, rng)]
    return effects[0] if len(effects) == 1 else _merge(effects)


FIELDS = ("shape", "opacify", "density", "lucency", "no_markings", "rib_gap")


def _merge(effects: list[Effect]) -> Effect:
    return Effect(**{name: np.maximum(getattr(effects[0], name), getattr(effects[1], name)) for name in FIELDS})


def _confine(effect: Effect) -> Effect:
    """``effect`` with everything it does cut to its mask (shape >= 0.5) grown by one pixel (3 x 3).

    A soft edge is one pixel wide, but where two soft maps multiply (a lung field's corner times a fluid level)
    or a shape thins to a sliver, values under one half trail several pixels past the mask; cutting them keeps
    the documented halo (``appearance.halo``) true by construction, at the cost of a few faint edge pixels.
    """
    mask = np.asarray(effect.shape) >= 0.5
    near = mask.copy()
    near[1:] |= mask[:-1]
    near[:-1] |= mask[1:]
    grown = near.copy()
    grown[:, 1:] |= near[:, :-1]
    grown[:, :-1] |= near[:, 1:]
    keep = grown.astype(np.float32)
    for name in FIELDS[1:]:
        value = getattr(effect, name)
        if isinstance(value, np.ndarray) or value:
            setattr(effect, name, (keep * value).astype(np.float32, copy=False))
    return effect


def _lateral_fraction(body: Body, side: str) -> np.ndarray:
    a = body.anatomy
    lateral = SIGN[side] * (body.grid.x - a.mid)
    return np.clip((lateral - a.medial[side]) / (a.half_width - a.medial[side]), 0.0, 1.0)


def pleural_fluid(body: Body, side: str, severity: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """Where dependent pleural fluid of ``severity`` lies on ``side`` (a meniscus climbing the lateral wall,
    filling the costophrenic angle), its surface's y and its depth as a share of the lung's height."""
    a, grid = body.anatomy, body.grid
    depth = (0.1, 0.25, 0.45)[severity] + 0.12 * rng.random()
    level = a.base[side] - depth * (a.base[side] - a.apex)
    surface = level - (0.05 + 0.04 * rng.random()) * _lateral_fraction(body, side) ** 2
    return body.lungs[side] * ramp(grid.y - surface, grid.pixel), surface, depth


def _effusion(body: Body, side: str, severity: int, rng: np.random.Generator) -> Effect:
    """Fluid layering in the dependent pleural space: a meniscus climbing the lateral wall, denser with depth
    (more fluid along the beam), blunting the costophrenic angle and hiding the hemidiaphragm."""
    a, grid = body.anatomy, body.grid
    region, surface, depth = pleural_fluid(body, side, severity, rng)
    layer = region * np.sqrt(np.clip((grid.y - surface) * (1.0 / (0.03 + 0.15 * depth * a.height)), 0.05, 1.0))
    return Effect(shape=region, opacify=0.95 * layer, density=0.8 * a.density["organ"] * layer, no_markings=layer)


def _pneumothorax(body: Body, side: str, severity: int, rng: np.random.Generator) -> Effect:
    """Air between the chest wall and a collapsed lung: a little more lucent than lung and without markings,
    edged by a thin white visceral pleural line."""
    inner, rim = collapsed_lung(body, side, severity, rng)
    line = 4.0 * inner * (1.0 - inner) * np.clip(2.0 * rim, 0.0, 1.0)  # the collapsed lung's edge, beside the rim
    mu = body.anatomy.density["body"]
    return Effect(shape=rim, lucency=(0.06 + 0.03 * severity) * mu * rim, no_markings=rim, density=0.03 * mu * line)


def collapsed_lung(body: Body, side: str, severity: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The lung on ``side`` pulled in from the chest wall by a pneumothorax of ``severity``, and the air rim left."""
    shrink = (0.02, 0.045, 0.08)[severity] + 0.025 * rng.random()
    inner = body.lung(side, shrink)
    return inner, np.clip(body.lungs[side] - inner, 0.0, 1.0)


def _cardiomegaly(body: Body, side: str, severity: int, rng: np.random.Generator) -> Effect:
    """The heart itself: its width was drawn from the enlarged range (CTR > 0.5) in ``draw_anatomy``."""
    return Effect(shape=body.heart)


def airspace(body: Body, side: str, severity: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Lobar (bounded by a fissure) or patchy airspace filling on ``side``, before the lung mask: its extent, and
    how full it is (a patch's fades over ``soft`` to 0 on the outline, so nothing is drawn outside the mask)."""
    a, grid = body.anatomy, body.grid
    size = grid.shape[0]
    edge = smooth_noise(rng, size, 10) * 0.012
    height = a.base[side] - a.apex
    soft = 0.015  # the airspace edge fades over this distance, except along a fissure
    if rng.random() < 0.5:  # lobar
        u = _lateral_fraction(body, side)
        if rng.random() < 0.6:
            region = ramp(grid.y - (a.apex + height * (0.4 + 0.28 * u)) + edge, grid.pixel)
        else:
            region = ramp(a.apex + height * (0.42 - 0.1 * u) - grid.y + edge, grid.pixel)
        return region, region
    cy, cx = body.lung_point(side, 0.3 + 0.4 * rng.random(), 0.35 + 0.4 * rng.random())
    radius = (0.06, 0.08, 0.11)[severity] * (1.0 + 0.35 * smooth_noise(rng, size, 9))  # ragged edge
    reach = radius - distance(grid.y - cy, (grid.x - cx) * 1.2)
    return ramp(reach, grid.pixel), np.clip(reach * (1.0 / soft), 0.0, 1.0)


def _consolidation(body: Body, side: str, severity: int, rng: np.random.Generator, bronchograms: bool = True) -> Effect:
    """Lobar (bounded by a fissure) or patchy airspace filling with a fluffy edge and uneven density; air
    bronchograms follow the vascular tree (bronchi run beside the arteries) as dark branching lines."""
    a, size = body.anatomy, body.grid.shape[0]
    region, fill = airspace(body, side, severity, rng)
    lung = body.lungs[side]
    region = region * lung
    patchy = np.clip(0.8 + 0.25 * smooth_noise(rng, size, max(8, size // 10)), 0.4, 1.0)
    fill = fill * lung * patchy
    opacify = 0.8 * fill
    if bronchograms:
        airways = np.clip(body.markings * (1.0 / 0.005), 0.0, 1.0)
        opacify = opacify * (1.0 - 0.55 * airways)
    return Effect(shape=region, opacify=opacify, density=0.3 * a.density["organ"] * fill, no_markings=fill)


def _opacity(body: Body, side: str, severity: int, rng: np.random.Generator) -> Effect:
    """A generic patchy density: also what an entity without its own drawing becomes."""
    effect = _consolidation(body, side, severity, rng, bronchograms=False)
    effect.opacify = 0.6 * effect.opacify
    effect.density = 0.6 * effect.density
    return effect


def edema_pattern(body: Body, severity: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilateral perihilar (bat-wing) haze and Kerley B lines at the lateral bases: the haze, the lines and the
    extent of both."""
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
    return haze, lines, np.maximum(ramp((haze - 0.35) * sigma, grid.pixel), basal)


def _edema(body: Body, side: str, severity: int, rng: np.random.Generator) -> Effect:
    """Bilateral perihilar (bat-wing) haze with Kerley B lines at the lateral bases."""
    haze, lines, shape = edema_pattern(body, severity, rng)
    fluid = np.clip((haze - 0.35) * (1.0 / 0.65), 0.0, 1.0) ** 0.7  # 0 on the mask's outline: drawn only inside it
    return Effect(shape=shape, opacify=0.7 * fluid, density=body.anatomy.density["organ"] * (0.2 * fluid + 0.25 * lines))


def discoid_plate(body: Body, side: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Plate-like (discoid) atelectasis: a band across the lung base on ``side``."""
    a, grid = body.anatomy, body.grid
    cy, cx = body.lung_point(side, 0.5, 0.62 + 0.12 * rng.random())
    slope = 0.3 * (rng.random() - 0.5)
    thickness = 0.006 + 0.004 * severity + grid.pixel * 0.5
    length = 0.4 * (a.half_width - a.medial[side])
    plate = band(grid.y - cy - slope * (grid.x - cx), thickness, grid.pixel) * ramp(length - np.abs(grid.x - cx), grid.pixel)
    return plate * body.lungs[side]


def _atelectasis(body: Body, side: str, severity: int, rng: np.random.Generator) -> Effect:
    """Plate-like (discoid) band at the base; the volume loss raised this hemidiaphragm in ``draw_anatomy``."""
    plate = discoid_plate(body, side, severity, rng)
    return Effect(shape=plate, opacify=0.8 * plate, density=0.3 * body.anatomy.density["organ"] * plate, no_markings=plate)


def round_outline(body: Body, side: str, radius: float, rng: np.random.Generator) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """A round lesion's extent in the lung on ``side``, about ``radius`` tall (at least 2.5 pixels), and its
    centre and radii (cy, cx, ry, rx)."""
    grid = body.grid
    radius = max(radius, 2.5 * grid.pixel)
    cy, cx = body.lung_point(side, 0.3 + 0.4 * rng.random(), 0.2 + 0.5 * rng.random())
    rx = radius * (0.85 + 0.3 * rng.random())
    return ellipse(grid, cy, cx, radius, rx), (cy, cx, radius, rx)


def _round(body: Body, side: str, radius: float, rng: np.random.Generator) -> Effect:
    """A sphere in the lung: its shadow is its thickness along the beam, so it can sit over a rib and both show.
    Drawn 2.5x as dense as soft tissue: a conspicuity choice (physics says about 1x), so that a nodule of two
    pixels at the quickstart's 64 px stays learnable."""
    a, grid = body.anatomy, body.grid
    disk, (cy, cx, radius, rx) = round_outline(body, side, radius, rng)
    window = grid.window(cy - radius, cy + radius, cx - rx, cx + rx)
    part = grid.crop(window)
    r2 = ((part.y - cy) / radius) ** 2 + ((part.x - cx) / rx) ** 2
    thickness = paste(grid.shape, window, (2.0 * radius) * np.sqrt(np.clip(1.0 - r2, 0.0, 1.0)))
    thickness = np.maximum(thickness, radius * disk)  # at least a visible edge at small sizes
    return Effect(shape=disk, density=2.5 * a.density["body"] * thickness)


RADIUS = {"nodule": (0.013, 0.006, 0.008), "mass": (0.045, 0.012, 0.02)}
"""A round lesion's radius (image sides) as (smallest, added per severity grade, random spread): a nodule is
under 3 cm (here under ~0.03 of the image side), a mass over."""


def round_lesion(kind: str, draw_round: Callable[[Any, str, float, np.random.Generator], Effect]) -> Drawer:
    """The drawer of a ``kind`` in ``RADIUS``: ``draw_round`` at a radius drawn for the finding's severity."""
    low, step, spread = RADIUS[kind]
    return lambda body, side, severity, rng: draw_round(body, side, low + step * severity + spread * rng.random(), rng)


def _emphysema(body: Body, side: str, severity: int, rng: np.random.Generator) -> Effect:
    """Hyperinflated, hyperlucent lungs with sparse markings; the flat low diaphragm is in ``draw_anatomy``."""
    lung = np.maximum(body.lungs["right"], body.lungs["left"])
    return Effect(shape=lung, lucency=0.04 * body.anatomy.density["body"] * lung, no_markings=0.5 * lung)


def rib_fracture(centre: Callable[[Any, int, float], float]) -> Drawer:
    """The fracture drawer for ribs whose centre line ``centre(anatomy, rib, t)`` gives (y at lateral fraction
    ``t`` of rib ``rib``): a lucent break across one lateral posterior rib."""

    def fracture(body: Body, side: str, severity: int, rng: np.random.Generator) -> Effect:
        a, grid = body.anatomy, body.grid
        rib = 3 + int(rng.integers(max(a.ribs - 5, 1)))
        t = 0.55 + 0.3 * rng.random()
        x0 = a.mid + SIGN[side] * t * a.half_width
        y0 = centre(a, rib, t)
        on_rib = (body.rib_index >= rib) & (body.rib_index < rib + 1)
        gap = band(grid.x - x0 - 0.2 * (grid.y - y0), 0.003 + grid.pixel * 0.5, grid.pixel) * on_rib
        site = ellipse(grid, y0, x0, 0.025, 0.025)
        return Effect(shape=site, rib_gap=gap * site)

    return fracture


def _device(body: Body, points: list[tuple[float, float]], half_width: float, opacity: float) -> Effect:
    grid = body.grid
    half_width = max(half_width, 0.6 * grid.pixel)
    distance = polyline_distance(grid, points)
    return Effect(shape=ramp(2.5 * half_width - distance, grid.pixel), density=opacity * band(distance, half_width, grid.pixel))


def _et_tube(body: Body, side: str, severity: int, rng: np.random.Generator) -> Effect:
    """Endotracheal tube: down the trachea, tip a few centimetres above the carina."""
    a = body.anatomy
    x = a.mid + 0.004 * (rng.random() - 0.5)
    return _device(body, [(0.0, x), (a.apex + (0.14 + 0.08 * rng.random()) * a.height, x)], 0.006, 0.5 * a.density["organ"])


def _enteric_tube(body: Body, side: str, severity: int, rng: np.random.Generator) -> Effect:
    """Enteric tube: down the oesophagus, through the left hemidiaphragm, tip in the stomach."""
    a = body.anatomy
    tip = (a.base["left"] + 0.04 + 0.03 * rng.random(), a.mid + (0.3 + 0.2 * rng.random()) * a.half_width)
    points = [(0.0, a.mid + 0.012), (a.apex + 0.35 * a.height, a.mid + 0.02), (a.base["left"] - 0.02, a.mid + 0.06), tip]
    return _device(body, points, 0.004, 0.45 * a.density["organ"])


def _central_line(body: Body, side: str, severity: int, rng: np.random.Generator) -> Effect:
    """Central venous catheter: under the clavicle, medially into the superior vena cava (right of midline)."""
    a = body.anatomy
    s = SIGN[side]
    svc = a.mid - a.medial["right"] * 0.6
    points = [
        (a.apex - 0.02, a.mid + s * 0.6 * a.half_width),
        (a.apex + 0.04, a.mid + s * 0.3 * a.half_width),
        (a.apex + 0.09, svc),
        (a.apex + (0.3 + 0.1 * rng.random()) * a.height, svc),
    ]
    return _device(body, points, 0.003, 0.45 * a.density["organ"])


def _chest_tube(body: Body, side: str, severity: int, rng: np.random.Generator) -> Effect:
    """Chest tube: enters the lateral lower chest wall and curves up toward the apex."""
    a = body.anatomy
    s = SIGN[side]
    points = [
        (a.base[side] - 0.06, a.mid + s * (a.half_width + 0.06)),
        (a.base[side] - 0.12, a.mid + s * 0.85 * a.half_width),
        (a.apex + (0.1 + 0.1 * rng.random()), a.mid + s * 0.5 * a.half_width),
    ]
    return _device(body, points, 0.006, 0.4 * a.density["organ"])


def _pacemaker(body: Body, side: str, severity: int, rng: np.random.Generator) -> Effect:
    """Pacemaker: a dense generator in the upper chest on ``side`` and a lead through the superior vena cava
    into the right ventricle."""
    a, grid = body.anatomy, body.grid
    gy, gx = a.apex + 0.03 + 0.03 * rng.random(), a.mid + SIGN[side] * (0.55 + 0.15 * rng.random()) * a.half_width
    lead = _device(body, [(gy, gx), (a.apex + 0.1, a.mid + SIGN[side] * 0.05), (a.apex + 0.14, a.mid - 0.03), (a.base["left"] - 0.08, a.mid + 0.08)], 0.003, 0.5 * a.density["organ"])
    generator = ellipse(grid, gy, gx, 0.03, 0.04)
    return Effect(shape=np.maximum(lead.shape, generator), density=np.maximum(lead.density, 1.2 * a.density["organ"] * generator))


def _sternotomy(body: Body, side: str, severity: int, rng: np.random.Generator) -> Effect:
    """Sternotomy wires: small dense loops stacked on the midline."""
    a, grid = body.anatomy, body.grid
    loops = np.zeros(grid.shape, dtype=np.float32)
    for level in np.linspace(0.18, 0.6, 5 + int(rng.integers(3))):
        loops = np.maximum(loops, ellipse(grid, a.apex + level * a.height, a.mid + 0.004 * rng.standard_normal(), 0.007, 0.014))
    return Effect(shape=loops, density=0.8 * a.density["organ"] * loops)


_DRAWERS: dict[str, Drawer] = {
    "pleural effusion": _effusion,
    "pneumothorax": _pneumothorax,
    "cardiomegaly": _cardiomegaly,
    "consolidation": _consolidation,
    "pulmonary edema": _edema,
    "atelectasis": _atelectasis,
    "nodule": round_lesion("nodule", _round),
    "mass": round_lesion("mass", _round),
    "opacity": _opacity,
    "emphysema": _emphysema,
    "fracture": rib_fracture(rib_centre),
    "endotracheal tube": _et_tube,
    "enteric tube": _enteric_tube,
    "central venous catheter": _central_line,
    "chest tube": _chest_tube,
    "pacemaker": _pacemaker,
    "sternotomy wires": _sternotomy,
}
