"""A frontal chest as a projection: attenuation integrated front to back through a randomised thorax.

Every structure is a 3D solid whose thickness along the beam has a closed form (an elliptic cylinder for the
torso, neck and arms, ellipsoids for the heart, breasts and gastric bubble, tubes for bones and vessels), so
overlaps add as they do on film: lung air takes tissue away, the heart takes lung away (the retrocardiac lung
stays), ribs, spine and vessels add on top. Units: thickness in image widths (at zoom 1), attenuation = mu x
thickness, about 1 through the mediastinum.

Radiological convention: the patient's right is on the image's left, so the right lung has x < midline. The
patient's parameters come from ``patient.draw_anatomy``; the bones from ``skeleton``, the vessels from ``vessels``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthvlp.generation.phantom.patient import SIDES, SIGN, Anatomy, draw_anatomy, lung_width
from synthvlp.generation.phantom.shapes import (
    Grid, ellipse, make_grid, paste, polyline_distance, power, ramp, smooth_noise, tube,
)  # fmt: skip
from synthvlp.generation.phantom.skeleton import draw_skeleton
from synthvlp.generation.phantom.vessels import draw_vessels

HEART_TILT = 0.45  # radians between the heart's long axis and the horizontal

__all__ = ["SIDES", "SIGN", "Anatomy", "Body", "build_body", "draw_anatomy", "lung_field"]


@dataclass
class Body:
    """The anatomy projected on a grid: attenuation maps and the structures findings refer to."""

    grid: Grid
    anatomy: Anatomy
    lungs: dict[str, np.ndarray]  # soft lung fields in [0, 1]
    heart: np.ndarray  # soft heart silhouette in [0, 1]
    density: np.ndarray  # attenuation of tissue and bones other than the ribs, before lung air is taken away
    air: np.ndarray  # attenuation the lung (and tracheal, gastric) air takes away
    ribs: np.ndarray  # rib thickness (times ``density['bone']`` in the composite)
    rib_index: np.ndarray  # continuous posterior rib coordinate: rib k occupies k <= r < k + 1
    markings: np.ndarray  # vessel thickness inside the lungs (times ``density['vessel']``)

    def lung(self, side: str, shrink: float = 0.0) -> np.ndarray:
        return lung_field(self.grid, self.anatomy, side, shrink)

    def lung_point(self, side: str, u: float, v: float) -> tuple[float, float]:
        """(y, x) at fraction ``u`` from the medial to the lateral border and ``v`` from apex to angle."""
        a = self.anatomy
        y = a.apex + v * (a.base[side] - a.apex)
        width = lung_width(a, v)
        return y, a.mid + SIGN[side] * (a.medial[side] + u * (width - a.medial[side]))


def _lung_distance(grid: Grid, a: Anatomy, side: str, shrink: float, below: float = 0.0):
    """Window and signed distance (positive inside) to the lung outline: rounded apex, lateral wall widening
    downward, domed floor meeting the wall at a sharp angle. ``below`` extends the window under the floor."""
    inner, outer = a.mid + SIGN[side] * a.medial[side], a.mid + SIGN[side] * a.half_width
    window = grid.window(a.apex + shrink, a.base[side] + below, min(inner, outer), max(inner, outer))
    part = grid.crop(window)
    lateral = SIGN[side] * (part.x - a.mid)
    height = a.base[side] - a.apex
    v = np.clip((part.y - a.apex) * (1.0 / height), 0.0, 1.0)
    width = lung_width(a, v)
    medial = a.medial[side] + 0.01 * (1.0 - v) ** 2  # the superior mediastinum is a little wider
    u = (lateral - medial) / (width - medial)
    top = a.apex + 0.45 * height * (u - 0.4) ** 2 + shrink
    floor = a.base[side] - a.dome[side] * np.sin(np.pi * power(np.clip(u, 0.0, 1.0), 0.8))
    sides = np.minimum(lateral - medial, width - shrink - lateral)
    distance = np.minimum(sides, np.minimum(part.y - top, floor - part.y))
    return window, part, distance, sides, floor, v


def lung_field(grid: Grid, a: Anatomy, side: str, shrink: float = 0.0) -> np.ndarray:
    """Soft lung field in [0, 1]. ``shrink`` pulls the lateral wall and apex in (a collapsed lung under a
    pneumothorax) and leaves the medial border and floor exactly where they were. Computed only in the lung's box,
    outside which every distance is negative."""
    window, _, distance, *_ = _lung_distance(grid, a, side, shrink)
    return paste(grid.shape, window, ramp(distance, grid.pixel))


def _lung_air(grid: Grid, a: Anatomy, side: str) -> tuple[np.ndarray, np.ndarray]:
    """(soft field, air thickness) of one lung: deepest mid-lung and toward the bases, thinning to the chest
    wall and apex as a curved surface does, and continuing a little under the dome (the posterior recess)."""
    recess = 0.06
    window, part, distance, sides, floor, v = _lung_distance(grid, a, side, 0.0, below=recess)
    field = ramp(distance, grid.pixel)
    depth = 2.0 * a.depth * a.lung_share * (0.75 + 0.35 * v)
    inside = np.sqrt(np.clip(distance * (1.0 / 0.07), 0.0, 1.0))
    under = np.clip(1.0 - (part.y - floor) * (1.0 / recess), 0.0, 1.0) ** 2 * np.sqrt(np.clip(sides * (1.0 / 0.06), 0.0, 1.0))
    air = depth * np.maximum(inside, 0.3 * under * (part.y > floor))
    return paste(grid.shape, window, field), paste(grid.shape, window, air)


def _ellipsoid(grid: Grid, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    """Thickness profile of an ellipsoid seen end on: sqrt(1 - r^2) inside its outline, in its window."""
    window = grid.window(cy - ry, cy + ry, cx - rx, cx + rx)
    part = grid.crop(window)
    dy, dx = (part.y - cy) * (1.0 / ry), (part.x - cx) * (1.0 / rx)
    return paste(grid.shape, window, np.sqrt(np.clip(1.0 - dy * dy - dx * dx, 0.0, 1.0)))


def soft_tissue(grid: Grid, a: Anatomy) -> np.ndarray:
    """Thickness of the torso, neck, shoulders, arms and breasts along the beam (each part in its window)."""
    y, lateral = grid.y, np.abs(grid.x - a.mid)
    wall = a.wall + 0.03 * np.clip((y - a.apex) * (1.0 / a.height), 0.0, 1.0)
    cone = 0.55 + 0.45 * np.clip((y - a.shoulder) * (1.0 / (a.height + a.apex - a.shoulder)), 0.0, 1.0)  # the thorax deepens downward
    tissue = (2.0 * a.depth) * cone * np.sqrt(np.clip(1.0 - (lateral / wall) ** 2, 0.0, 1.0))
    # the shoulders' top: a trapezius line from the neck down to the shoulder, rounded off; the neck above it
    window = grid.window(-1.0, a.shoulder + 0.04, a.mid - a.wall - 0.1, a.mid + a.wall + 0.1)
    part, lat = grid.crop(window), lateral[window]
    s = np.clip((lat - a.neck) * (1.0 / (a.wall + 0.02 - a.neck)), 0.0, 1.0)
    top = a.shoulder - 0.13 * (1.0 - s) ** 1.5
    neck = (1.1 * a.neck) * np.sqrt(np.clip(1.0 - (lat * (1.0 / a.neck)) ** 2, 0.0, 1.0))
    tissue[window] = np.maximum(tissue[window] * np.sqrt(np.clip((part.y - top) * (1.0 / 0.035), 0.0, 1.0)), neck)
    for side in SIDES:  # the upper arms hang beside the chest, separated by an air gap below the axilla
        inner = a.wall - 0.02
        outer = a.wall + a.arm_gap + 1.8 * a.arm
        lo, hi = sorted((a.mid + SIGN[side] * inner, a.mid + SIGN[side] * outer))
        window = grid.window(a.shoulder - 0.06, 2.0, lo, hi)
        part, lat = grid.crop(window), lateral[window]
        gap = a.arm_gap * np.clip((part.y - a.shoulder - 0.04) * (1.0 / 0.12), 0.0, 1.0)
        off = (lat - (a.wall + gap + 0.7 * a.arm)) * (1.0 / a.arm)
        arm_top = a.shoulder + 0.02 + 0.08 * off * off
        arm = (2.0 * a.arm) * np.sqrt(np.clip(1.0 - off * off, 0.0, 1.0)) * np.sqrt(np.clip((part.y - arm_top) * (1.0 / 0.03), 0.0, 1.0))
        tissue[window] += arm * (SIGN[side] * (part.x - a.mid) > 0)
    if a.breast > 0:
        for side in SIDES:
            cy, cx = a.base[side] + 0.01, a.mid + SIGN[side] * 0.6 * a.half_width
            lump = _ellipsoid(grid, cy, cx, 0.85 * a.breast, a.breast)
            fade = np.clip(0.5 + (y - cy) * (1.0 / a.breast), 0.0, 1.0)  # blends into the chest above
            tissue += (0.45 * a.breast) * lump * fade
    return tissue


def build_body(a: Anatomy, size: int, rng: np.random.Generator) -> Body:
    """Project ``a`` at ``size`` pixels; ``rng`` supplies the pose (tilt, shift, magnification), the vessel
    tree and the lung texture."""
    pose_rng, vessel_rng, texture_rng, gas_rng = rng.spawn(4)
    angle, shift_y, shift_x = pose_rng.normal(0.0, [0.03, 0.035, 0.025])
    zoom = 0.88 + 0.27 * float(pose_rng.random())
    grid = make_grid(size, float(angle), (float(shift_y), float(shift_x)), zoom)
    mu = a.density["body"]

    lungs, air = {}, {}
    for side in SIDES:
        lungs[side], air[side] = _lung_air(grid, a, side)
    lung = np.maximum(lungs["right"], lungs["left"])

    heart, heart_depth = _heart(grid, a)
    knob = _ellipsoid(grid, a.apex + 0.2 * a.height, a.mid + a.medial["left"] + 0.004, 0.026, 0.024)
    lung_air = (air["right"] + air["left"]) * (1.0 - 0.9 * np.clip(heart_depth * 1.6, 0.0, 1.0)) * (1.0 - knob)

    carina = a.apex + 0.3 * a.height
    airway = _airway(grid, a, carina)
    stomach_rng, bowel_rng = gas_rng.spawn(2)
    stomach = _gastric_bubble(grid, a, stomach_rng) + _bowel_gas(grid, a, bowel_rng)
    fine, coarse = texture_rng.spawn(2)
    texture = lung * (0.06 * smooth_noise(fine, size, max(8, size // 4)) + 0.04 * smooth_noise(coarse, size, max(6, size // 16)))
    air_map = mu * (lung_air * (1.0 + texture) + airway + stomach)

    tissue = soft_tissue(grid, a)
    bones, ribs, rib_index = draw_skeleton(grid, a)
    markings = draw_vessels(grid, a, lung, vessel_rng)
    density = mu * tissue + a.density["bone"] * bones
    return Body(grid, a, lungs, heart, density.astype(np.float32), air_map.astype(np.float32), ribs, rib_index, markings)


def _heart(grid: Grid, a: Anatomy) -> tuple[np.ndarray, np.ndarray]:
    """(soft silhouette, thickness profile) of the heart: an ellipsoid whose long axis runs from the upper right
    down to the apex on the lower left, sitting on the left dome. Its width is exactly the cardiothoracic ratio
    times the thorax (the widest lung span), a third of it right of the midline."""
    half = a.ctr * a.half_width
    cos, sin = np.cos(HEART_TILT), np.sin(HEART_TILT)
    long, short = half, 0.85 * a.heart_height
    scale = half / np.sqrt((long * cos) ** 2 + (short * sin) ** 2)  # horizontal half extent becomes ``half``
    long, short = long * scale, short * scale
    reach_y = np.sqrt((long * sin) ** 2 + (short * cos) ** 2)
    cy = a.base["left"] - a.dome["left"] - 0.7 * reach_y
    cx = a.mid + 0.4 * half
    reach = grid.pixel * long / short  # the soft edge's reach past the outline along the long axis
    window = grid.window(cy - reach_y - reach, cy + reach_y + reach, cx - half - reach, cx + half + reach)
    part = grid.crop(window)
    dy, dx = part.y - cy, part.x - cx
    p = (dx * cos + dy * sin) * (1.0 / long)
    q = (dy * cos - dx * sin) * (1.0 / short)
    r = np.sqrt(p * p + q * q)
    edge = (1.0 - r) * short  # approximate distance to the outline, exact along the short axis
    silhouette = paste(grid.shape, window, ramp(edge, grid.pixel))
    depth = paste(grid.shape, window, np.sqrt(np.clip(1.0 - r * r, 0.0, 1.0)))
    return silhouette, depth


def _airway(grid: Grid, a: Anatomy, carina: float) -> np.ndarray:
    """Air thickness of the trachea (midline, down to the carina) and the two main bronchi toward the hila."""
    window = grid.window(-0.2, carina + 0.1, a.mid - 0.12, a.mid + 0.12)
    part = grid.crop(window)
    x0 = a.mid + 0.3 * a.rotation
    trachea = tube(part.x - x0, a.trachea) * ramp(carina - part.y, grid.pixel)
    out = 4.0 * a.trachea * trachea
    for side in SIDES:
        hy, hx = a.hilum(side)
        end = (carina + 0.55 * (hy - carina), x0 + 0.6 * (hx - x0))
        bronchus = tube(polyline_distance(part, [(carina - 0.01, x0), end]), 0.75 * a.trachea)
        out = np.maximum(out, 1.5 * a.trachea * bronchus)
    return paste(grid.shape, window, out)


def _gastric_bubble(grid: Grid, a: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Air in the stomach's fundus under the left dome: rounded top, flat fluid level below (upright film)."""
    u = rng.random(4).tolist()
    ry, rx = 0.012 + 0.02 * u[0], 0.025 + 0.03 * u[1]
    cy = a.base["left"] + 0.01 + 0.04 * u[2] + ry
    cx = a.mid + (0.5 + 0.25 * u[3]) * a.half_width
    bubble = _ellipsoid(grid, cy, cx, ry, rx) * ramp(cy + 0.3 * ry - grid.y, grid.pixel)
    return (0.6 * rx) * bubble


def _bowel_gas(grid: Grid, a: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Pockets of gas in the colon under the diaphragm, most often at the splenic flexure (upper left)."""
    out = np.zeros(grid.shape, dtype=np.float32)
    for _ in range(int(rng.integers(2, 9))):
        u = rng.random(5).tolist()
        left = u[0] < 0.65
        cy = a.base["left" if left else "right"] + 0.04 + 0.25 * u[1]
        cx = a.mid + (1.0 if left else -1.0) * a.half_width * (0.2 + 0.7 * u[2])
        r = 0.01 + 0.025 * u[3]
        out += (0.7 * r) * _ellipsoid(grid, cy, cx, r * (0.6 + 0.6 * u[4]), r)
    return out
