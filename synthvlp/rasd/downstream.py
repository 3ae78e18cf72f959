"""Proof of transfer: pre-train a backbone on RaSD data, then fine-tune it (or a fresh one) to segment real images.

Small on purpose, so it runs on a CPU: 2D, a folder of PNG images and masks listed in a CSV, a 1x1 convolution head
on the backbone's dense features, cross-entropy, and the foreground Dice per test image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from synthvlp.csvfiles import read_csv_table
from synthvlp.errors import UserError
from synthvlp.rasd.backbones import build_backbone
from synthvlp.rasd.config import BackboneConfig, RaSDConfig
from synthvlp.rasd.loss import PrototypeDisentangleLoss
from synthvlp.rasd.stream import BufferedSynthesizer


@dataclass
class SegmentationSet:
    """(N, 1, S, S) float images in [0, 1] and (N, 1, S, S) int64 masks (0 background, 1 foreground)."""

    images: torch.Tensor
    masks: torch.Tensor

    def subset(self, index: np.ndarray) -> SegmentationSet:
        rows = torch.as_tensor(index, dtype=torch.long)
        return SegmentationSet(self.images[rows], self.masks[rows])


def load_segmentation_csv(index_csv: Path, size: int, image_column: str = "image", mask_column: str = "mask"):
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


def pretrain(config: RaSDConfig, steps: int, lr: float = 1e-3, seed: int = 0) -> tuple[nn.Module, list[float]]:
    """RaSD pre-training on CPU from ``config``; returns the backbone and its per-step losses."""
    with torch.random.fork_rng(devices=[]):  # seeds the initial weights without touching the caller's RNG
        torch.manual_seed(seed)
        net = build_backbone(config.backbone, spatial_dims=len(config.stream.spatial_size))
    batches = BufferedSynthesizer.from_config(config)
    loss_fn = PrototypeDisentangleLoss(config.loss, num_labels=config.fields.num_labels)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr)
    losses = []
    for _, (images, labels) in zip(range(steps), batches):
        loss = loss_fn(net(images), labels).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return net, losses


class SegmentationModel(nn.Module):
    """Backbone features, then a 1x1 convolution to class logits."""

    def __init__(self, backbone: nn.Module, feature_channels: int, num_classes: int = 2) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Conv2d(feature_channels, num_classes, kernel_size=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


def dice_per_image(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Foreground Dice of argmax predictions, one value per image (1 when both are empty)."""
    pred = logits.argmax(1).flatten(1).bool()
    true = masks.flatten(1).bool()
    overlap = (pred & true).sum(1).float()
    total = pred.sum(1).float() + true.sum(1).float()
    return torch.where(total > 0, 2 * overlap / total.clamp_min(1), torch.ones_like(total))


def finetune_dice(
    backbone_config: BackboneConfig,
    init: dict[str, torch.Tensor] | None,
    train: SegmentationSet,
    test: SegmentationSet,
    *,
    steps: int,
    batch_size: int = 8,
    lr: float = 1e-3,
    seed: int = 0,
) -> float:
    """Mean test Dice after fine-tuning from ``init`` (a backbone state dict) or from scratch (``None``)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # initial weights of the head (and of a backbone from scratch)
        torch.manual_seed(seed)
        model = SegmentationModel(build_backbone(backbone_config, spatial_dims=2), backbone_config.out_channels)
    if init is not None:
        model.backbone.load_state_dict(init)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        rows = torch.randint(0, len(train.images), (batch_size,), generator=gen)
        loss = F.cross_entropy(model(train.images[rows]), train.masks[rows, 0])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        chunks = zip(test.images.split(16), test.masks.split(16))
        scores = [dice_per_image(model(images), masks) for images, masks in chunks]
    return float(torch.cat(scores).mean())
