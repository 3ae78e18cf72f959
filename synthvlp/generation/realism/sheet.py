"""A contact sheet interleaving real and rendered films, so a reader judges them side by side at the same size."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

LABEL_HEIGHT = 12


def interleaved_sheet(real: np.ndarray, rendered: np.ndarray, count: int = 16, columns: int = 8, tile: int = 192) -> Image.Image:
    """Alternating real and rendered films (``count`` of each), each labelled below; films in [0, 1]."""
    tiles = []
    for i in range(min(count, len(real), len(rendered))):
        tiles += [("real", real[i]), ("rendered", rendered[i])]
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * (tile + 2), rows * (tile + LABEL_HEIGHT + 2)), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for index, (label, film) in enumerate(tiles):
        x, y = (index % columns) * (tile + 2), (index // columns) * (tile + LABEL_HEIGHT + 2)
        image = Image.fromarray(np.round(np.clip(film, 0, 1) * 255).astype(np.uint8)).resize((tile, tile), Image.BILINEAR)
        sheet.paste(image.convert("RGB"), (x, y))
        draw.text((x + 2, y + tile), label, fill=(120, 200, 120) if label == "real" else (240, 160, 60), font=font)
    return sheet
