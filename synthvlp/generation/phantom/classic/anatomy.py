"""A frontal chest from randomised parametric shapes: lungs, heart, mediastinum, diaphragm, bones, soft tissue.

Radiological convention: the patient's right is on the image's left, so the right lung has x < midline. The
anatomy is drawn from a fixed number of random draws whatever the findings, so the same sample rendered with
and without a finding differs only where that finding (and the anatomy it implies) is drawn. Findings that
change the anatomy itself (cardiomegaly, hyperinflation, volume loss) act through ``draw_anatomy``'s scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthvlp.generation.phantom.frame import Frame, FramePriors, draw_frame
from synthvlp.generation.phantom.patient import SIDES, SIGN  # one convention for both renderers
from synthvlp.generation.phantom.scene import Scene
from synthvlp.generation.phantom.shapes import (
    Grid, band, distance, ellipse, falloff, fraction, make_grid, paste, power, ramp, smooth_noise,
)  # fmt: skip


@dataclass(frozen=True)
class Anatomy(Frame):
    """One patient's shape parameters (``Frame``) and tissue densities."""

    vessel_count: float  # angular frequency of the lung markings
    density: dict[str, float]  # per-tissue attenuation (the intensity mixture)

    def hilum(self, side: str) -> tuple[float, float]:
        return self.apex + 0.47 * self.height, self.mid + SIGN[side] * (self.medial[side] + 0.04)


PRIORS = FramePriors(
    level=(0.72, 0.08), dome=(0.05, 0.04), medial=(0.045, 0.055, 0.02), apex=(0.1, 0.06), half_width=(0.33, 0.07),
    heart_height=(0.12, 0.035), body_margin=(0.03, 0.07),
)
"""The classic phantom's frame ranges."""


def draw_anatomy(scene: Scene, rng: np.random.Generator) -> Anatomy:
    """Random anatomy for ``scene``: size, inspiration, habitus and exposure vary per sample."""
    u = rng.random(19).tolist()  # Python floats: a NumPy float64 scalar would promote every float32 map
    emphysema = scene.has("emphysema")
    return Anatomy(
        **draw_frame(scene, u, PRIORS),
        vessel_count=14.0 + 8.0 * u[14],
        density={
            "body": 0.28 + 0.08 * u[15],
            "organ": 0.5 + 0.1 * u[16],  # heart, mediastinum, abdomen (water)
            "bone": 0.08 + 0.07 * u[17],
            "air": 0.62 + (0.12 if emphysema else 0.0),
            "vessel": 0.04 + 0.04 * u[18],
        },
    )


@dataclass
class Body:
    """The anatomy drawn on a grid: tissue density, air depth and the structures findings refer to."""

    grid: Grid
    anatomy: Anatomy
    lungs: dict[str, np.ndarray]
    heart: np.ndarray
    density: np.ndarray  # soft tissue and organs, without air and ribs
    air: np.ndarray  # air depth (subtracted), lungs, trachea and stomach
    ribs: np.ndarray  # posterior rib bands in [0, 1]
    rib_index: np.ndarray  # continuous rib coordinate: rib k occupies k <= r < k + 1
    markings: np.ndarray  # lung vessel markings in [0, 1], inside the lungs

    def lung(self, side: str, shrink: float = 0.0) -> np.ndarray:
        return lung_field(self.grid, self.anatomy, side, shrink)

    def lung_point(self, side: str, u: float, v: float) -> tuple[float, float]:
        """(y, x) at fraction ``u`` from the medial to the lateral border and ``v`` from apex to angle."""
        a = self.anatomy
        y = a.apex + v * (a.base[side] - a.apex)
        width = a.half_width * (0.6 + 0.4 * np.sqrt(v))
        return y, a.mid + SIGN[side] * (a.medial[side] + u * (width - a.medial[side]))


def lung_field(grid: Grid, a: Anatomy, side: str, shrink: float = 0.0) -> np.ndarray:
    """Soft lung: rounded apex, lateral wall widening downward, domed floor meeting the wall at a sharp angle.

    ``shrink`` pulls the lateral wall and apex in (a collapsed lung under a pneumothorax). Computed only in the
    lung's box (apex to angle, medial border to widest wall), outside which every distance below is negative.
    """
    inner, outer = a.mid + SIGN[side] * a.medial[side], a.mid + SIGN[side] * a.half_width
    window = grid.window(a.apex + shrink, a.base[side], min(inner, outer), max(inner, outer))
    part = grid.crop(window)
    lateral = SIGN[side] * (part.x - a.mid)
    height = a.base[side] - a.apex
    v = np.clip((part.y - a.apex) * (1.0 / height), 0.0, 1.0)
    width = a.half_width * (0.6 + 0.4 * np.sqrt(v)) - shrink
    u = (lateral - a.medial[side]) / (width - a.medial[side])
    top = a.apex + shrink + 0.6 * height * (u - 0.3) ** 2
    floor = a.base[side] - a.dome[side] * np.sin(np.pi * power(np.clip(u, 0.0, 1.0), 0.8))
    distance = np.minimum(np.minimum(lateral - a.medial[side], width - lateral), np.minimum(part.y - top, floor - part.y))
    return paste(grid.shape, window, ramp(distance, grid.pixel))


def build_body(a: Anatomy, size: int, rng: np.random.Generator) -> Body:
    """Draw ``a`` at ``size`` pixels; ``rng`` supplies the pose and the vessel texture."""
    angle, shift_y, shift_x = rng.normal(0.0, [0.03, 0.015, 0.01])
    grid = make_grid(size, float(angle), (float(shift_y), float(shift_x)))
    texture = smooth_noise(rng, size, 12)
    y, x, px = grid.y, grid.x, grid.pixel
    lateral = np.abs(x - a.mid)
    right = (x < a.mid).astype(np.float32)
    lungs = {side: lung_field(grid, a, side) for side in SIDES}
    lung = np.maximum(lungs["right"], lungs["left"])

    base_at, dome_at, medial_at = (_per_side(right, value) for value in (a.base, a.dome, a.medial))
    u = np.clip((lateral - medial_at) / (a.half_width - medial_at), 0.0, 1.0)

    neck = 0.09
    shoulder = a.apex - 0.12 + 0.05 * (lateral / a.half_width) ** 2
    inside = ramp(np.minimum(a.half_width + a.body_margin - lateral, np.maximum(y - shoulder, neck - lateral)), px)
    body = inside * (0.75 + 0.25 * np.cos(np.clip(lateral / (a.half_width + a.body_margin), 0, 1) * 1.3))
    abdomen = ramp(grid.y - (base_at - dome_at * np.sin(np.pi * power(u, 0.8))), px) * inside

    width = a.ctr * 2.0 * a.half_width
    heart_y = a.base["left"] - 0.3 * a.dome["left"] - 0.7 * a.heart_height
    heart = ellipse(grid, heart_y, a.mid + 0.18 * width, a.heart_height, width / 2) * (1.0 - abdomen)
    # thin or small structures are computed in their own windows (``Grid.window``) and are exactly 0 elsewhere
    w = grid.window(-1.0, heart_y + 0.02, a.mid - max(a.medial.values()), a.mid + max(a.medial.values()))
    mediastinum = paste(grid.shape, w, ramp(medial_at[w] - lateral[w], px) * ramp(heart_y + 0.02 - y[w], px))
    knob = ellipse(grid, a.apex + 0.22 * a.height, a.mid + a.medial["left"], 0.028, 0.026)
    w = grid.window(-1.0, a.apex + 0.28 * a.height, a.mid - 0.011, a.mid + 0.011)
    trachea = paste(grid.shape, w, band(x[w] - a.mid, 0.011, px) * ramp(a.apex + 0.28 * a.height - y[w], px))
    stomach = ellipse(grid, a.base["left"] + 0.04, a.mid + 0.45 * a.half_width, 0.03, 0.06) * abdomen

    t = lateral / a.half_width
    rib_top, rib_span = _rib_frame(a)
    rib_index = a.ribs * power(np.clip((y - rib_top - (0.35 * t**2 - 0.12 * t) * rib_span) / rib_span, 0.0, 1.0), 0.85)
    within_rib = (0.22 - np.abs(fraction(rib_index) - 0.5)) * rib_span / a.ribs
    ribs = ramp(within_rib, px) * ramp(rib_index - 0.3, px) * ramp(a.ribs - 0.3 - rib_index, px) * ramp((0.56 - np.abs(t - 0.58)) * a.half_width, px) * (1.15 - 0.45 * t) * (1.0 - 0.7 * abdomen)
    w = grid.window(a.apex - 0.06, a.apex + 0.03, a.mid - 0.8 * a.half_width, a.mid + 0.8 * a.half_width)  # t in [0.08, 0.8]
    tw = t[w]
    clavicles = band(y[w] - (a.apex + 0.02 - 0.1 * tw + 0.03 * tw**2), 0.014, px) * ramp((tw - 0.08) * a.half_width, px) * ramp((0.8 - tw) * a.half_width, px)
    clavicles = paste(grid.shape, w, clavicles)
    w = grid.window(-1.0, 2.0, a.mid - 0.035, a.mid + 0.035)
    endplates = 1.0 - 0.35 * band(0.045 * fraction((y[w] - a.apex) / 0.045) - 0.0225, 0.004, px)
    spine = paste(grid.shape, w, band(x[w] - a.mid, 0.035, px) * endplates)

    w = grid.window(a.apex, max(a.base.values()), a.mid - a.half_width, a.mid + a.half_width)  # both lungs
    markings = paste(grid.shape, w, lung[w] * _markings(grid.crop(w), a, right[w], texture[w]))

    d = a.density
    organ = np.maximum(np.maximum(heart, 0.85 * mediastinum), np.maximum(abdomen, knob))
    density = d["body"] * body + d["organ"] * organ + 0.45 * d["bone"] * spine + 1.3 * d["bone"] * clavicles
    air = d["air"] * d["body"] * (lung * (1.0 - 0.75 * heart) * (0.85 + 0.3 * v_of(grid, a)) + 1.2 * trachea + 0.6 * stomach)
    return Body(grid, a, lungs, heart, density, air, ribs * body, rib_index, np.clip(markings, 0.0, 1.0))


def _rib_frame(a: Anatomy) -> tuple[float, float]:
    """The y where the posterior ribs start at the spine, and the span they fill down to the left base."""
    return a.apex - 0.035, a.base["left"] + 0.03 - (a.apex - 0.035)


def rib_centre(a: Anatomy, rib: int, t: float) -> float:
    """The y of rib ``rib``'s centre line at lateral fraction ``t`` of the half width (``build_body``'s ribs)."""
    rib_top, span = _rib_frame(a)
    return rib_top + (0.35 * t**2 - 0.12 * t) * span + span * ((rib + 0.5) / a.ribs) ** (1 / 0.85)


def _markings(grid: Grid, a: Anatomy, right: np.ndarray, texture: np.ndarray) -> np.ndarray:
    """Vessel markings before the lung mask: streaks fanning out from each hilum, fading with distance."""
    hy = _per_side(right, {side: a.hilum(side)[0] for side in SIDES})
    hx = _per_side(right, {side: a.hilum(side)[1] for side in SIDES})
    radius = distance(grid.y - hy, grid.x - hx)
    theta = np.arctan2(grid.y - hy, np.abs(grid.x - hx))
    streaks = (0.5 + 0.5 * np.cos(theta * a.vessel_count + 2.5 * texture)) ** 6
    return streaks * np.exp(-radius / 0.2) + falloff(radius * radius, 0.03)


def _per_side(right: np.ndarray, value: dict[str, float]) -> np.ndarray:
    """A float32 map holding each side's value on its half of the image (arithmetic: ``np.where`` on scalars is
    ~10x slower)."""
    return value["left"] + (value["right"] - value["left"]) * right


def v_of(grid: Grid, a: Anatomy) -> np.ndarray:
    """Fraction of the way from apex to costophrenic angle (air depth grows toward the bases)."""
    return np.clip((grid.y - a.apex) / a.height, 0.0, 1.0)
