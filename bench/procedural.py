"""A crude procedural frontal chest radiograph drawn from an entity plan, with no weights.

This is the walking skeleton's renderer: lungs, heart, spine, ribs and diaphragm as soft shapes, and each
planned finding drawn where it appears (effusion at the dependent base, pneumothorax as a lucent lateral rim,
cardiomegaly as a wide heart, ...), so an image model can learn the findings from the pixels. Radiological
convention: the patient's right is on the image's left. A finding without a drawing becomes a generic opacity
and is counted by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NAME = "procedural"
VERSION = "0.1.0"


@dataclass
class Rendering:
    image: np.ndarray  # uint8, (size, size)
    undrawable: list[str] = field(default_factory=list)


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    """Soft ellipse mask in [0, 1] (1 inside, smooth edge), so shapes have no aliasing at small sizes."""
    distance = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    return np.clip((1.0 - distance) * 8.0, 0.0, 1.0)


def _blob(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, sigma: float) -> np.ndarray:
    return np.exp(-(((yy - cy) ** 2) + ((xx - cx) ** 2)) / (2 * sigma**2))


def render(entities: list[dict], size: int, rng: np.random.Generator) -> Rendering:
    """Render one image for the plan ``entities`` (dicts with name, assertion, laterality)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    shift_y, shift_x = rng.normal(0, 0.015, 2)
    yy, xx = yy - shift_y, xx - shift_x
    present = {e["name"]: e.get("laterality") for e in entities if e["assertion"] == "present"}

    emphysema = "emphysema" in present
    lung_ry = 0.34 if emphysema else rng.uniform(0.29, 0.32)
    lung_rx = rng.uniform(0.15, 0.17)
    lung_cy = 0.45 + (0.02 if emphysema else 0.0)
    centers = {"right": 0.5 - rng.uniform(0.18, 0.2), "left": 0.5 + rng.uniform(0.18, 0.2)}
    lungs = {side: _ellipse(yy, xx, lung_cy, cx, lung_ry, lung_rx) for side, cx in centers.items()}
    lung_field = np.maximum(lungs["left"], lungs["right"])

    image = 0.35 + 0.2 * _ellipse(yy, xx, 0.55, 0.5, 0.6, 0.46)
    ribs = 0.06 * (0.5 + 0.5 * np.sin(yy * 2 * np.pi * rng.uniform(9, 11) + xx * 3))
    image = image - lung_field * (0.45 + (0.08 if emphysema else 0.0)) + lung_field * ribs
    image += 0.15 * np.exp(-((xx - 0.5) ** 2) / (2 * 0.03**2))  # spine

    heart_rx = rng.uniform(0.2, 0.24) if "cardiomegaly" in present else rng.uniform(0.11, 0.14)
    heart = _ellipse(yy, xx, 0.6, 0.53, 0.14, heart_rx)
    image = image * (1 - heart) + heart * rng.uniform(0.62, 0.7)
    image += 0.2 * np.clip((yy - (lung_cy + lung_ry * 0.9)) * 20, 0, 1)  # diaphragm

    undrawable: list[str] = []
    for name, side in present.items():
        sides = ["left", "right"] if side in (None, "bilateral") else [side]
        if name in ("cardiomegaly", "emphysema"):
            continue
        for s in sides:
            image += _finding(name, s, centers[s], lungs[s], yy, xx, lung_cy, lung_ry, lung_rx, rng)
        if name not in _DRAWN:
            undrawable.append(name)

    image = image * rng.uniform(0.85, 1.15) + rng.normal(0, 0.03, image.shape)
    image = np.clip(image, 0, 1) ** rng.uniform(0.8, 1.25)
    return Rendering(image=(image * 255).astype(np.uint8), undrawable=undrawable)


_DRAWN = frozenset({"pleural effusion", "pneumothorax", "consolidation", "pulmonary edema", "atelectasis", "nodule"})


def _finding(
    name: str,
    side: str,
    cx: float,
    lung: np.ndarray,
    yy: np.ndarray,
    xx: np.ndarray,
    lung_cy: float,
    lung_ry: float,
    lung_rx: float,
    rng: np.random.Generator,
) -> np.ndarray:
    lateral = -1.0 if side == "right" else 1.0
    if name == "pleural effusion":
        level = lung_cy + lung_ry * rng.uniform(0.1, 0.5)
        meniscus = level - 0.25 * np.abs(xx - cx) * (1 + lateral * (xx - cx) / lung_rx)
        return 0.4 * lung * np.clip((yy - meniscus) * 25, 0, 1)
    if name == "pneumothorax":
        rim = np.clip((lateral * (xx - cx) / lung_rx - 0.35) * 4, 0, 1) * np.clip((lung_cy - yy) / lung_ry + 0.6, 0, 1)
        return -0.35 * lung * rim
    if name == "consolidation":
        return 0.35 * lung * _blob(yy, xx, lung_cy + lung_ry * 0.45, cx, 0.06)
    if name == "pulmonary edema":
        return 0.22 * lung * _blob(yy, xx, lung_cy, cx - lateral * lung_rx * 0.5, 0.09)
    if name == "atelectasis":
        band = np.exp(-((yy - (lung_cy + lung_ry * 0.55)) ** 2) / (2 * 0.012**2))
        return 0.3 * lung * band
    if name == "nodule":
        return 0.45 * _ellipse(yy, xx, lung_cy + rng.uniform(-0.15, 0.15), cx + rng.uniform(-0.05, 0.05), 0.035, 0.035)
    return 0.3 * lung * _blob(yy, xx, lung_cy + rng.uniform(-0.1, 0.2), cx, 0.07)  # generic opacity
