"""The images stage: one rendered image per report, packed as WebDataset samples (png, txt, json)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
from PIL import Image

from synthvlp.config import RunConfig
from synthvlp.generation import procedural
from synthvlp.seeding import sample_rng, sample_seed


@dataclass
class ImageBatch:
    """What the runner writes for one unit: shard samples, manifest columns and warnings to count."""

    samples: list[dict[str, bytes | str]]
    columns: pa.Table
    undrawable: dict[str, int]


def caption(findings: str, impression: str) -> str:
    """The text a CLIP model is trained on: the whole report, findings first."""
    return f"FINDINGS: {findings} IMPRESSION: {impression}"


def encode_png(image) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def render_images(
    config: RunConfig,
    plan: pa.Table,
    reports: pa.Table,
    advance: Callable[[int], None] = lambda n: None,
) -> ImageBatch:
    """Render the samples of one unit; ``plan`` and ``reports`` are aligned by row."""
    samples, seeds = [], []
    undrawable: dict[str, int] = {}
    for plan_row, report_row in zip(plan.to_pylist(), reports.to_pylist(), strict=True):
        key = plan_row["id"]
        seed = sample_seed(config.run.seed, key, "image")
        rendering = procedural.render(plan_row["planned_entities"], config.images.size, sample_rng(config.run.seed, key, "image"))
        for name in rendering.undrawable:
            undrawable[name] = undrawable.get(name, 0) + 1
        meta = {
            "id": key,
            "split": plan_row["split"],
            "findings": report_row["findings"],
            "impression": report_row["impression"],
            "entities": plan_row["planned_entities"],
        }
        samples.append(
            {
                "__key__": key,
                "png": encode_png(rendering.image),
                "txt": caption(report_row["findings"], report_row["impression"]).encode(),
                "json": json.dumps(meta, sort_keys=True).encode(),
            }
        )
        seeds.append(seed)
        advance(1)
    columns = pa.table(
        {
            "id": plan.column("id"),
            "image_generator": [f"{procedural.NAME}@{procedural.VERSION}"] * plan.num_rows,
            "image_seed": pa.array(seeds, pa.int64()),
        }
    )
    return ImageBatch(samples=samples, columns=columns, undrawable=undrawable)
