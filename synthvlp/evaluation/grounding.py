"""Zero-shot phrase grounding: text-to-patch similarity maps in original pixels, scored against region masks.

A map compares the text embedding with each patch (location) embedding in the joint space, by cosine
("similarity") or by dot product ("contribution", each location's share of the score when the image embedding is
their mean; ``similarity_maps``). For an
open_clip ``VisionTransformer`` the patch tokens go through ``ln_post`` and ``proj``, exactly as the pooled token
does; for a ``ModifiedResNet`` the last feature map goes through the attention pool's value and output
projections (MaskCLIP's trick: the pool's query/key only weight locations, the value path is what is projected).
The patch-grid map is Gaussian-smoothed (``sigma`` in patch units, 0.5 by default: BioViL's 1.5 on its 15x15 grid
moves the peak of an oracle map out of a real NIH box on our 8x8 grids, ``tests/test_grounding_oracle.py``) and
resampled once,
bilinearly, straight into the original image's pixels by undoing the eval transform's resize and centre crop
(read from ``preprocess.transforms``, never assumed). Original pixels the model never saw (cut off by the crop)
are NaN in the map, as in hi-ml's BioViL engine, so overlays leave them blank; the metrics count them as the
map's minimum, i.e. "not found there".

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthvlp.bootstrap import percentile_bootstrap
from synthvlp.config import POSITIVE_PROMPTS
from synthvlp.errors import UserError
from synthvlp.evaluation.benchmarks.base import LabelledSet, Region

THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
METRICS = ("pointing", "chance", "iou", "dice", "cnr")
DEFAULT_SIGMA = 0.5
MAP_KINDS = ("similarity", "contribution")


@dataclass(frozen=True)
class Frame:
    """Where the eval transform put the original image in the model input, per axis (y, x).

    ``input = scale * original + offset`` in pixel-edge coordinates (pixel i spans [i, i + 1)); ``original`` and
    ``input`` are (height, width).
    """

    original: tuple[int, int]
    input: tuple[int, int]
    scale: tuple[float, float]
    offset: tuple[float, float]


def _size(image) -> tuple[int, int]:
    """(height, width) of a PIL image or a (..., H, W) tensor."""
    return (image.height, image.width) if hasattr(image, "height") else tuple(image.shape[-2:])


def preprocess_with_frame(preprocess, image):
    """(model input tensor, Frame): runs ``preprocess`` step by step, recording each step's geometry.

    Resizes are measured (output size / input size per axis, as torchvision maps pixel edges); centre crops and
    pads follow torchvision's arithmetic (pad floor(d/2) before, crop offset round(d/2)). Any other step that
    changes the size cannot be undone and is an error naming it.
    """
    from open_clip.transform import CenterCropOrPad, ResizeKeepRatio
    from torchvision.transforms import CenterCrop, Resize

    steps = getattr(preprocess, "transforms", None)
    if steps is None:
        raise UserError(f"grounding: the eval transform {type(preprocess).__name__} has no .transforms list; "
                        "pass open_clip's Compose so its resize and crop can be undone")
    original = _size(image)
    scale, offset = [1.0, 1.0], [0.0, 0.0]
    for step in steps:
        before = _size(image)
        image = step(image)
        after = _size(image)
        if isinstance(step, (Resize, ResizeKeepRatio)):
            for axis in (0, 1):
                ratio = after[axis] / before[axis]
                scale[axis] *= ratio
                offset[axis] *= ratio
        elif isinstance(step, (CenterCrop, CenterCropOrPad)):
            for axis in (0, 1):
                grow = after[axis] - before[axis]
                offset[axis] += grow // 2 if grow > 0 else -int(round(-grow / 2.0))
        elif after != before:
            raise UserError(f"grounding: eval transform step {type(step).__name__} changes the image size "
                            f"{before} -> {after} and cannot be undone; only Resize and CenterCrop are supported")
    return image, Frame(original, _size(image), (scale[0], scale[1]), (offset[0], offset[1]))


def _axis_sampling(n_original: int, scale: float, offset: float, n_input: int, n_grid: int):
    """Bilinear taps along one axis: (low index, high index, high weight, pixel seen by the model)."""
    position = scale * (np.arange(n_original) + 0.5) + offset  # original pixel centres in input pixels
    grid = np.clip(position * n_grid / n_input - 0.5, 0, n_grid - 1)  # in grid cells, centres at k + 0.5
    low = np.floor(grid).astype(int)
    return low, np.minimum(low + 1, n_grid - 1), grid - low, (position >= 0) & (position < n_input)


def to_original(heat: np.ndarray, frame: Frame) -> np.ndarray:
    """A map covering the whole model input (any grid size) resampled into the original image's pixels.

    One bilinear resampling (grid cell centres interpolated, edges held), equivalent to upsampling to the input
    size and undoing the transform without interpolating twice. Pixels outside the model input are NaN.
    """
    heat = np.asarray(heat, dtype=np.float32)
    y0, y1, wy, seen_y = _axis_sampling(frame.original[0], frame.scale[0], frame.offset[0], frame.input[0], heat.shape[0])
    x0, x1, wx, seen_x = _axis_sampling(frame.original[1], frame.scale[1], frame.offset[1], frame.input[1], heat.shape[1])
    rows = heat[y0] * (1 - wy)[:, None] + heat[y1] * wy[:, None]
    out = (rows[:, x0] * (1 - wx) + rows[:, x1] * wx).astype(np.float32)
    out[~seen_y, :] = np.nan
    out[:, ~seen_x] = np.nan
    return out


def dense_features(model, batch):
    """(B, grid_h, grid_w, embed_dim) patch embeddings in the joint image-text space (not normalised)."""
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.transformer import VisionTransformer

    from synthvlp.convtower import ConvTower

    visual = model.visual
    if isinstance(visual, ConvTower):  # the image embedding is the mean of these
        return visual.dense(batch)
    if isinstance(visual, VisionTransformer):
        if visual.attn_pool is not None or visual.proj is None:
            raise UserError("grounding: ViTs with an attentional pooler or without a projection are not supported")
        # normalize_intermediates applies ln_post to every token, as _pool does before the CLS/mean token is projected
        out = visual.forward_intermediates(batch, indices=1, normalize_intermediates=True, intermediates_only=True)
        return out["image_intermediates"][-1].permute(0, 2, 3, 1) @ visual.proj
    if isinstance(visual, ModifiedResNet):
        features = visual.forward_intermediates(batch, indices=1, intermediates_only=True)["image_intermediates"][-1]
        pool = visual.attnpool
        return pool.c_proj(pool.v_proj(features.permute(0, 2, 3, 1)))
    raise UserError(f"grounding: image tower {type(visual).__name__} is not supported "
                    "(open_clip VisionTransformer or ModifiedResNet, or synthvlp's ConvTower)")


def similarity_maps(model, preprocess, tokenizer, images: Sequence, phrases: Sequence[str], batch_size: int = 32,
                    sigma: float = DEFAULT_SIGMA, kind: str = "similarity") -> list[np.ndarray]:
    """One float32 (H, W) map per (images[i], phrases[i]) pair, in that image's original pixels.

    ``kind`` "similarity" is the cosine of each location embedding with the text (BioViL, MaskCLIP);
    "contribution" is their dot product without normalising the location: for a tower whose image embedding is
    the mean of its location embeddings (``ConvTower``, a mean-pooled ViT) it is each location's additive share of
    the image-text score, CAM's map, and a location that carries little signal cannot win by its direction alone.
    The model is put in eval mode for the call (BatchNorm and dropout must not see these batches) and restored.
    """
    import torch
    import torch.nn.functional as F
    from scipy.ndimage import gaussian_filter

    if len(images) != len(phrases):
        raise ValueError(f"similarity_maps: {len(images)} images but {len(phrases)} phrases; they are paired")
    if kind not in MAP_KINDS:
        raise ValueError(f"similarity_maps: kind {kind!r} is not one of {MAP_KINDS}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    maps = []
    try:
        with torch.no_grad():
            for begin in range(0, len(images), batch_size):
                prepared = [preprocess_with_frame(preprocess, image.convert("RGB")) for image in images[begin:begin + batch_size]]
                batch = torch.stack([tensor for tensor, _ in prepared]).to(device)
                patches = dense_features(model, batch).float()
                if kind == "similarity":
                    patches = F.normalize(patches, dim=-1)
                text = model.encode_text(tokenizer(list(phrases[begin:begin + batch_size])).to(device), normalize=True).float()
                grids = torch.einsum("bhwd,bd->bhw", patches, text).cpu().numpy()
                for grid, (_, frame) in zip(grids, prepared):
                    maps.append(to_original(gaussian_filter(grid, sigma) if sigma > 0 else grid, frame))
    finally:
        model.train(was_training)
    return maps


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


def score_grounding(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Each metric of ``METRICS`` as an array over the (map, mask) pairs; see ``score_region``."""
    if len(maps) != len(masks):
        raise ValueError(f"score_grounding: {len(maps)} maps but {len(masks)} masks")
    scores = [score_region(heat, mask) for heat, mask in zip(maps, masks)]
    return {metric: np.array([s[metric] for s in scores], dtype=np.float64) for metric in METRICS}


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


def ground_set(model, preprocess, tokenizer, labelled: LabelledSet, prompt_for: Callable[[str], str] = label_prompt,
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
        maps = similarity_maps(model, preprocess, tokenizer, [images[k] for k in keep], texts, batch_size, sigma, kind)
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

    from synthvlp.store import atomic_open

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
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=90)
    plt.close(figure)
