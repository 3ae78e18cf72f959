"""Segmentation sets and their score: images and masks listed in a CSV, and the foreground Dice per image.

Apart from ``segmentation`` (the U-Net transfer protocol) so that reading a set and scoring it need neither
MONAI nor open_clip: ``synthvlp finetune`` reads the set before building a model, and the RaSD transfer bench
(``bench/rasd_transfer.py``) scores its own small networks with the same Dice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from synthvlp.csvfiles import read_csv_table
from synthvlp.errors import UserError


@dataclass
class SegmentationSet:
    """(N, 1, S, S) float images in [0, 1] and (N, 1, S, S) int64 masks (0 background, 1 foreground)."""

    images: torch.Tensor
    masks: torch.Tensor

    def subset(self, index: np.ndarray) -> SegmentationSet:
        rows = torch.as_tensor(index, dtype=torch.long)
        return SegmentationSet(self.images[rows], self.masks[rows])

    def holdout(self, test_fraction: float, seed: int = 0) -> tuple[SegmentationSet, SegmentationSet]:
        """(train, test): a random ``test_fraction`` of the images (at least one) held out, each side in order.
        A set without patients or sources to group by can only be split by image."""
        order = np.random.default_rng(seed).permutation(len(self.images))
        cut = max(1, int(round(test_fraction * len(order))))
        return self.subset(np.sort(order[cut:])), self.subset(np.sort(order[:cut]))


def load_segmentation_csv(index_csv: Path, size: int, image_column: str = "image", mask_column: str = "mask") -> SegmentationSet:
    """Read every row of ``index_csv`` (paths relative to its folder), resized to size x size, sorted by image."""
    root = index_csv.parent
    table = read_csv_table(index_csv, "segmentation CSV", (image_column, mask_column), dtype=str, keep_default_na=False)
    rows = sorted(table.to_dict("records"), key=lambda row: row[image_column])
    images, masks = [], []
    for row in rows:
        try:
            image = Image.open(root / row[image_column]).convert("L").resize((size, size), Image.BILINEAR)
            mask = Image.open(root / row[mask_column]).convert("L").resize((size, size), Image.NEAREST)
        except (OSError, ValueError, SyntaxError) as exc:  # what PIL raises for missing, truncated or garbled files
            raise UserError(f"{index_csv}: row {row[image_column]!r}: unreadable image or mask ({exc})") from None
        images.append(np.asarray(image, dtype=np.float32) / 255.0)
        masks.append(np.asarray(mask) > 127)
    return SegmentationSet(
        torch.from_numpy(np.stack(images)).unsqueeze(1), torch.from_numpy(np.stack(masks)).long().unsqueeze(1)
    )


def dice_per_image(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Foreground Dice of argmax predictions, one value per image (1 when both are empty)."""
    pred = logits.argmax(1).flatten(1).bool()
    true = masks.flatten(1).bool()
    overlap = (pred & true).sum(1).float()
    total = pred.sum(1).float() + true.sum(1).float()
    return torch.where(total > 0, 2 * overlap / total.clamp_min(1), torch.ones_like(total))
