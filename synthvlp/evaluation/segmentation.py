"""Segmentation transfer: the pretrained image tower as a U-Net encoder, against the same network from scratch.

An open_clip ViT gives token grids of one resolution, so its decoder is UNETR's (MONAI blocks): evenly spaced
layers' patch tokens are upsampled to 1/2, 1/4, ... of the image and joined on the way up, and the image itself
feeds the full-resolution skip. A ModifiedResNet gives a pyramid (1/4 to 1/32), decoded by MONAI's U-Net decoder.
Scores are the foreground Dice per test image (``segmentation_data.dice_per_image``) with a percentile
bootstrap CI over test images (``synthvlp.bootstrap``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock
from monai.networks.nets.flexible_unet import UNetDecoder
from torch import nn

from synthvlp.bootstrap import percentile_bootstrap
from synthvlp.errors import UserError
from synthvlp.evaluation.segmentation_data import SegmentationSet, dice_per_image
from synthvlp.models import build_clip

Say = Callable[[str], None]


class ViTUNet(nn.Module):
    """UNETR over an open_clip ``VisionTransformer``: skips at 1, 1/2, ... 1/patch of the image, bottom at 1/patch."""

    def __init__(self, visual: nn.Module, num_classes: int = 2, feature_size: int = 16) -> None:
        super().__init__()
        patch = visual.patch_size[0]
        self.levels = int(math.log2(patch))
        if 2**self.levels != patch or self.levels < 1:
            raise UserError(f"ViT U-Net needs a power-of-two patch size, not {patch}")
        depth, width = len(visual.transformer.resblocks), visual.transformer.width
        if depth < self.levels:
            raise UserError(f"ViT U-Net needs at least {self.levels} transformer layers for patch {patch}, the tower has {depth}")
        self.visual = visual
        self.taps = [round(depth * (m + 1) / self.levels) - 1 for m in range(self.levels)]  # UNETR's 3/6/9/12 of 12
        norm = "instance"
        channels = [feature_size * 2**j for j in range(self.levels)]  # channels of the skip at 1/2**j
        self.image_skip = UnetrBasicBlock(2, 3, channels[0], kernel_size=3, stride=1, norm_name=norm, res_block=True)
        self.token_skips = nn.ModuleList(
            UnetrPrUpBlock(2, width, channels[j], num_layer=self.levels - j - 1, kernel_size=3, stride=1,
                           upsample_kernel_size=2, norm_name=norm, res_block=True)
            for j in range(1, self.levels)
        )
        ups, below = [], width
        for j in reversed(range(self.levels)):
            ups.append(UnetrUpBlock(2, below, channels[j], kernel_size=3, upsample_kernel_size=2, norm_name=norm, res_block=True))
            below = channels[j]
        self.ups = nn.ModuleList(ups)
        self.out = UnetOutBlock(2, channels[0], num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        grids = self.visual.forward_intermediates(images, indices=self.taps, intermediates_only=True)["image_intermediates"]
        skips = [self.image_skip(images)] + [block(grid) for block, grid in zip(self.token_skips, grids[:-1])]
        x = grids[-1]
        for up, skip in zip(self.ups, reversed(skips)):
            x = up(x, skip)
        return self.out(x)


class ResNetUNet(nn.Module):
    """MONAI's U-Net decoder over an open_clip ``ModifiedResNet``'s stages 1-4 (1/4 to 1/32), then x2 to the image."""

    def __init__(self, visual: nn.Module, num_classes: int = 2, decoder_channels: Sequence[int] = (256, 128, 64, 32)) -> None:
        super().__init__()
        self.visual = visual
        stages = [layer[-1].conv3.out_channels for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4)]
        # UNetDecoder never uses its first feature map as a skip; a 1-channel placeholder stands in for it.
        self.decoder = UNetDecoder(2, [1, *stages], list(decoder_channels), act=("relu", {"inplace": True}),
                                   norm=("batch", {}), dropout=0.0, bias=False, upsample="nontrainable", pre_conv="default",
                                   interp_mode="nearest", align_corners=None, is_pad=True)
        self.out = UnetOutBlock(2, decoder_channels[-1], num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        stages = self.visual.forward_intermediates(images, indices=[1, 2, 3, 4], intermediates_only=True)["image_intermediates"]
        x = self.decoder([images[:, :1], *stages], skip_connect=len(stages) - 1)
        return F.interpolate(self.out(x), size=images.shape[-2:], mode="bilinear", align_corners=False)


def build_unet(visual: nn.Module, num_classes: int = 2) -> nn.Module:
    """The U-Net for an open_clip image tower, chosen by its kind."""
    if hasattr(visual, "transformer") and hasattr(visual, "patch_size"):
        return ViTUNet(visual, num_classes)
    if hasattr(visual, "layer4"):
        return ResNetUNet(visual, num_classes)
    raise UserError(f"no U-Net for image tower {type(visual).__name__}; a ViT or a ModifiedResNet is needed")


def to_model_input(images: torch.Tensor, visual: nn.Module) -> torch.Tensor:
    """(N, 1, S, S) images in [0, 1] as the tower expects them: three channels, its mean and std."""
    mean = torch.tensor(visual.preprocess_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(visual.preprocess_cfg["std"]).view(1, 3, 1, 1)
    return (images.expand(-1, 3, -1, -1) - mean) / std


def input_size(visual: nn.Module) -> tuple[int, int]:
    """(height, width) the tower was built for; a ViT's position embeddings allow no other."""
    size = visual.preprocess_cfg["size"]
    return (size, size) if isinstance(size, int) else tuple(size)


def train_segmentation(net: nn.Module, visual: nn.Module, train: SegmentationSet, *, epochs: int, batch_size: int = 8,
                       lr: float = 1e-3, encoder_lr: float = 1e-4, seed: int = 0) -> list[float]:
    """Cross-entropy training of ``net`` in place; returns the mean loss of each epoch.

    The encoder gets a smaller learning rate so pretrained features are adapted rather than overwritten.
    """
    encoder = {id(p) for p in visual.parameters()}
    decoder = [p for p in net.parameters() if id(p) not in encoder]
    optimizer = torch.optim.AdamW([{"params": list(visual.parameters()), "lr": encoder_lr}, {"params": decoder, "lr": lr}])
    generator = torch.Generator().manual_seed(seed)
    net.train()
    losses = []
    for _ in range(epochs):
        order, total = torch.randperm(len(train.images), generator=generator), 0.0
        for begin in range(0, len(order), batch_size):
            rows = order[begin : begin + batch_size]
            loss = F.cross_entropy(net(to_model_input(train.images[rows], visual)), train.masks[rows, 0])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(rows)
        losses.append(total / len(order))
    net.eval()
    return losses


def dice_scores(net: nn.Module, visual: nn.Module, test: SegmentationSet, batch_size: int = 16) -> np.ndarray:
    """Foreground Dice of each test image."""
    with torch.no_grad():
        chunks = zip(test.images.split(batch_size), test.masks.split(batch_size))
        return torch.cat([dice_per_image(net(to_model_input(images, visual)), masks) for images, masks in chunks]).numpy()


def _encoder(tower: nn.Module, model: str, init: str, seed: int) -> nn.Module:
    if init == "pretrained":
        return copy.deepcopy(tower)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_clip(model)[0].visual


def finetune_segmentation(tower: nn.Module, model: str, train: SegmentationSet, test: SegmentationSet,
                          fractions: Sequence[float] = (0.1, 1.0), seeds: Sequence[int] = (0,), epochs: int = 10,
                          batch_size: int = 8, lr: float = 1e-3, encoder_lr: float = 1e-4, bootstrap: int = 1000,
                          inits: Sequence[str] = ("pretrained", "scratch"), say: Say | None = None) -> list[dict]:
    """Rows {fraction, seed, init, n_train, dice_mean, dice_ci_low, dice_ci_high} for each fraction, seed and init.

    ``tower`` is the pretrained image tower (``models.image_tower`` of a checkpoint record; it is copied, never
    trained) and ``model`` the model config name it was built from, which the scratch encoder is built from.
    Images must already be at the tower's input size (``load_segmentation_csv(path, size)``). The training
    subset of a (fraction, seed) is the same for both inits, and so are the decoder's initial weights, so the
    only difference between a pretrained and a scratch row is the encoder's starting point.
    """
    size = input_size(tower)
    for name, data in (("train", train), ("test", test)):
        if tuple(data.images.shape[-2:]) != size or len(data.images) == 0:
            raise UserError(f"segmentation {name} set: {len(data.images)} images of {tuple(data.images.shape[-2:])} px; "
                            f"model {model!r} needs some at {size} (load_segmentation_csv(path, size={size[0]}))")
    unknown = set(inits) - {"pretrained", "scratch"}
    if unknown:
        raise UserError(f"segmentation inits {sorted(unknown)}: only 'pretrained' and 'scratch' exist")
    rows = []
    for fraction in fractions:
        if not 0 < fraction <= 1:
            raise UserError(f"segmentation label fraction {fraction!r} must be in (0, 1]")
        for seed in seeds:
            count = max(1, math.ceil(fraction * len(train.images)))
            subset = train.subset(np.sort(np.random.default_rng(seed).permutation(len(train.images))[:count]))
            for init in inits:
                visual = _encoder(tower, model, init, seed)
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    net = build_unet(visual)
                losses = train_segmentation(net, visual, subset, epochs=epochs, batch_size=batch_size, lr=lr,
                                            encoder_lr=encoder_lr, seed=seed)
                dice = dice_scores(net, visual, test)
                interval = percentile_bootstrap(lambda images, dice=dice: dice[images].mean(), len(dice), bootstrap, np.random.default_rng(seed))
                low, high = float(interval.low), float(interval.high)
                rows.append({"fraction": fraction, "seed": seed, "init": init, "n_train": count, "dice_mean": float(dice.mean()),
                             "dice_ci_low": low, "dice_ci_high": high, "final_loss": losses[-1] if losses else float("nan")})
                if say is not None:
                    say(f"segmentation {init} {fraction:g} seed {seed}: Dice {dice.mean():.3f} ({low:.3f}-{high:.3f})")
    return rows
