"""The ``source`` backend: each sample's own real film (planned from ``plan.labels``), not a rendering."""

from __future__ import annotations

import numpy as np
from PIL import Image

from synthvlp.config import RunConfig
from synthvlp.errors import UserError
from synthvlp.generation.images import (Advance, ImageBatch, Renderer, box_row, encode_png, manifest_columns, sample_files,
                                        sample_meta)


class SourceRenderer(Renderer):
    """Each sample's film as 8-bit grayscale, resized to ``images.size`` square (chest films are close to square;
    boxes scale with the film), and its boxes as rectangular masks in the stored pixels."""

    @classmethod
    def check(cls, config: RunConfig) -> None:
        if config.plan.labels is None:
            raise ValueError("images.backend 'source' stores real films: set plan.labels to the labelled set they come from")

    def render(self, rows: list[dict], advance: Advance) -> ImageBatch:
        from synthvlp.masks import encode_masks

        size = self.config.images.size
        samples, boxes = [], []
        for row in rows:
            pixels, scale = self._film(row, size)
            sample_boxes, masks = [], []
            for b in row["source_boxes"] or ():
                x0, y0 = max(0, int(b["x0"] * scale[0])), max(0, int(b["y0"] * scale[1]))
                x1, y1 = min(size, max(x0 + 1, round(b["x1"] * scale[0]))), min(size, max(y0 + 1, round(b["y1"] * scale[1])))
                mask = np.zeros((size, size), dtype=bool)
                mask[y0:y1, x0:x1] = True
                masks.append(mask)
                sample_boxes.append(box_row(b["name"], None, (x0, y0, x1, y1)))
            meta = {**sample_meta(row), "masks": [{**b, "bit": i} for i, b in enumerate(sample_boxes)], "source": row["source_image"]}
            sample = sample_files(row, encode_png(pixels), meta)
            sample["seg.png"] = encode_masks(masks)
            samples.append(sample)
            boxes.append(sample_boxes)
            advance(1)
        return ImageBatch(samples, manifest_columns(rows, ["source"] * len(rows), [0] * len(rows), boxes), {})

    @staticmethod
    def _film(row: dict, size: int) -> tuple[np.ndarray, tuple[float, float]]:
        """The film's pixels at ``size`` square and the (x, y) factors that map its boxes onto them."""
        try:
            with Image.open(row["source_image"]) as film:
                film.load()
                width, height = film.size
                pixels = np.asarray(film.convert("L").resize((size, size), Image.Resampling.BICUBIC))
        except (OSError, ValueError) as exc:
            raise UserError(f"images: sample {row['id']}: cannot read its film {row['source_image']}: {exc}") from None
        return pixels, (size / width, size / height)
