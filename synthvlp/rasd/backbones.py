"""Dense backbones for RaSD pre-training: MONAI networks, or an open_clip image tower made dense.

The paper pre-trains a SwinUNETR with 32 output channels; a UNet is the cheap alternative for CPU runs and tests.
Both take (B, in_channels, *spatial) and return (B, out_channels, *spatial) features, in 2D or 3D. ``clip`` wraps
the image tower of a registered open_clip model config (2D only), so RaSD pre-trains exactly the tower a MedVLP
model uses and ``synthvlp.models.save_image_encoder`` hands it to ``pretrain.image_encoder``: both seeds in one
model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from synthvlp.rasd.config import BackboneConfig


def build_backbone(config: BackboneConfig | None = None, spatial_dims: int = 3) -> nn.Module:
    """A freshly initialised backbone; sizes must be multiples of 32 and at least 64 (SwinUNETR: five halvings, then
    instance norm needs two voxels) or of 2^(levels-1) (UNet)."""
    try:
        from monai.networks.nets import SwinUNETR, UNet
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("RaSD backbones need MONAI: pip install monai") from err
    config = config or BackboneConfig()
    if config.name == "clip":
        if spatial_dims != 2:
            raise ValueError(f"backbone 'clip' is a 2D image tower; the stream is {spatial_dims}D")
        return TowerDense(config.clip_model, config.out_channels)
    if config.name == "swinunetr":
        return SwinUNETR(
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            feature_size=config.feature_size,
            spatial_dims=spatial_dims,
            use_v2=True,
        )
    return UNet(
        spatial_dims=spatial_dims,
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        channels=config.channels,
        strides=(2,) * (len(config.channels) - 1),
        num_res_units=1,
    )


class TowerDense(nn.Module):
    """An open_clip image tower as a dense network: the tower's last feature map (patch tokens after ``ln_post``
    for a ViT, layer4 for a ResNet, via open_clip's ``forward_intermediates``; the trunk of our ``ConvTower``), a 1x1 projection to
    ``out_channels`` and bilinear upsampling back to the input size. Inputs in [0, 1], one or three channels, are
    resized to the tower's image size and normalised with its own mean and std, as its eval transform would."""

    def __init__(self, model_name: str, out_channels: int) -> None:
        super().__init__()
        from synthvlp.models import build_clip

        self.model_name = model_name
        self.visual = build_clip(model_name)[0].visual
        config = self.visual.preprocess_cfg
        self.size = tuple(config["size"])
        self.register_buffer("mean", torch.tensor(config["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config["std"]).view(1, 3, 1, 1), persistent=False)
        channels = self._features(torch.zeros(1, 3, *self.size)).shape[1]
        self.head = nn.Conv2d(channels, out_channels, kernel_size=1)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        from synthvlp.convtower import ConvTower

        if isinstance(self.visual, ConvTower):  # synthvlp's CNN tower: its trunk's last feature map
            return self.visual.trunk(x)
        out = self.visual.forward_intermediates(x, indices=1, intermediates_only=True, normalize_intermediates=True)
        return out["image_intermediates"][-1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = images.shape[-2:]
        x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        if tuple(size) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        features = self.head(self._features((x - self.mean) / self.std))
        return F.interpolate(features, size=size, mode="bilinear", align_corners=False)
