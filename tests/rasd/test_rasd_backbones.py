"""MONAI backbones for RaSD: dense features of the configured width, 2D and 3D, trainable with the loss."""

import pytest
import torch

from synthvlp.rasd import PrototypeDisentangleLoss
from synthvlp.rasd.backbones import build_backbone
from synthvlp.rasd.config import BackboneConfig

pytest.importorskip("monai")


@pytest.mark.parametrize(
    "config, spatial",
    [
        (BackboneConfig(name="unet", out_channels=8, channels=(8, 16)), (32, 32)),
        (BackboneConfig(name="unet", out_channels=8, channels=(8, 16)), (16, 16, 16)),
        (BackboneConfig(name="swinunetr", out_channels=8, feature_size=12), (64, 64)),
        pytest.param(
            BackboneConfig(name="swinunetr", out_channels=8, feature_size=12), (64, 64, 64), marks=pytest.mark.slow
        ),
    ],
)
def test_dense_features_and_gradients(config, spatial):
    torch.manual_seed(0)
    net = build_backbone(config, spatial_dims=len(spatial))
    features = net(torch.rand(2, 1, *spatial))
    assert features.shape == (2, 8, *spatial)
    PrototypeDisentangleLoss(num_labels=3)(features, torch.randint(0, 3, (2, 1, *spatial))).total.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters() if p.requires_grad)
