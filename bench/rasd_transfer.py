"""The RaSD transfer check's own small loop (``bench_rasd.py --downstream``): RaSD pre-training of a MONAI backbone
on CPU, then a 1x1-convolution segmentation head fine-tuned on its dense features, scored by foreground Dice.

Bench code, not the toolkit's: ``synthvlp pretrain rasd`` (``synthvlp.pretrain.rasd_engine``) is the real RaSD
trainer and ``synthvlp finetune --protocol segmentation`` (``synthvlp.evaluation.segmentation``) the real transfer
protocol. This loop stays small on purpose so the published transfer table can be rerun in minutes on a CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from synthvlp.evaluation.segmentation_data import SegmentationSet, dice_per_image
from synthvlp.rasd.backbones import build_backbone
from synthvlp.rasd.config import BackboneConfig, RaSDConfig
from synthvlp.rasd.loss import PrototypeDisentangleLoss
from synthvlp.rasd.stream import BufferedSynthesizer


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
