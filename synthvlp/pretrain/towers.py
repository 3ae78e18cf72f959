"""An open_clip model plus what GLoRIA needs from it: per-region image features and per-word text features.

open_clip models expose only pooled embeddings through ``forward``. Forward hooks on the last image block and
the last text block capture their token outputs for any tower kind (ViT, ModifiedResNet, open_clip's text
transformer, a Hugging Face text encoder), and two small linear heads project them to the local embedding size,
as GLoRIA's local projections do. With the CLIP objective the heads are absent and the hooks unused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Features:
    image: torch.Tensor  # (n, embed_dim) pooled image embeddings
    text: torch.Tensor  # (n, embed_dim) pooled text embeddings
    logit_scale: torch.Tensor
    regions: torch.Tensor | None = None  # (n, r, local_dim)
    words: torch.Tensor | None = None  # (n, t, local_dim)
    word_mask: torch.Tensor | None = None  # (n, t) True for real (non-padding) tokens


def _image_block(clip: nn.Module) -> tuple[nn.Module, int]:
    """(module whose output holds region features, leading prefix tokens to drop)."""
    visual = clip.visual
    if hasattr(visual, "trunk") and hasattr(visual, "dense"):  # synthvlp.convtower.ConvTower: (n, c, h, w)
        return visual.trunk, 0
    if hasattr(visual, "layer4"):  # ModifiedResNet: (n, c, h, w) before attention pooling
        return visual.layer4, 0
    if hasattr(visual, "transformer"):  # VisionTransformer: (n, 1 + h*w, width), class token first
        return visual.transformer, 1
    raise ValueError(f"GLoRIA needs region features; unsupported image tower {type(visual).__name__}")


def _text_block(clip: nn.Module) -> tuple[nn.Module, int]:
    """(module whose output holds word features, padding token id)."""
    text = getattr(clip, "text", None)
    if text is not None and hasattr(text, "config") and hasattr(text, "transformer"):  # open_clip HFTextEncoder
        return text.transformer, int(text.config.pad_token_id or 0)
    owner = text if text is not None else clip
    return owner.ln_final, 0  # open_clip text transformer: (n, ctx, width), pads are token 0


def _as_tokens(output) -> torch.Tensor:
    """Token features (n, tokens, width) from a block output of any of the supported kinds."""
    if hasattr(output, "last_hidden_state"):
        return output.last_hidden_state
    if isinstance(output, tuple):
        output = output[0]
    if output.dim() == 4:
        return output.flatten(2).transpose(1, 2)
    return output


class MedVLP(nn.Module):
    """``forward(images, tokens) -> Features``; ``local_dim=None`` gives the global (CLIP/ConVIRT) model only."""

    def __init__(self, clip: nn.Module, local_dim: int | None, probe_image_size: int, context_length: int) -> None:
        super().__init__()
        self.clip = clip
        self.local_dim = local_dim
        self._captured: dict[str, torch.Tensor] = {}
        if local_dim is None:
            return
        image_block, self._prefix = _image_block(clip)
        text_block, self._pad_id = _text_block(clip)
        image_block.register_forward_hook(lambda m, i, o: self._captured.__setitem__("regions", _as_tokens(o)))
        text_block.register_forward_hook(lambda m, i, o: self._captured.__setitem__("words", _as_tokens(o)))
        with torch.no_grad():  # probe once for the token widths the heads project from
            was_training = clip.training
            clip.eval()
            clip(torch.zeros(1, 3, probe_image_size, probe_image_size), torch.ones(1, context_length, dtype=torch.long))
            clip.train(was_training)
        self.region_head = nn.Linear(self._captured["regions"].shape[-1], local_dim)
        self.word_head = nn.Linear(self._captured["words"].shape[-1], local_dim)
        self._captured.clear()

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> Features:
        image, text, logit_scale = self.clip(images, tokens)[:3]
        if self.local_dim is None:
            return Features(image, text, logit_scale)
        regions = self._captured.pop("regions")[:, self._prefix :]
        words = self._captured.pop("words")
        return Features(image, text, logit_scale, self.region_head(regions), self.word_head(words), tokens != self._pad_id)
