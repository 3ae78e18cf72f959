"""Where real films' lungs lie and what shape they have, beside the projection phantom's: fitted outlines.

Each lung field (padded to a square, 64 px) gets the nine outline parameters (midline, apex, each costophrenic angle
and dome, half width, each medial border) that maximise the IoU between the renderer's own ``lung_field`` and it.
The script prints the framing (where the lungs sit on the film: median and robust spread) and, divided by the half
width to take framing out, the proportions (height, medial borders, domes, the left angle's drop) as a normal law:
mean, Cholesky factor and range, what a renderer would draw the lungs' proportions from.

Two sources of lung fields:
- ``--masks CSV`` alone: the human masks themselves (covid-lungs: films cropped for publication, so their framing
  says nothing about a department's, and COVID-19 patients breathe shallower than ChestX-ray14's);
- ``--films DIR`` too: a small U-Net trained on those human masks finds the lung fields of the films in ``DIR``
  (nih-real-256's ``labels.csv``), and the law is fitted to those: the films the renderer is measured against.
  The U-Net and its training (augmentation, loss, schedule, per-film standardisation) are ``lung_transfer``'s, at
  128 px and ``STEPS`` steps. Trained on half of covid-lungs' frontal films (one seed each), 1,200 steps scored as
  well as this script's earlier segmenter (600 steps) on the other half (Dice 0.934 against 0.933; 600 steps:
  0.929) and on every fifth nih-real-256 film (median outline IoU 0.885 against 0.882), though fewer of those
  films reached an IoU of 0.8 (87% against 89%).
``--renderer N`` fits the projection phantom's own exact lung masks of N plans the same way, for comparison.

    .venv/bin/python bench/lung_geometry.py --masks ../shared/data/covid-lungs/index.csv \\
        --films ../shared/data/nih-real-256 --renderer 400
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from joblib import Parallel, delayed
from lung_transfer import predict, train
from PIL import Image
from scipy import ndimage
from scipy.optimize import minimize

from synthvlp.evaluation.segmentation_data import SegmentationSet
from synthvlp.generation.phantom import project
from synthvlp.generation.phantom.anatomy import draw_anatomy, lung_field
from synthvlp.generation.phantom.lungmask import lung_mask
from synthvlp.generation.phantom.scene import read_scene
from synthvlp.generation.phantom.shapes import make_grid

FIT_SIZE = 64
NET_SIZE = 128
STEPS = 1200  # the segmenter's training steps: see the module docstring
CUT = 0.025  # the law is fitted inside the 2.5-97.5 percentiles and cut there: the extremes are mostly failed fits
PROPORTIONS = ("height", "medial_right", "medial_left", "dome_right", "dome_left", "left_lower")
TEMPLATE = draw_anatomy(read_scene([], ""), np.random.default_rng(0))


def outline(theta: np.ndarray):
    mid, apex, right, left, dome_right, dome_left, half_width, medial_right, medial_left = (float(t) for t in theta)
    return dataclasses.replace(
        TEMPLATE, mid=mid, apex=apex, base={"right": right, "left": left},
        dome={"right": max(dome_right, 0.0), "left": max(dome_left, 0.0)}, half_width=min(max(half_width, 0.05), 0.7),
        medial={"right": medial_right, "left": medial_left},
    )  # fmt: skip


def square(image: Image.Image, size: int, resample: int) -> Image.Image:
    """``image`` centred on a black square, resized: the lungs keep their proportions whatever the film's shape."""
    side = max(image.size)
    out = Image.new("L", (side, side))
    out.paste(image, ((side - image.size[0]) // 2, (side - image.size[1]) // 2))
    return out.resize((size, size), resample)


def start(mask: np.ndarray) -> list[float]:
    """A first guess from the mask's extent: both lungs' box, the midline gap's width."""
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    x0, x1 = cols.min() / FIT_SIZE, (cols.max() + 1) / FIT_SIZE
    mid = (x0 + x1) / 2
    centre = mask[:, int((mid - 0.1) * FIT_SIZE) : int((mid + 0.1) * FIT_SIZE)].any(0)
    medial = max((~centre).sum() / FIT_SIZE / 2, 0.02)
    bottom = (rows.max() + 1) / FIT_SIZE
    return [mid, rows.min() / FIT_SIZE, bottom, bottom, 0.05, 0.05, (x1 - x0) / 2, medial, medial]


def fit(mask: np.ndarray) -> dict[str, float]:
    """The outline that best covers ``mask`` (boolean, square, any size): IoU and the outline's parameters."""
    mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((FIT_SIZE, FIT_SIZE), Image.BILINEAR)) > 127
    grid = make_grid(FIT_SIZE)

    def loss(theta: np.ndarray) -> float:
        if min(theta[2], theta[3]) - theta[1] < 0.1:
            return 1.0
        a = outline(theta)
        field = np.maximum(lung_field(grid, a, "right"), lung_field(grid, a, "left"))
        return 1.0 - float((field * mask).sum() / ((field + mask - field * mask).sum() + 1e-6))

    result = minimize(loss, start(mask), method="Powell", options={"maxiter": 3000, "xtol": 1e-3, "ftol": 1e-4})
    result = minimize(loss, result.x, method="Nelder-Mead", options={"maxiter": 2000, "xatol": 1e-4, "fatol": 1e-5})
    a = outline(result.x)
    return {
        "iou": 1.0 - float(result.fun), "mid": a.mid, "apex": a.apex, "half_width": a.half_width,
        **{f"base_{s}": a.base[s] for s in a.base}, **{f"dome_{s}": a.dome[s] for s in a.dome},
        **{f"medial_{s}": a.medial[s] for s in a.medial},
    }  # fmt: skip


def fit_all(masks: list[np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame(Parallel(n_jobs=2)(delayed(fit)(m) for m in masks))


def read_square(paths: list[Path], size: int, resample: int) -> torch.Tensor:
    """(N, 1, size, size) films or masks in [0, 1], each squared by ``square``."""
    return torch.from_numpy(np.stack([
        np.asarray(square(Image.open(p).convert("L"), size, resample), dtype=np.float32) / 255.0 for p in paths
    ])).unsqueeze(1)  # fmt: skip


def human_masks(index: Path, size: int) -> SegmentationSet:
    """The frontal rows of a segmentation CSV, squared at ``size``."""
    table = pd.read_csv(index)
    table = table[table["view"] != "L"]
    films = read_square([index.parent / p for p in table["image"]], size, Image.BILINEAR)
    return SegmentationSet(films, (read_square([index.parent / p for p in table["mask"]], size, Image.NEAREST) > 0.5).long())


def two_largest(mask: np.ndarray) -> np.ndarray:
    """The two largest connected parts: the lungs, without stray blobs in the abdomen."""
    labels, count = ndimage.label(mask)
    if count <= 2:
        return mask
    sizes = ndimage.sum(mask, labels, range(1, count + 1))
    return np.isin(labels, np.argsort(sizes)[::-1][:2] + 1)


def segment_films(net: torch.nn.Module, folder: Path) -> list[np.ndarray]:
    """The lung fields ``net`` finds on every film of ``folder``'s ``labels.csv``, squared at ``NET_SIZE``."""
    films = read_square([folder / p for p in pd.read_csv(folder / "labels.csv")["path"]], NET_SIZE, Image.BILINEAR)
    return [two_largest(m) for m in predict(net, films).argmax(1).bool().numpy()]


def renderer_masks(count: int) -> list[np.ndarray]:
    """The projection phantom's exact lung fields of ``count`` normal plans (seeded 0..count-1)."""
    return [lung_mask(project([], NET_SIZE, np.random.default_rng(seed)).body, behind_heart=True) for seed in range(count)]


def proportions(fits: pd.DataFrame) -> pd.DataFrame:
    """``PROPORTIONS`` per film, each over the half width."""
    w = fits["half_width"]
    return pd.DataFrame({
        "height": (np.maximum(fits["base_right"], fits["base_left"]) - fits["apex"]) / w,
        "medial_right": fits["medial_right"] / w, "medial_left": fits["medial_left"] / w,
        "dome_right": fits["dome_right"] / w, "dome_left": fits["dome_left"] / w,
        "left_lower": (fits["base_left"] - fits["base_right"]) / w,
    })[list(PROPORTIONS)]  # fmt: skip


def framing(fits: pd.DataFrame) -> pd.Series:
    """Where the lungs sit: median and robust spread (interquartile range / 1.349) of apex, lower angle, centre."""
    lower = np.maximum(fits["base_right"], fits["base_left"])
    table = pd.DataFrame({"mid": fits["mid"], "apex": fits["apex"], "lower": lower, "centre_y": (fits["apex"] + lower) / 2,
                          "half_width": fits["half_width"], "height_over_w": (lower - fits["apex"]) / fits["half_width"]})
    spread = (table.quantile(0.75) - table.quantile(0.25)) / 1.349
    return pd.concat({"median": table.median(), "robust sd": spread}, axis=1).round(3)


def law(fits: pd.DataFrame, min_iou: float) -> str:
    kept = proportions(fits[fits["iou"] >= min_iou])
    low, high = kept.quantile(CUT), kept.quantile(1.0 - CUT)
    kept = kept[((kept >= low) & (kept <= high)).all(axis=1)]
    cholesky = np.linalg.cholesky(np.cov(kept.to_numpy(), rowvar=False))
    rounded = lambda v: tuple(round(float(x), 4) for x in v)  # noqa: E731
    return "\n".join([
        f"{len(kept)} films with IoU >= {min_iou}, inside the {100 * CUT:g}-{100 - 100 * CUT:g} percentiles:",
        kept.describe().T.round(3).to_string(), f"mean={rounded(kept.mean())}",
        f"cholesky=({', '.join(str(rounded(row)) for row in cholesky)})", f"low={rounded(low)}, high={rounded(high)}",
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--masks", type=Path, required=True, help="CSV with image, mask and view columns (covid-lungs' index.csv)")
    parser.add_argument("--films", type=Path, help="a folder with labels.csv (path column): fit these films' lung fields")
    parser.add_argument("--renderer", type=int, default=0, help="also fit this many of the renderer's own lung masks")
    parser.add_argument("--steps", type=int, default=STEPS, help="training steps (batch 16) of the segmenter")
    parser.add_argument("--min-iou", type=float, default=0.8, help="fits below this are left out of the law")
    args = parser.parse_args()
    human = human_masks(args.masks, NET_SIZE)
    if args.films:
        fields, source = segment_films(train(human, args.steps, seed=0), args.films), f"lung fields found in {args.films}"
    else:
        fields, source = list(human.masks[:, 0].bool().numpy()), f"human masks of {args.masks}"
    fits = fit_all(fields)
    print(f"{source}: outline IoU median {fits['iou'].median():.3f} "
          f"(quartiles {fits['iou'].quantile(0.25):.3f}-{fits['iou'].quantile(0.75):.3f}) over {len(fits)} films")  # fmt: skip
    print(law(fits, args.min_iou))
    print("framing of those films:\n" + framing(fits[fits["iou"] >= args.min_iou]).to_string())
    if args.renderer:
        print(f"framing of {args.renderer} projection-phantom films:\n" + framing(fit_all(renderer_masks(args.renderer))).to_string())


if __name__ == "__main__":
    main()
