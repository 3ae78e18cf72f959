"""The bones of a frontal chest as projected thickness: ribs, clavicles, scapulae, spine and humeri.

Posterior ribs leave the spine, rise a little and sweep down to the lateral chest wall; the anterior ribs run
from there down and medially toward the sternum, thinner and fainter, and vanish where the costal cartilage
begins. Ribs and clavicles are tubes with a dense cortex, so their margins show as on film. The spine sits behind
the mediastinum and shows through it only faintly once the composite is exposed; vertebral bodies, discs and
pedicles repeat down the midline. Each structure is computed in its own window.
"""

from __future__ import annotations

import numpy as np

from synthvlp.generation.phantom.patient import SIDES, SIGN, Anatomy, lung_width
from synthvlp.generation.phantom.shapes import Grid, fraction, paste, power, ramp, tube

RIB_HALF = 0.22  # half a posterior rib's height, as a share of the rib period
RIB_THICKNESS = 0.011  # a rib's front-to-back thickness
ANTERIOR = 0.2  # anterior ribs' density relative to the posterior ones
ANTERIOR_SLOPE = 0.7  # how steeply the anterior ribs fall toward the sternum


def rib_frame(a: Anatomy) -> tuple[float, float]:
    """(top, span): posterior rib k's centre at the spine is ``top + span * ((k + 0.5) / ribs) ** (1 / 0.85)``;
    the last rib above the diaphragm reaches the lateral costophrenic angle."""
    top = a.apex - 0.035
    return top, (a.base["left"] + 0.02 - top) / (1.0 + 0.7 * a.rib_drop)


def rib_offset(a: Anatomy, t: np.ndarray | float) -> np.ndarray | float:
    """How far a posterior rib's centre lies below its height at the spine, at ``t`` lung half widths out."""
    return a.rib_drop * (t * t - 0.3 * t) * rib_frame(a)[1]


def rib_centre(a: Anatomy, rib: float, t: float) -> float:
    """y of posterior rib ``rib``'s centre line at ``t`` lung half widths from the midline (one source of truth
    for the rib geometry: drawing and the fracture finding both use it)."""
    top, span = rib_frame(a)
    return top + rib_offset(a, t) + span * ((rib + 0.5) / a.ribs) ** (1 / 0.85)


def _rib_index(a: Anatomy, y: np.ndarray, shift: np.ndarray | float) -> np.ndarray:
    top, span = rib_frame(a)
    return a.ribs * power(np.clip((y - top - shift) * (1.0 / span), 0.0, 1.5), 0.85)


def _ribs(grid: Grid, a: Anatomy) -> tuple[np.ndarray, np.ndarray]:
    """(rib thickness, posterior rib index), computed in the rib cage's window (both are 0 outside it)."""
    top, span = rib_frame(a)
    reach = a.half_width + 0.03
    window = grid.window(top - 0.02, top + 1.6 * span + 0.1, a.mid - reach, a.mid + reach)
    ribs, index = _rib_maps(grid.crop(window), a)
    return paste(grid.shape, window, ribs), paste(grid.shape, window, index)


def _rib_maps(grid: Grid, a: Anatomy) -> tuple[np.ndarray, np.ndarray]:
    y = grid.y
    lateral = np.abs(grid.x - a.mid)
    t = lateral * (1.0 / a.half_width)
    end = 1.0 + 0.03 / a.half_width
    # ribs wrap the lungs: each ends just outside the lung's lateral border at its height (short at the apex)
    wall = ramp(lung_width(a, np.clip((y - a.apex) * (1.0 / a.height), 0.0, 1.0)) + 0.03 - lateral, grid.pixel)
    index = _rib_index(a, y, rib_offset(a, t))
    within = fraction(index) - 0.5
    span = rib_frame(a)[1]
    extent = ramp((t - 0.12) * a.half_width, grid.pixel) * wall
    extent *= ramp(index - 0.25, grid.pixel * a.ribs / span) * np.clip(a.ribs + 0.5 - index, 0.0, 1.0)
    posterior = tube(within, RIB_HALF, cortex=0.55) * extent * (1.1 - 0.35 * np.clip(t, 0.0, 1.0))
    # anterior ribs start where the posterior ones reach the wall and fall medially
    t_wall = min(end, 1.0)
    anterior_index = _rib_index(a, y, rib_offset(a, t_wall) + ANTERIOR_SLOPE * a.half_width * np.maximum(t_wall - t, 0.0))
    a_within = fraction(anterior_index) - 0.5
    fade = np.clip((t - 0.3) * (1.0 / 0.25), 0.0, 1.0) * wall
    anterior = ANTERIOR * tube(a_within, 0.7 * RIB_HALF, cortex=0.3) * fade * np.clip(anterior_index - 0.6, 0.0, 1.0)
    ribs = RIB_THICKNESS * (posterior + anterior * np.clip(a.ribs - 2.0 - anterior_index, 0.0, 1.0))
    return ribs.astype(np.float32), index.astype(np.float32)


def _clavicles(grid: Grid, a: Anatomy) -> np.ndarray:
    """S-shaped tubes from the sternal notch up and out to the shoulders, over the lung apices."""
    lateral_end = a.wall + 0.03
    y0 = a.apex + 0.01
    window = grid.window(y0 - a.clavicle_rise - 0.08, y0 + 0.06, a.mid - lateral_end, a.mid + lateral_end)
    part = grid.crop(window)
    lateral = np.abs(part.x - a.mid + 0.5 * a.rotation)
    s = np.clip((lateral - 0.03) * (1.0 / (lateral_end - 0.03)), 0.0, 1.0)
    centre = y0 - a.clavicle_rise * s + 0.012 * np.sin(2.0 * np.pi * s)
    half = 0.011 + 0.004 * (1.0 - s)
    bone = tube(part.y - centre, half, cortex=0.4) * ramp(lateral - 0.03, grid.pixel) * ramp(lateral_end - lateral, grid.pixel)
    return paste(grid.shape, window, (3.0 * half) * bone)


def _scapulae(grid: Grid, a: Anatomy) -> np.ndarray:
    """Thin triangular plates behind the upper chest with a dense lateral pillar; over the lung edges on AP films
    (arms forward), pulled clear of them on PA films."""
    y_top, y_bottom = a.shoulder + 0.02, a.apex + 0.55 * a.height
    window = grid.window(y_top, y_bottom, a.mid - a.wall - 0.05, a.mid + a.wall + 0.05)
    part = grid.crop(window)
    lateral = np.abs(part.x - a.mid)
    s = np.clip((part.y - y_top) * (1.0 / (y_bottom - y_top)), 0.0, 1.0)
    inferior = a.half_width * (a.scapula + 0.12)
    medial = a.scapula * a.half_width + (inferior - a.scapula * a.half_width) * s
    outer = a.wall + 0.03 + (inferior - a.wall - 0.03) * s
    plate = ramp(lateral - medial, grid.pixel) * ramp(outer - lateral, grid.pixel) * ramp(part.y - y_top, grid.pixel) * ramp(y_bottom - part.y, grid.pixel)
    pillar = tube(lateral - (outer - 0.012), 0.01) * ramp(y_bottom - part.y, grid.pixel)
    return paste(grid.shape, window, 0.008 * plate + 0.02 * pillar * (part.y > y_top))


def _spine(grid: Grid, a: Anatomy) -> np.ndarray:
    """Vertebral bodies with discs between them and paired pedicles, down the midline (offset by rotation)."""
    half = 0.038
    window = grid.window(-0.3, 1.3, a.mid - 0.06, a.mid + 0.06)
    part = grid.crop(window)
    dx = part.x - (a.mid + a.rotation)
    period = 0.045 + 0.01 * a.height
    level = fraction((part.y - a.apex) * (1.0 / period))
    disc = 1.0 - 0.3 * np.clip(1.0 - np.abs(level - 0.5) * (1.0 / 0.12), 0.0, 1.0)  # discs at level 0.5
    body = tube(dx, half) * disc
    pedicle = np.sqrt(((np.abs(dx) - 0.7 * half) * (1.0 / 0.008)) ** 2 + ((level - 0.2) * period * (1.0 / 0.011)) ** 2)
    rings = np.clip(1.0 - np.abs(pedicle - 0.8) * (1.0 / 0.35), 0.0, 1.0)
    return paste(grid.shape, window, 0.022 * body + 0.006 * rings)


def _humeri(grid: Grid, a: Anatomy) -> np.ndarray:
    """Humeral heads at the shoulders and the shafts running down the arms (often at or past the film's edge)."""
    out = np.zeros(grid.shape, dtype=np.float32)
    for side in SIDES:
        cx = a.mid + SIGN[side] * (a.wall + 0.9 * a.arm + 0.03)
        cy = a.shoulder + 0.05
        radius = 0.055 + 0.3 * a.arm
        window = grid.window(cy - radius, 1.3, cx - radius, cx + radius)
        part = grid.crop(window)
        head = np.sqrt(np.clip(1.0 - ((part.y - cy) ** 2 + (part.x - cx) ** 2) * (1.0 / radius**2), 0.0, 1.0))
        shaft = tube(part.x - cx - SIGN[side] * 0.1 * (part.y - cy), 0.4 * radius, cortex=0.5) * (part.y > cy)
        out += paste(grid.shape, window, 0.35 * radius * np.maximum(head, 0.4 * shaft))
    return out


def draw_skeleton(grid: Grid, a: Anatomy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bone thickness other than ribs, rib thickness, posterior rib index)."""
    ribs, index = _ribs(grid, a)
    bones = _clavicles(grid, a) + _scapulae(grid, a) + _spine(grid, a) + _humeri(grid, a)
    return bones, ribs, index
