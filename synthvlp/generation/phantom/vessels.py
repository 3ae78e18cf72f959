"""The pulmonary vascular tree: vessels branching from each hilum and tapering toward the periphery.

Each lung grows a tree from its hilum: trunks to the upper, middle and lower zones (the lower ones wider, as on an
upright film), each segment forking into a continuing branch and a side branch, narrower and shorter each
generation, until the vessel falls below a fraction of a pixel or leaves the lung. The tree is grown for all
tips of a generation at once, then rasterised as projected cylinders: points along each segment splatted with
the cylinder's cross-section area and blurred by a width class, which is what a vessel's shadow integrates to.
"""

from __future__ import annotations

import math

import numpy as np

from synthvlp.generation.phantom.patient import SIDES, SIGN, Anatomy
from synthvlp.generation.phantom.shapes import Grid, Window, blur2d, paste, splat

TRUNKS = (  # (angle from the lateral direction, radians, positive downward; diameter; length)
    (-1.25, 0.008, 0.06),
    (-0.7, 0.008, 0.06),
    (-0.05, 0.01, 0.06),
    (0.55, 0.012, 0.07),
    (1.05, 0.013, 0.07),
    (1.45, 0.011, 0.06),
)
GENERATIONS = 7
TAPER = (0.82, 0.62)  # diameter ratio of the continuing and the side branch
SHORTEN = 0.78
STEP = 0.6  # splat spacing along a segment, in pixels


def _grow(a: Anatomy, side: str, rng: np.random.Generator) -> np.ndarray:
    """(n, 5) segments y0, x0, y1, x1, diameter of one lung's tree (lung clipping happens when drawn)."""
    hy, hx = a.hilum(side)
    count = len(TRUNKS)
    jitter = rng.normal(0.0, 1.0, (3, count))
    angle = np.array([t[0] for t in TRUNKS]) + 0.15 * jitter[0]
    diameter = np.array([t[1] for t in TRUNKS]) * (1.0 + 0.15 * jitter[1])
    length = np.array([t[2] for t in TRUNKS]) * (1.0 + 0.2 * jitter[2]) * (a.height / 0.6)
    y, x = np.full(count, hy), np.full(count, hx)
    segments = []
    for _ in range(GENERATIONS):
        bend = rng.normal(0.0, 0.12, angle.shape)
        y1 = y + length * np.sin(angle + bend)
        x1 = x + SIGN[side] * length * np.cos(angle + bend)
        segments.append(np.stack([y, x, y1, x1, diameter], axis=1))
        turn = rng.uniform(0.35, 0.75, angle.shape) * np.where(rng.random(angle.shape) < 0.5, -1.0, 1.0)
        spread = rng.uniform(0.9, 1.15, (2,) + angle.shape)
        y = np.concatenate([y1, y1])
        x = np.concatenate([x1, x1])
        angle = np.concatenate([angle + bend - 0.3 * turn, angle + bend + turn])
        diameter = np.concatenate([diameter * TAPER[0], diameter * TAPER[1]])
        length = np.concatenate([length * SHORTEN * spread[0], length * SHORTEN * 0.8 * spread[1]])
    return np.concatenate(segments)


def _rasterise(grid: Grid, segments: np.ndarray, window: Window) -> np.ndarray:
    """Projected thickness of the segments as cylinders, in ``window`` of ``grid``."""
    pixel = grid.pixel
    shape = (window[0].stop - window[0].start, window[1].stop - window[1].start)
    y0, x0, y1, x1, diameter = segments.T
    steps = np.maximum(np.ceil(np.hypot(y1 - y0, x1 - x0) / (STEP * pixel)).astype(np.int64), 1)
    owner = np.repeat(np.arange(len(segments)), steps)
    start = np.repeat(np.cumsum(steps) - steps, steps)
    t = (np.arange(owner.size) - start + 0.5) / steps[owner]
    py, px = y0[owner] + t * (y1 - y0)[owner], x0[owner] + t * (x1 - x0)[owner]
    rows, cols = grid.index(py, px)
    rows, cols = rows - window[0].start, cols - window[1].start
    length = np.hypot(y1 - y0, x1 - x0)[owner] / steps[owner]
    d = diameter[owner]
    volume = ((math.pi / 4.0) * d * d * length / (pixel * pixel)).astype(np.float32)  # thickness x pixels = volume / pixel^2
    width = d / pixel
    medium, wide = (width >= 1.5) & (width < 3.0), width >= 3.0
    canvas = splat(shape, rows[medium], cols[medium], volume[medium])
    if wide.any():  # the wide vessels, near the hila, get a wider blur first, in their own small window
        r0, c0 = (max(int(np.floor(v[wide].min())) - 4, 0) for v in (rows, cols))
        r1, c1 = (min(int(np.ceil(v[wide].max())) + 5, n) for v, n in ((rows, shape[0]), (cols, shape[1])))
        if r1 > r0 and c1 > c0:
            canvas[r0:r1, c0:c1] += blur2d(splat((r1 - r0, c1 - c0), rows[wide] - r0, cols[wide] - c0, volume[wide]), 1.1)
    # wide vessels end up blurred by sds 1.1 and 0.8 (1.36 in all), medium ones by 0.8, thin ones not at all
    return blur2d(canvas, 0.8) + splat(shape, rows[width < 1.5], cols[width < 1.5], volume[width < 1.5])


def draw_vessels(grid: Grid, a: Anatomy, lung: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Vessel thickness inside the soft lung field ``lung`` (computed in the lungs' window)."""
    segments = np.concatenate([_grow(a, side, r) for side, r in zip(SIDES, rng.spawn(2), strict=True)])
    window = grid.window(a.apex - 0.01, max(a.base.values()) + 0.01, a.mid - a.half_width - 0.01, a.mid + a.half_width + 0.01, margin=6)
    return paste(grid.shape, window, _rasterise(grid, segments, window) * lung[window])
