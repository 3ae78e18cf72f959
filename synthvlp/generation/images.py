"""The images stage: one rendered image per report, packed as WebDataset samples (png, txt, json, seg.png).

Three backends: ``phantom`` draws each sample from its entity plan and also stores the finding masks
(``<key>.seg.png``, bit i = ``masks[i]`` of ``<key>.json``) and boxes (manifest ``finding_boxes``);
``diffusers`` renders the IMPRESSION with a local diffusion pipeline and stores no masks; ``source`` stores the
real film a sample was planned from (``plan.labels``), with its boxes as rectangular masks.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from PIL import Image

from synthvlp import schema
from synthvlp.config import RunConfig
from synthvlp.errors import ConfigError
from synthvlp.seeding import sample_rng, sample_seed


@dataclass
class ImageBatch:
    """What the runner writes for one unit: shard samples, manifest columns and warnings to count."""

    samples: list[dict[str, bytes | str]]
    columns: pa.Table
    undrawable: dict[str, int]
    warnings: dict[str, int] = field(default_factory=dict)


def caption(findings: str, impression: str) -> str:
    """The text a CLIP model is trained on: the whole report, findings first."""
    return f"FINDINGS: {findings} IMPRESSION: {impression}"


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 (8-bit) or uint16 (16-bit) grayscale array."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def render_images(
    config: RunConfig,
    plan: pa.Table,
    reports: pa.Table,
    advance: Callable[[int], None] = lambda n: None,
    attempt: int = 0,
) -> ImageBatch:
    """Render the samples of one unit; ``plan`` and ``reports`` are aligned by row. ``attempt`` > 0 re-renders
    with a fresh seed per sample (regeneration after a rejected image), still derived from the sample id."""
    rows = [{**p, **r, "image_attempt": attempt} for p, r in zip(plan.to_pylist(), reports.select(["findings", "impression"]).to_pylist(), strict=True)]
    if config.images.backend == "diffusers":
        return _render_diffusers(config, rows, advance)
    if config.images.backend == "source":
        return _store_sources(config, rows, advance)
    return _render_phantom(config, rows, advance)


def _meta(row: dict) -> dict:
    keys = ("id", "split", "findings", "impression")
    return {**{k: row[k] for k in keys}, "entities": row["planned_entities"]}


def _sample(row: dict, png: bytes, meta: dict) -> dict[str, bytes | str]:
    return {
        "__key__": row["id"],
        "png": png,
        "txt": caption(row["findings"], row["impression"]).encode(),
        "json": json.dumps(meta, sort_keys=True).encode(),
    }


def phantom_appearance(config: RunConfig):
    """The phantom's ``Appearance`` with ``images.appearance`` applied; a ConfigError naming an unknown range."""
    from synthvlp.generation.phantom.appearance import Appearance

    try:
        return Appearance.from_dict(config.images.appearance)
    except ValueError as exc:
        raise ConfigError(f"images.appearance: {exc}") from None


def _render_phantom(config: RunConfig, rows: list[dict], advance: Callable[[int], None]) -> ImageBatch:
    from synthvlp.generation import phantom
    from synthvlp.generation.phantom import classic
    from synthvlp.generation.phantom.masks import encode_masks

    if config.images.phantom == "classic":
        if config.images.appearance:
            raise ConfigError("images.appearance: these ranges are the projection phantom's; set images.phantom: projection")
        renderer, extra = classic, {}
    else:
        renderer, extra = phantom, {"appearance": phantom_appearance(config)}
    samples, seeds, boxes = [], [], []
    undrawable: dict[str, int] = {}
    for row in rows:
        key = row["id"]
        rng = sample_rng(config.run.seed, key, "image", row.get("image_attempt", 0))
        text = f"{row['findings']} {row['impression']}"
        rendering = renderer.render(row["planned_entities"], config.images.size, rng, text, config.images.bit_depth, **extra)
        for name in rendering.undrawable:
            undrawable[name] = undrawable.get(name, 0) + 1
        sample_boxes = [_box_row(f.name, f.laterality, f.box) for f in rendering.findings]
        meta = {**_meta(row), "masks": [{**b, "bit": i} for i, b in enumerate(sample_boxes)], "undrawable": rendering.undrawable}
        sample = _sample(row, encode_png(rendering.image), meta)
        sample["seg.png"] = encode_masks([f.mask for f in rendering.findings])
        samples.append(sample)
        seeds.append(sample_seed(config.run.seed, key, "image", row.get("image_attempt", 0)))
        boxes.append(sample_boxes)
        advance(1)
    generator = [f"{renderer.NAME}@{renderer.VERSION}"] * len(rows)
    return ImageBatch(samples, _columns(rows, generator, seeds, boxes), undrawable)


def _store_sources(config: RunConfig, rows: list[dict], advance: Callable[[int], None]) -> ImageBatch:
    """Each sample's own film as 8-bit grayscale, resized to ``images.size`` square (chest films are close to
    square; boxes scale with the film), and its boxes as rectangular masks in the stored pixels."""
    from synthvlp.errors import UserError
    from synthvlp.generation.phantom.masks import encode_masks

    size = config.images.size
    samples, boxes = [], []
    for row in rows:
        try:
            with Image.open(row["source_image"]) as film:
                film.load()
                width, height = film.size
                pixels = np.asarray(film.convert("L").resize((size, size), Image.Resampling.BICUBIC))
        except (OSError, ValueError) as exc:
            raise UserError(f"images: sample {row['id']}: cannot read its film {row['source_image']}: {exc}") from None
        sx, sy = size / width, size / height
        sample_boxes, masks = [], []
        for b in row["source_boxes"] or ():
            x0, y0 = max(0, int(b["x0"] * sx)), max(0, int(b["y0"] * sy))
            x1, y1 = min(size, max(x0 + 1, round(b["x1"] * sx))), min(size, max(y0 + 1, round(b["y1"] * sy)))
            mask = np.zeros((size, size), dtype=bool)
            mask[y0:y1, x0:x1] = True
            masks.append(mask)
            sample_boxes.append(_box_row(b["name"], None, (x0, y0, x1, y1)))
        meta = {**_meta(row), "masks": [{**b, "bit": i} for i, b in enumerate(sample_boxes)], "source": row["source_image"]}
        sample = _sample(row, encode_png(pixels), meta)
        sample["seg.png"] = encode_masks(masks)
        samples.append(sample)
        boxes.append(sample_boxes)
        advance(1)
    return ImageBatch(samples, _columns(rows, ["source"] * len(rows), [0] * len(rows), boxes), {})


def _box_row(name: str, laterality: str | None, box: tuple[int, int, int, int] | None) -> dict:
    x0, y0, x1, y1 = box if box is not None else (None,) * 4
    return {"name": name, "laterality": laterality, "x0": x0, "y0": y0, "x1": x1, "y1": y1}


def _columns(rows: list[dict], generator: list[str], seeds: list[int], boxes: list[list[dict] | None]) -> pa.Table:
    return pa.table(
        {
            "id": pa.array([r["id"] for r in rows], pa.string()),
            "image_generator": pa.array(generator, pa.string()),
            "image_seed": pa.array(seeds, pa.int64()),
            "finding_boxes": pa.array(boxes, pa.list_(schema.BOX)),
        }
    )


def _render_diffusers(config: RunConfig, rows: list[dict], advance: Callable[[int], None]) -> ImageBatch:
    from synthvlp.generation.diffusion import load_renderer

    settings = config.images.diffusers
    renderer = load_renderer(settings)
    samples, seeds = [], []
    truncated = 0
    for start in range(0, len(rows), settings.batch_size):
        batch = rows[start : start + settings.batch_size]
        batch_seeds = [sample_seed(config.run.seed, row["id"], "image", row.get("image_attempt", 0)) for row in batch]
        prompts = [renderer.prompt(caption(row["findings"], row["impression"]), row["impression"], row["planned_entities"]) for row in batch]
        result = renderer.render(prompts, batch_seeds, config.images.size)
        truncated += result.truncated
        for row, image in zip(batch, result.images, strict=True):
            samples.append(_sample(row, encode_png(image), _meta(row)))
        seeds.extend(batch_seeds)
        advance(len(batch))
    warnings = {"impression truncated to the tokenizer's max length": truncated} if truncated else {}
    generator = [renderer.name] * len(rows)
    return ImageBatch(samples, _columns(rows, generator, seeds, [None] * len(rows)), {}, warnings)
