"""The images stage: one rendered image per report, packed as WebDataset samples (png, txt, json, seg.png).

The renderer is the ``Renderer`` registered under ``images.backend`` in ``config.RENDERERS``
(``synthvlp/generation/renderers/``): ``phantom`` draws each sample from its entity plan and also stores the finding
masks (``<key>.seg.png``, bit i = ``masks[i]`` of ``<key>.json``) and boxes (manifest ``finding_boxes``);
``diffusers`` renders the IMPRESSION with a local diffusion pipeline and stores no masks; ``source`` stores the
real film a sample was planned from (``plan.labels``), with its boxes as rectangular masks. This module holds
what every renderer shares: the sample and manifest-column formats.
"""

from __future__ import annotations

import io
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pyarrow as pa
from PIL import Image

from synthvlp import schema
from synthvlp.config import RENDERERS, RunConfig
from synthvlp.threads import Kind

Advance = Callable[[int], None]


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


class Renderer(ABC):
    """An image backend: turns a unit's planned, reported samples into an ``ImageBatch``.

    Registered by name in ``config.RENDERERS``; ``images.backend`` picks one, and the images stage makes one per
    unit (and per regeneration attempt) with the run's config. Draw each sample from its own seed
    (``synthvlp.seeding.sample_rng(run.seed, row["id"], "image", row["image_attempt"])``), so a unit renders the
    same whatever else is in it."""

    work_kind: ClassVar[Kind] = "small"
    """How it computes, for the thread pools: "compute" when it runs a model, "small" for many small array ops."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config

    @classmethod
    def check(cls, config: RunConfig) -> None:
        """Raise ValueError naming a setting this renderer needs and ``config`` lacks; run when a config is loaded."""

    @abstractmethod
    def render(self, rows: list[dict], advance: Advance) -> ImageBatch:
        """The samples of ``rows`` (each the plan row, ``findings``, ``impression`` and ``image_attempt``), in order;
        ``advance(n)`` reports n samples done."""


def render_images(
    config: RunConfig,
    plan: pa.Table,
    reports: pa.Table,
    advance: Advance = lambda n: None,
    attempt: int = 0,
) -> ImageBatch:
    """Render the samples of one unit with the configured renderer; ``plan`` and ``reports`` are aligned by row.
    ``attempt`` > 0 re-renders with a fresh seed per sample (regeneration after a rejected image), still derived
    from the sample id."""
    rows = [{**p, **r, "image_attempt": attempt} for p, r in zip(plan.to_pylist(), reports.select(["findings", "impression"]).to_pylist(), strict=True)]
    return RENDERERS.load(config.images.backend)(config).render(rows, advance)


def sample_meta(row: dict) -> dict:
    """A sample's ``<key>.json``: its id, split, report and planned entities (a renderer adds its own keys)."""
    keys = ("id", "split", "findings", "impression")
    return {**{k: row[k] for k in keys}, "entities": row["planned_entities"]}


def sample_files(row: dict, png: bytes, meta: dict) -> dict[str, bytes | str]:
    """One WebDataset sample: the image, the caption a CLIP model trains on and the metadata."""
    return {
        "__key__": row["id"],
        "png": png,
        "txt": caption(row["findings"], row["impression"]).encode(),
        "json": json.dumps(meta, sort_keys=True).encode(),
    }


def box_row(name: str, laterality: str | None, box: tuple[int, int, int, int] | None) -> dict:
    """One ``finding_boxes`` entry (``schema.BOX``); a finding drawn off the image has no box."""
    x0, y0, x1, y1 = box if box is not None else (None,) * 4
    return {"name": name, "laterality": laterality, "x0": x0, "y0": y0, "x1": x1, "y1": y1}


def manifest_columns(rows: list[dict], generator: list[str], seeds: list[int], boxes: list[list[dict] | None]) -> pa.Table:
    """The images stage's manifest columns: which renderer (name@version) and seed made each image, and its boxes
    (None for a renderer that knows no regions)."""
    return pa.table(
        {
            "id": pa.array([r["id"] for r in rows], pa.string()),
            "image_generator": pa.array(generator, pa.string()),
            "image_seed": pa.array(seeds, pa.int64()),
            "finding_boxes": pa.array(boxes, pa.list_(schema.BOX)),
        }
    )
