"""What the department adds to a film besides the patient: monitoring leads on the chest, side markers and
burnt-in text, collimator edges.

Portable (AP) films get most of it, as on the wards: ECG electrodes with their leads, "PORTABLE"/"AP" labels.
None of it is a finding and none of it depends on the findings, so masks stay exact; it is drawn from the film's
own random stream, so it is the same with or without a finding.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from synthvlp.generation.phantom.patient import Anatomy
from synthvlp.generation.phantom.shapes import Grid, blur2d, paste, polyline_distance, tube

LABELS_AP = ("PORTABLE", "AP", "PORTABLE AP", "AP UPRIGHT", "SEMI-UPRIGHT", "SUPINE", "PORTABLE SEMI ERECT")
LABELS_PA = ("PA", "ERECT", "STANDING", "INSP")
ELECTRODE = 0.35  # attenuation through an electrode's snap ring
LEAD = 0.12  # attenuation through a lead wire
SOFT = 0.8
"""Blur sd (pixels at 256 px) of what is added after the detector, labels and collimator edges: real films are
downsampled from 1024 px or more, so even burnt-in text has soft edges at 256 (sharp ones added 0.03 decades of
high-frequency power the real films do not have)."""


def monitoring(grid: Grid, a: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Attenuation of ECG electrodes (a ring with a central snap) and the leads trailing off the film."""
    count = int(rng.integers(2, 6)) if a.view == "AP" and rng.random() < 0.75 else (int(rng.integers(1, 4)) if rng.random() < 0.12 else 0)
    out = np.zeros(grid.shape, dtype=np.float32)
    for _ in range(count):
        side = -1.0 if rng.random() < 0.5 else 1.0
        upper = rng.random() < 0.6
        cy = a.apex + (rng.uniform(-0.06, 0.08) if upper else a.height + rng.uniform(-0.1, 0.15))
        cx = a.mid + side * a.half_width * rng.uniform(0.5, 1.05)
        radius = rng.uniform(0.01, 0.017)
        window = grid.window(cy - radius, cy + radius, cx - radius, cx + radius)
        part = grid.crop(window)
        r = np.sqrt((part.y - cy) ** 2 + (part.x - cx) ** 2)
        ring = tube(r - 0.8 * radius, 0.2 * radius) + tube(r, 0.3 * radius)
        out += paste(grid.shape, window, ELECTRODE * ring)
        if rng.random() < 0.8:
            points = [(cy, cx)]
            for _ in range(3):
                y, x = points[-1]
                points.append((y + rng.uniform(-0.25, 0.35), x + side * rng.uniform(0.05, 0.3)))
            ys, xs = [p[0] for p in points], [p[1] for p in points]
            window = grid.window(min(ys) - 0.004, max(ys) + 0.004, min(xs) - 0.004, max(xs) + 0.004)
            wire = LEAD * tube(polyline_distance(grid.crop(window), points), 0.0025 + 0.5 * grid.pixel)
            out[window] += wire
    return out


@lru_cache(maxsize=32)
def _font(pixels: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(pixels, 6))


def burn_in(film: np.ndarray, a: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """``film`` with a side marker, labels and collimator edges as departments produce them (each at random)."""
    size = film.shape[0]
    u = rng.random(12)
    canvas = size * max(1, -(-256 // size))  # letters drawn at 256 px or more, then shrunk: legible type has a minimum size
    labels = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(labels)
    if u[0] < 0.75:  # side marker, usually in an upper corner
        letter = "L" if u[1] < 0.7 else "R"
        height = int(canvas * (0.035 + 0.035 * u[2]))
        x = int(canvas * (0.78 + 0.17 * u[3])) if u[4] < 0.75 else int(canvas * (0.02 + 0.15 * u[3]))
        y = int(canvas * (0.01 + 0.12 * u[5]))
        draw.text((x, y), letter, fill=255, font=_font(height))
        if u[6] < 0.35:
            pad = height // 4
            draw.ellipse((x - pad, y - pad, x + height + pad, y + height + 2 * pad), outline=255, width=max(1, canvas // 200))
    wants_text = u[7] < (0.75 if a.view == "AP" else 0.12)
    if wants_text:
        pool = LABELS_AP if a.view == "AP" else LABELS_PA
        text = pool[int(u[8] * len(pool))]
        height = int(canvas * (0.022 + 0.018 * u[9]))
        x = int(canvas * (0.02 + 0.6 * u[10]))
        y = int(canvas * (0.01 + 0.08 * u[11])) if u[10] < 0.5 else int(canvas * (0.9 + 0.07 * u[11]))
        draw.text((x, y), text, fill=255, font=_font(height))
    brightness = 0.92 + 0.08 * float(rng.random())
    if canvas != size:
        labels = labels.resize((size, size), Image.BOX)
    box = labels.getbbox()
    if box is not None:  # blend only where there is ink (and the blur's reach)
        pad = 2 + size // 128
        x0, y0, x1, y1 = max(box[0] - pad, 0), max(box[1] - pad, 0), min(box[2] + pad, size), min(box[3] + pad, size)
        ink = blur2d(np.asarray(labels.crop((x0, y0, x1, y1)), dtype=np.float32) * (1.0 / 255.0), SOFT * size / 256)
        film[y0:y1, x0:x1] = film[y0:y1, x0:x1] * (1.0 - ink) + brightness * ink
    return _collimate(film, rng)


def _collimate(film: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Where the collimator (black) or an unexposed strip (white) shows: bands along some edges, square or a few
    degrees askew (a film placed or scanned at an angle)."""
    u = rng.random(10).tolist()
    if u[0] > 0.35:
        return film
    size = film.shape[0]
    value = 0.0 if u[1] < 0.65 else 0.97
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    angle = 0.07 * (u[2] - 0.5) if u[3] < 0.5 else 0.0
    cos, sin = np.cos(angle), np.sin(angle)
    rows = cos * axis[:, None] + sin * axis[None, :]
    cols = -sin * axis[:, None] + cos * axis[None, :]
    inside = np.ones(film.shape, dtype=np.float32)
    edge_width = SOFT * 2.5 / 256  # the edge ramps over a few pixels at 256 px, as a blurred shutter edge does
    for edge in range(4):
        if u[4 + edge] < 0.45:
            margin = 0.5 - (0.01 + 0.07 * u[8 + edge % 2])
            coordinate = rows if edge % 2 == 0 else cols
            inside *= np.clip(((margin - coordinate) if edge < 2 else (coordinate + margin)) * (1.0 / edge_width) + 0.5, 0.0, 1.0)
    return film * inside + value * (1.0 - inside)
