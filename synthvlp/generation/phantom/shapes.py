"""Soft-edged shape primitives on a normalised pixel grid, shared by the anatomy and the findings.

Every shape is a float32 map in [0, 1] whose edge ramps over about one pixel, so shapes stay anti-aliased at
64 px and sharp at 512 px, and a mask is exactly the set of pixels where its shape is at least one half.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    """Pixel-centre coordinates in [0, 1] (y down, x right), rotated and shifted with the patient."""

    y: np.ndarray
    x: np.ndarray
    pixel: float  # one pixel in normalised units

    @property
    def shape(self) -> tuple[int, int]:
        return self.y.shape


def make_grid(size: int, angle: float = 0.0, shift: tuple[float, float] = (0.0, 0.0)) -> Grid:
    """Coordinates of a patient rotated by ``angle`` radians about the image centre and shifted by ``shift``."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    y = cos * yy - sin * xx + 0.5 - np.float32(shift[0])
    x = sin * yy + cos * xx + 0.5 - np.float32(shift[1])
    return Grid(y=y, x=x, pixel=1.0 / size)


def ramp(distance: np.ndarray, pixel: float) -> np.ndarray:
    """Soft inside-ness of a signed distance (positive inside): 0.5 on the boundary, 0/1 a pixel away."""
    return np.clip(distance / pixel + 0.5, 0.0, 1.0)


def ellipse(grid: Grid, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    """Soft ellipse; the signed distance is approximated by the radial one scaled by the smaller radius."""
    radius = np.sqrt(((grid.y - cy) / ry) ** 2 + ((grid.x - cx) / rx) ** 2)
    return ramp((1.0 - radius) * min(ry, rx), grid.pixel)


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
        np.minimum(best, np.hypot(grid.y - (y0 + t * dy), grid.x - (x0 + t * dx)), out=best)
    return best


def smooth_noise(rng: np.random.Generator, size: int, nodes: int) -> np.ndarray:
    """Zero-mean, unit-sd smooth random field: normal noise on a ``nodes`` grid, bilinearly upsampled.

    Upsampling is two small matrix products, far cheaper than blurring full-size noise.
    """
    coarse = rng.standard_normal((nodes, nodes)).astype(np.float32)
    up = _interp_matrix(nodes, size)
    return (up @ coarse) @ np.ascontiguousarray(up.T)  # a transposed view falls off numpy's BLAS path


def _interp_matrix(nodes: int, size: int) -> np.ndarray:
    position = np.linspace(0.0, nodes - 1.0, size)
    left = np.clip(np.floor(position).astype(int), 0, nodes - 2)
    frac = (position - left).astype(np.float32)
    matrix = np.zeros((size, nodes), dtype=np.float32)
    matrix[np.arange(size), left] = 1.0 - frac
    matrix[np.arange(size), left + 1] += frac
    return matrix
