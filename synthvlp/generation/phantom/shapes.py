"""Soft-edged shape primitives on a normalised pixel grid, shared by the anatomy and the findings.

Every shape is a float32 map in [0, 1] whose edge ramps over about one pixel, so shapes stay anti-aliased at
64 px and sharp at 512 px, and a mask is exactly the set of pixels where its shape is at least one half.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


Window = tuple[slice, slice]


@dataclass(frozen=True)
class Grid:
    """Pixel-centre coordinates of the patient (y down, x right; the image spans [0, 1] at zoom 1), rotated,
    shifted and magnified (``zoom`` > 1: the patient fills more of the film) with the patient's pose."""

    y: np.ndarray
    x: np.ndarray
    pixel: float  # one pixel in normalised patient units
    angle: float = 0.0
    shift: tuple[float, float] = (0.0, 0.0)
    zoom: float = 1.0

    @property
    def shape(self) -> tuple[int, int]:
        return self.y.shape

    def window(self, y0: float, y1: float, x0: float, x1: float, margin: float = 2.0) -> Window:
        """Rows and columns of the pixels whose patient coordinates can fall in [y0, y1] x [x0, x1], plus
        ``margin`` pixels: a small shape is computed there only and is exactly 0 elsewhere."""
        cos, sin = math.cos(self.angle), math.sin(self.angle)  # Python floats: NumPy scalar calls cost 10x here
        size = self.shape[0]
        rows, cols = [], []
        for py in (y0, y1):
            for px in (x0, x1):
                dy, dx = py - 0.5 + self.shift[0], px - 0.5 + self.shift[1]
                rows.append((self.zoom * (cos * dy + sin * dx) + 0.5) * size - 0.5)
                cols.append((self.zoom * (-sin * dy + cos * dx) + 0.5) * size - 0.5)
        return tuple(
            slice(min(max(math.floor(min(v) - margin), 0), size), min(max(math.ceil(max(v) + margin) + 1, 0), size))
            for v in (rows, cols)
        )  # type: ignore[return-value]

    def crop(self, window: Window) -> Grid:
        return Grid(self.y[window], self.x[window], self.pixel, self.angle, self.shift, self.zoom)

    def index(self, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fractional (row, column) of patient points (y, x): the inverse of the grid's pose."""
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        dy, dx = y - 0.5 + self.shift[0], x - 0.5 + self.shift[1]
        size = self.shape[0]
        return (self.zoom * (cos * dy + sin * dx) + 0.5) * size - 0.5, (self.zoom * (-sin * dy + cos * dx) + 0.5) * size - 0.5


def paste(shape: tuple[int, int], window: Window, values: np.ndarray) -> np.ndarray:
    """A zero map of ``shape`` holding ``values`` in ``window``."""
    out = np.zeros(shape, dtype=np.float32)
    out[window] = values
    return out


def make_grid(size: int, angle: float = 0.0, shift: tuple[float, float] = (0.0, 0.0), zoom: float = 1.0) -> Grid:
    """Coordinates of a patient rotated by ``angle`` radians about the image centre, shifted by ``shift`` and
    magnified by ``zoom``."""
    axis = ((np.arange(size, dtype=np.float32) + 0.5) / size - 0.5) / np.float32(zoom)
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    y = (cos * axis + (0.5 - np.float32(shift[0])))[:, None] - sin * axis[None, :]
    x = (sin * axis + (0.5 - np.float32(shift[1])))[:, None] + cos * axis[None, :]
    return Grid(y=y, x=x, pixel=1.0 / (size * zoom), angle=angle, shift=shift, zoom=zoom)


def ramp(distance: np.ndarray, pixel: float) -> np.ndarray:
    """Soft inside-ness of a signed distance (positive inside): 0.5 on the boundary, 0/1 a pixel away."""
    out = distance * (1.0 / pixel)
    out += 0.5
    return np.clip(out, 0.0, 1.0, out=out)


def distance(dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Euclidean length of (dy, dx); ``np.hypot``'s overflow guard makes it ~20x slower than this."""
    return np.sqrt(dy * dy + dx * dx)


def fraction(value: np.ndarray) -> np.ndarray:
    """``value % 1.0`` (in [0, 1) also for negatives) at a thirtieth of the cost of NumPy's float remainder."""
    return value - np.floor(value)


def power(base: np.ndarray, exponent: float) -> np.ndarray:
    """``base ** exponent`` for a map in [0, 1], through exp and log with the result cut at e^-30.

    NumPy's float pow takes a path ~10x slower where the base is 0 or the result underflows, and denormal
    results slow every later operation on the map; e^-30 is far below any visible density.
    """
    return np.exp(np.maximum(exponent * np.log(np.maximum(base, 1e-30)), -30.0))


def falloff(distance2: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian ``exp(-distance2 / (2 sigma^2))`` cut at e^-30, so the far field is not denormal (see ``power``)."""
    return np.exp(np.maximum(distance2 * (-0.5 / sigma**2), -30.0))


def ellipse(grid: Grid, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    """Soft ellipse; the signed distance is approximated by the radial one scaled by the smaller radius.

    Computed only in its bounding box: the ramp reaches 0 half a pixel past the edge along the smaller radius,
    which is max/min radii pixels past it along the larger.
    """
    reach = max(ry, rx) / min(ry, rx) * grid.pixel
    window = grid.window(cy - ry - reach, cy + ry + reach, cx - rx - reach, cx + rx + reach)
    part = grid.crop(window)
    dy, dx = (part.y - cy) * (1.0 / ry), (part.x - cx) * (1.0 / rx)
    radius = np.sqrt(dy * dy + dx * dx)
    return paste(grid.shape, window, ramp((1.0 - radius) * min(ry, rx), grid.pixel))


def band(distance: np.ndarray, half_width: float, pixel: float) -> np.ndarray:
    """Soft band of ``half_width`` around the zero set of an (unsigned or signed) distance map."""
    return ramp(half_width - np.abs(distance), pixel)


def polyline_distance(grid: Grid, points: list[tuple[float, float]]) -> np.ndarray:
    """Distance from each pixel to a polyline through ``points`` given as (y, x)."""
    best = np.full(grid.shape, np.inf, dtype=np.float32)
    for (y0, x0), (y1, x1) in zip(points[:-1], points[1:]):
        dy, dx = y1 - y0, x1 - x0
        length2 = max(dy * dy + dx * dx, 1e-12)
        t = np.clip(((grid.y - y0) * dy + (grid.x - x0) * dx) / length2, 0.0, 1.0)
        np.minimum(best, distance(grid.y - (y0 + t * dy), grid.x - (x0 + t * dx)), out=best)
    return best


def smooth_noise(rng: np.random.Generator, size: int, nodes: int) -> np.ndarray:
    """Zero-mean, unit-sd smooth random field: normal noise on a ``nodes`` grid, bilinearly upsampled.

    Upsampling is two small matrix products, far cheaper than blurring full-size noise.
    """
    coarse = rng.standard_normal((nodes, nodes)).astype(np.float32)
    up = interp_matrix(nodes, size)
    return upsample(up, coarse, up)


def upsample(rows: np.ndarray, coarse: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``rows @ coarse @ cols.T``: a coarse field mapped to full size by one (size, nodes) matrix per axis.

    The last product runs in bands of 16 rows. OpenBLAS splits any product above 256 x 256 x 12 across its
    threads, and on busy cores waiting for them took 15 ms where one thread needs 20 us; each band stays below.
    """
    inner = np.ascontiguousarray((cols @ coarse.T).T)  # (nodes, size)
    return np.concatenate([rows[start : start + 16] @ inner for start in range(0, rows.shape[0], 16)])


@lru_cache(maxsize=64)
def interp_matrix(nodes: int, size: int, start: float = 0.0, stop: float | None = None) -> np.ndarray:
    """(size, nodes) linear interpolation at ``size`` even positions from ``start`` to ``stop`` (in node units;
    by default first to last node). Cached (a few shapes recur in every film) and read-only."""
    position = np.linspace(start, nodes - 1.0 if stop is None else stop, size)
    left = np.clip(np.floor(position).astype(int), 0, nodes - 2)
    frac = (position - left).astype(np.float32)
    matrix = np.zeros((size, nodes), dtype=np.float32)
    matrix[np.arange(size), left] = 1.0 - frac
    matrix[np.arange(size), left + 1] += frac
    matrix.flags.writeable = False
    return matrix


BLUR_REACH = 2.5  # sds a blur kernel reaches (the rest, 1.2% of its weight, is dropped)


def blur(image: np.ndarray, sigma: float, axis: int) -> np.ndarray:
    """Gaussian blur of ``sigma`` pixels along ``axis`` as a sum of shifted copies (a few taps at these sigmas),
    cut at ``BLUR_REACH`` sds and renormalised at the border so edges are not darkened. Slices along the axis in
    place (no transposed views, whose strided passes cost 3x)."""
    radius = math.ceil(BLUR_REACH * sigma)
    if radius == 0 or sigma < 1e-3:
        return image
    taps = np.exp(-np.arange(-radius, radius + 1, dtype=np.float32) ** 2 / np.float32(2 * sigma * sigma))
    size = image.shape[axis]
    out = image * taps[radius]
    norm = np.full(size, taps[radius], dtype=np.float32)
    index = [slice(None)] * image.ndim
    for offset in range(1, min(radius, size - 1) + 1):
        tap = taps[radius + offset]
        for shift in (offset, -offset):  # out[i] += tap * in[i + shift]
            lo, hi = max(0, -shift), min(size, size - shift)
            index[axis] = slice(lo, hi)
            target = tuple(index)
            index[axis] = slice(lo + shift, hi + shift)
            out[target] += tap * image[tuple(index)]
            norm[lo:hi] += tap
    shape = [1] * image.ndim
    shape[axis] = size
    out *= (1.0 / norm).reshape(shape)
    return out


def blur2d(image: np.ndarray, sigma: float) -> np.ndarray:
    return blur(blur(image, sigma, 0), sigma, 1)


def splat(shape: tuple[int, int], rows: np.ndarray, cols: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """A map of ``shape`` holding each weight spread bilinearly over the four pixels around its (row, col);
    points off the map are dropped."""
    out = np.zeros(shape[0] * shape[1], dtype=np.float32)
    r0, c0 = np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)
    fr, fc = (rows - r0).astype(np.float32), (cols - c0).astype(np.float32)
    for dr, dc, w in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
        r, c = r0 + dr, c0 + dc
        keep = (r >= 0) & (r < shape[0]) & (c >= 0) & (c < shape[1])
        out += np.bincount(r[keep] * shape[1] + c[keep], weights=(weights * w)[keep], minlength=out.size).astype(np.float32)
    return out.reshape(shape)


def tube(offset: np.ndarray, half_width: float, cortex: float = 0.0) -> np.ndarray:
    """Projected thickness across a cylinder, peak 1 on its axis, 0 at ``half_width`` from it. ``cortex`` in
    [0, 1) hollows the marrow (inner 80% of the radius), so the margins are denser than the middle as a rib's or a
    clavicle's cortex is on film."""
    r2 = np.minimum(offset * offset * (1.0 / half_width**2), 1.0)
    out = np.sqrt(1.0 - r2)
    if cortex:
        out -= (cortex * CORE) * np.sqrt(np.maximum(1.0 - r2 * (1.0 / CORE**2), 0.0))
    return out


CORE = 0.8
