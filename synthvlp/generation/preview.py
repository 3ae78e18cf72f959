"""A contact sheet of rendered samples: each image with its finding masks outlined and its IMPRESSION below.

The quickest way for a person to judge whether the images look like chest films, whether each finding is drawn
where the report says, and whether the masks sit on what was drawn.
"""

from __future__ import annotations

import io
import json
import textwrap
from collections.abc import Iterable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from synthvlp.errors import UserError
from synthvlp.runfolder import RunLayout
from synthvlp.store import read_shard

COLOURS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40),
           (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0)]  # fmt: skip
"""One colour per mask bit, distinct on a grey film."""


def read_samples(run: RunLayout, count: int) -> list[dict]:
    """The first ``count`` samples of a run's image shards, in sample order."""
    shards = run.image_shards()
    if not shards:
        raise UserError(f"{run.root}/images: no image shards; run the images stage first (synthvlp run CONFIG --stages plan,reports,images)")
    samples: list[dict] = []
    for shard in shards:
        for sample in read_shard(shard):
            samples.append(sample)
            if len(samples) == count:
                return samples
    return samples


def _gray(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    array = np.asarray(image, dtype=np.float32)
    peak = 65535.0 if image.mode in ("I", "I;16") else 255.0
    array = array.mean(axis=-1) if array.ndim == 3 else array
    return np.round(array / peak * 255).astype(np.uint8)


def _outlines(tile: np.ndarray, packed: np.ndarray, count: int) -> np.ndarray:
    """``tile`` (RGB) with the boundary pixels of each of ``count`` bit-packed masks in its colour."""
    for bit in range(count):
        mask = (packed >> bit) & 1 == 1
        inner = mask.copy()
        inner[1:, :] &= mask[:-1, :]
        inner[:-1, :] &= mask[1:, :]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        tile[mask & ~inner] = COLOURS[bit % len(COLOURS)]
    return tile


def render_tile(sample: dict, size: int, caption_lines: int = 4) -> Image.Image:
    """One sample: the film scaled to ``size`` with mask outlines, then its impression and mask legend."""
    film = Image.fromarray(_gray(sample["png"])).resize((size, size), Image.BILINEAR)
    tile = np.stack([np.asarray(film)] * 3, axis=-1).copy()
    meta = json.loads(sample.get("json", b"{}"))
    masks = meta.get("masks", [])
    if "seg.png" in sample and masks:
        packed = np.asarray(Image.open(io.BytesIO(sample["seg.png"])).resize((size, size), Image.NEAREST)).astype(np.uint32)
        tile = _outlines(tile, packed, len(masks))
    font = ImageFont.load_default()
    line_height = 12
    canvas = Image.new("RGB", (size, size + line_height * (caption_lines + 1) + 4), (20, 20, 20))
    canvas.paste(Image.fromarray(tile), (0, 0))
    draw = ImageDraw.Draw(canvas)
    width = max(size // 6, 10)
    lines = textwrap.wrap(f"{meta.get('id', sample['__key__'])}: {meta.get('impression', '')}", width)[:caption_lines]
    for row, line in enumerate(lines):
        draw.text((3, size + 2 + row * line_height), line, fill=(235, 235, 235), font=font)
    x = 3
    for bit, entry in enumerate(masks):
        label = " ".join(part for part in (entry.get("laterality"), entry["name"]) if part)
        draw.text((x, size + 2 + caption_lines * line_height), label, fill=COLOURS[bit % len(COLOURS)], font=font)
        x += int(draw.textlength(label, font=font)) + 8
    return canvas


def contact_sheet(samples: Iterable[dict], tile: int = 256, columns: int = 4) -> Image.Image:
    """Tiles of ``samples`` in rows of ``columns``."""
    tiles = [render_tile(sample, tile) for sample in samples]
    if not tiles:
        raise UserError("no samples to show")
    rows = -(-len(tiles) // columns)
    width, height = tiles[0].size
    sheet = Image.new("RGB", (columns * width + (columns - 1) * 4, rows * height + (rows - 1) * 4), (0, 0, 0))
    for index, image in enumerate(tiles):
        sheet.paste(image, ((index % columns) * (width + 4), (index // columns) * (height + 4)))
    return sheet
