"""Dense backbones for RaSD pre-training, built from MONAI (an optional dependency: ``pip install monai``).

The paper pre-trains a SwinUNETR with 32 output channels; a UNet is the cheap alternative for CPU runs and tests.
Both take (B, in_channels, *spatial) and return (B, out_channels, *spatial) features, in 2D or 3D.
"""

from __future__ import annotations

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
