"""Zero-shot phrase grounding: text-to-patch maps in original pixels, scored against region masks.

The maps come from ``ImageTextEngine.similarity_maps`` (``synthvlp.evaluation.inference``: cosine or
contribution maps, smoothed and resampled into the original image's pixels; pixels the model never saw are NaN).
The metrics count NaN pixels as the map's minimum, i.e. "not found there".

Metrics per region (``score_region``), on the mask in original pixels:

* pointing game: 1 if the map's maximum (first one, row-major) lies inside the mask, else 0;
* chance: the pointing game's chance level, the share of the seen pixels that the mask covers (a peak placed
  uniformly at random lands inside with this probability), so a pointing figure can be read against it;
* IoU and Dice: the map min-max normalised to [0, 1] (a constant map becomes 0), thresholded ``>= t`` for each
  t in ``THRESHOLDS`` (0.1, 0.2, ..., 0.9), averaged over the thresholds;
* CNR (contrast-to-noise ratio, BioViL/MS-CXR): |mean_in - mean_out| / sqrt(var_in + var_out), population
  variances of the raw map inside and outside the mask (scale-free, so normalisation does not change it); a mask
  covering the whole image gives NaN, a map constant on both sides gives inf (perfect separation) or NaN.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from synthvlp.bootstrap import percentile_bootstrap
from synthvlp.config import POSITIVE_PROMPTS
from synthvlp.errors import UserError
from synthvlp.evaluation.benchmarks.base import LabelledSet, Region
from synthvlp.evaluation.inference import DEFAULT_SIGMA, ImageTextEngine

THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
METRICS = ("pointing", "chance", "iou", "dice", "cnr")


def score_region(heat: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Pointing game, threshold-averaged IoU and Dice, and CNR of one map against one non-empty mask."""
    heat, mask = np.asarray(heat, dtype=np.float64), np.asarray(mask, dtype=bool)
    if heat.shape != mask.shape:
        raise ValueError(f"score_region: map {heat.shape} and mask {mask.shape} differ in shape")
    if not mask.any():
        raise ValueError("score_region: the mask is empty; empty regions are skipped, not scored")
    seen = ~np.isnan(heat)
    if not seen.any():
        return {metric: float("nan") for metric in METRICS}
    filled = np.where(seen, heat, heat[seen].min())
    low, high = filled.min(), filled.max()
    normalised = (filled - low) / (high - low) if high > low else np.zeros_like(filled)
    ious, dices = [], []
    for threshold in THRESHOLDS:
        predicted = normalised >= threshold
        overlap = float(np.sum(predicted & mask))
        ious.append(overlap / float(np.sum(predicted | mask)))
        dices.append(2 * overlap / float(predicted.sum() + mask.sum()))
    inside, outside = filled[mask], filled[~mask]
    if outside.size:
        with np.errstate(divide="ignore", invalid="ignore"):
            cnr = float(np.float64(abs(inside.mean() - outside.mean())) / np.sqrt(inside.var() + outside.var()))
    else:
        cnr = float("nan")
    return {"pointing": float(mask.flat[int(np.argmax(filled))]), "chance": float(np.sum(mask & seen) / np.sum(seen)), "iou": float(np.mean(ious)),
            "dice": float(np.mean(dices)), "cnr": cnr}


def label_prompt(label: str) -> str:
    """The default text for a region without a phrase: the first positive zero-shot prompt."""
    return POSITIVE_PROMPTS[0].format(name=label)


def region_text(region: Region, prompt_for: Callable[[str], str] = label_prompt, use_phrases: bool = True) -> str:
    """The region's own phrase (MS-CXR) when there is one and ``use_phrases``, else its label's prompt."""
    return region.phrase if use_phrases and region.phrase else prompt_for(region.label)


def region_masks(labelled: LabelledSet, regions: Sequence[Region], images: Sequence) -> list[np.ndarray]:
    """Each region's boolean mask at its opened image's size; a mask of another size is an error naming it."""
    masks = []
    for region, image in zip(regions, images):
        mask = region.mask_array(image.height, image.width)
        if mask.shape != (image.height, image.width):
            raise UserError(f"{labelled.name}: image {labelled.ids[region.image]!r} is {image.width}x{image.height} "
                            f"but its {region.label!r} mask is {mask.shape[1]}x{mask.shape[0]}; masks must be in original pixels")
        masks.append(mask)
    return masks


def ground_set(engine: ImageTextEngine, labelled: LabelledSet, prompt_for: Callable[[str], str] = label_prompt,
               use_phrases: bool = True, batch_size: int = 32, sigma: float = DEFAULT_SIGMA, bootstrap: int = 200,
               seed: int = 0, kind: str = "similarity") -> tuple[list[dict], list[dict]]:
    """(a row per scored region, a row per label plus ``all``) for every region of ``labelled``.

    Maps are computed and scored one batch at a time and dropped (original-size maps of a whole benchmark do not
    fit in memory). Regions with an empty mask are skipped and counted in ``skipped_empty``.
    """
    rows: list[dict] = []
    skipped: dict[str, int] = {}
    regions = list(labelled.regions)
    for begin in range(0, len(regions), batch_size):
        chunk = regions[begin:begin + batch_size]
        images = [labelled.open(region.image) for region in chunk]
        masks = region_masks(labelled, chunk, images)
        keep = [k for k, mask in enumerate(masks) if mask.any()]
        for region, mask in zip(chunk, masks):
            if not mask.any():
                skipped[region.label] = skipped.get(region.label, 0) + 1
        texts = [region_text(chunk[k], prompt_for, use_phrases) for k in keep]
        maps = engine.similarity_maps([images[k] for k in keep], texts, batch_size, sigma, kind)
        for k, text, heat in zip(keep, texts, maps):
            rows.append({"image": labelled.ids[chunk[k].image], "label": chunk[k].label, "text": text,
                         **score_region(heat, masks[k])})
    return rows, summarise(rows, skipped, bootstrap, seed)


def summarise(rows: list[dict], skipped: dict[str, int], bootstrap: int, seed: int) -> list[dict]:
    """Per label (then ``all``): region count, skipped count, each metric's mean and percentile-bootstrap 95% CI.

    Means ignore NaN (CNR of a mask covering the image); the CI resamples the label's regions ``bootstrap``
    times with a fixed seed (0 resamples: NaN bounds).
    """
    rng = np.random.default_rng(seed)
    labels = list(dict.fromkeys([row["label"] for row in rows] + list(skipped)))
    groups = [(label, [row for row in rows if row["label"] == label], skipped.get(label, 0)) for label in labels]
    groups.append(("all", rows, sum(skipped.values())))
    summary = []
    for label, members, n_skipped in groups:
        entry: dict = {"label": label, "regions": len(members), "skipped_empty": n_skipped}
        values = np.array([[row[m] for m in METRICS] for row in members], dtype=np.float64).reshape(len(members), len(METRICS))
        with warnings.catch_warnings():  # an all-NaN column (CNR of whole-image masks) is reported as NaN, on purpose
            warnings.simplefilter("ignore", RuntimeWarning)
            interval = percentile_bootstrap(lambda picked, values=values: np.nanmean(values[picked], axis=0), len(members), bootstrap, rng)
        for i, metric in enumerate(METRICS):
            entry[metric], entry[f"{metric}_ci_low"], entry[f"{metric}_ci_high"] = (float(interval.estimate[i]), float(interval.low[i]),
                                                                                  float(interval.high[i]))
        summary.append(entry)
    return summary


def plot_overlays(labelled: LabelledSet, maps: Sequence[np.ndarray], regions: Sequence[Region], path: Path, n: int = 8) -> None:
    """A PNG grid, one row per region (first ``n``): the image, then the map over it with the truth outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from synthvlp.store import save_png

    if len(maps) != len(regions) or not regions:
        raise ValueError(f"plot_overlays: needs one map per region and at least one ({len(maps)} maps, {len(regions)} regions)")
    count = min(n, len(regions))
    figure, axes = plt.subplots(count, 2, figsize=(6, 3 * count), squeeze=False)
    for (left, right), heat, region in zip(axes, maps[:count], regions[:count]):
        image = labelled.open(region.image).convert("RGB")
        for axis in (left, right):
            axis.imshow(image)
            axis.axis("off")
        left.set_title(f"{labelled.ids[region.image]}", fontsize=7)
        right.imshow(heat, cmap="jet", alpha=0.45)  # NaN (unseen) pixels stay transparent
        mask = region.mask_array(image.height, image.width)
        if mask.any():
            right.contour(mask, levels=[0.5], colors="lime", linewidths=1)
        if region.box is not None:
            x0, y0, x1, y1 = region.box
            right.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="white", linestyle="--", linewidth=1))
        right.set_title(region_text(region)[:40], fontsize=7)
    figure.tight_layout()
    save_png(figure, path, dpi=90)
