"""Finding masks as one multi-label PNG (bit i = finding i) and boxes, the sample's grounding labels.

One PNG holds every mask because overlapping findings (an effusion under a consolidation) need a pixel to carry
several labels; bit ``i`` of a pixel is set when finding ``i`` of the sample's ``masks`` list covers it. Up to
8 findings fit an 8-bit PNG, up to 16 a 16-bit one. A core module: the renderers (generation) write the PNG and
the ``shards`` benchmark (evaluation) reads it, and stages never import each other.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

MAX_MASKS = 16


def encode_masks(masks: list[np.ndarray]) -> bytes:
    """PNG of the bit-packed boolean ``masks`` (all of one shape); an empty list gives an all-zero 8-bit PNG."""
    if len(masks) > MAX_MASKS:
        raise ValueError(f"{len(masks)} findings in one image; a mask PNG holds at most {MAX_MASKS}")
    dtype = np.uint8 if len(masks) <= 8 else np.uint16
    shape = masks[0].shape if masks else (1, 1)
    packed = np.zeros(shape, dtype=dtype)
    for bit, mask in enumerate(masks):
        packed |= mask.astype(dtype) << dtype(bit)
    buffer = io.BytesIO()
    Image.fromarray(packed).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_masks(png: bytes, count: int) -> list[np.ndarray]:
    """The ``count`` boolean masks of a PNG written by ``encode_masks``."""
    packed = np.asarray(Image.open(io.BytesIO(png))).astype(np.uint32)
    return [(packed >> bit) & 1 == 1 for bit in range(count)]


def box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) in pixels, x1 and y1 exclusive; None for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
