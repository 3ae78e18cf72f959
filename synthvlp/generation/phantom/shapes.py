"""Soft-edged shape primitives on a normalised pixel grid, shared by the anatomy and the findings.

Every shape is a float32 map in [0, 1] whose edge ramps over about one pixel, so shapes stay anti-aliased at
64 px and sharp at 512 px, and a mask is exactly the set of pixels where its shape is at least one half.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


Window = tuple[slice, slice]


@dataclass(frozen=True)
class Grid:
    """Pixel-centre coordinates in [0, 1] (y down, x right), rotated and shifted with the patient."""

    y: np.ndarray
    x: np.ndarray
    pixel: float  # one pixel in normalised units
    angle: float = 0.0
    shift: tuple[float, float] = (0.0, 0.0)

    @property
    def shape(self) -> tuple[int, int]:
        return self.y.shape

    def window(self, y0: float, y1: float, x0: float, x1: float, margin: float = 2.0) -> Window:
        """Rows and columns of the pixels whose patient coordinates can fall in [y0, y1] x [x0, x1], plus
        ``margin`` pixels: a small shape is computed there only and is exactly 0 elsewhere."""
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        rows, cols = [], []
        for py in (y0, y1):
            for px in (x0, x1):
                dy, dx = py - 0.5 + self.shift[0], px - 0.5 + self.shift[1]
                rows.append((cos * dy + sin * dx + 0.5) / self.pixel - 0.5)
                cols.append((-sin * dy + cos * dx + 0.5) / self.pixel - 0.5)
        size = self.shape[0]
        return tuple(
            slice(int(np.clip(np.floor(min(v) - margin), 0, size)), int(np.clip(np.ceil(max(v) + margin) + 1, 0, size)))
            for v in (rows, cols)
        )  # type: ignore[return-value]

    def crop(self, window: Window) -> Grid:
        return Grid(self.y[window], self.x[window], self.pixel, self.angle, self.shift)


def paste(shape: tuple[int, int], window: Window, values: np.ndarray) -> np.ndarray:
    """A zero map of ``shape`` holding ``values`` in ``window``."""
    out = np.zeros(shape, dtype=np.float32)
    out[window] = values
    return out


def make_grid(size: int, angle: float = 0.0, shift: tuple[float, float] = (0.0, 0.0)) -> Grid:
    """Coordinates of a patient rotated by ``angle`` radians about the image centre and shifted by ``shift``."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    y = (cos * axis + (0.5 - np.float32(shift[0])))[:, None] - sin * axis[None, :]
    x = (sin * axis + (0.5 - np.float32(shift[1])))[:, None] + cos * axis[None, :]
    return Grid(y=y, x=x, pixel=1.0 / size, angle=angle, shift=shift)


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


def interp_matrix(nodes: int, size: int, start: float = 0.0, stop: float | None = None) -> np.ndarray:
    """(size, nodes) linear interpolation at ``size`` even positions from ``start`` to ``stop`` (in node units;
    by default first to last node)."""
    position = np.linspace(start, nodes - 1.0 if stop is None else stop, size)
    left = np.clip(np.floor(position).astype(int), 0, nodes - 2)
    frac = (position - left).astype(np.float32)
    matrix = np.zeros((size, nodes), dtype=np.float32)
    matrix[np.arange(size), left] = 1.0 - frac
    matrix[np.arange(size), left + 1] += frac
    return matrix
