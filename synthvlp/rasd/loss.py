"""Prototype-disentangling loss (RaSD): features cluster by synthetic label, and label prototypes repel.

For image b and label k, the prototype p_bk is the mean feature over the voxels labelled k. Pull: each voxel's
softmax over the image's prototypes of <p_bk, f(x)> / tau, cross-entropy against its own label. Push: each
prototype's softmax over the image's prototypes of <p_bk, p_bj> / tau (a row of the Gram matrix), cross-entropy
against itself. A label absent from an image has no prototype: it is left out of both softmaxes and of the push
average (the reference instead keeps a zero prototype, which competes with logit 0 and biases both terms).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from synthvlp.rasd.config import LossConfig


class PrototypeLossOutput(NamedTuple):
    """The weighted total to back-propagate and its unweighted parts, for logging."""

    total: torch.Tensor
    pull: torch.Tensor
    push: torch.Tensor


def prototypes(features: torch.Tensor, labels: torch.Tensor, num_labels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked-mean prototypes (B, K, C) of (B, C, N) features under (B, N) labels, and the (B, K) presence mask."""
    onehot = F.one_hot(labels, num_labels).to(features.dtype)  # (B, N, K)
    counts = onehot.sum(1)  # (B, K)
    sums = torch.bmm(features, onehot).transpose(1, 2)  # (B, K, C)
    return sums / counts.clamp_min(1).unsqueeze(-1), counts > 0


class PrototypeDisentangleLoss(nn.Module):
    """RaSD pre-training objective on dense (B, C, *spatial) features and (B, [1,] *spatial) integer labels.

    ``num_labels`` fixes K (labels must lie in [0, K)); left out, K is the batch's largest label + 1.
    """

    def __init__(self, config: LossConfig | None = None, num_labels: int | None = None) -> None:
        super().__init__()
        self.config = config or LossConfig()
        self.num_labels = num_labels

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> PrototypeLossOutput:
        batch, channels, *spatial = features.shape
        if labels.dim() == features.dim():
            labels = labels.squeeze(1)
        if tuple(labels.shape) != (batch, *spatial):
            raise ValueError(f"labels of shape {tuple(labels.shape)} do not match features {tuple(features.shape)}")
        labels = labels.reshape(batch, -1).long()
        num_labels = self.num_labels or int(labels.max()) + 1
        feats = features.reshape(batch, channels, -1)
        protos, present = prototypes(feats, labels, num_labels)
        absent = ~present.unsqueeze(-1)  # (B, K, 1)
        tau = self.config.tau
        very_negative = torch.finfo(feats.dtype).min

        pull_logits = (torch.bmm(protos, feats) / tau).masked_fill(absent, very_negative)  # (B, K, N)
        pull = F.cross_entropy(pull_logits, labels)

        gram = (torch.bmm(protos, protos.transpose(1, 2)) / tau).masked_fill(absent.transpose(1, 2), very_negative)
        targets = torch.arange(num_labels, device=labels.device).expand(batch, num_labels)
        push_rows = F.cross_entropy(gram.transpose(1, 2), targets, reduction="none")  # (B, K)
        push = torch.where(present, push_rows, 0.0).sum() / present.sum()  # absent rows are inf: dropped

        total = self.config.pull_weight * pull + self.config.push_weight * push
        return PrototypeLossOutput(total, pull, push)
