"""The CLIP inference engine every evaluation uses: image and text embeddings, zero-shot probabilities, patch maps.

``ImageTextEngine`` holds a model with the eval transform and tokenizer it was trained with (BioViL's
``ImageTextInferenceEngine`` is the model), built from a pretrain checkpoint or, for the floor a trained model is
compared with, the same architecture randomly initialised from a seed. Zero-shot classification, grounding, the
linear probe and fine-tuning, the evaluation harness and the CLI all take an engine rather than a loose
(model, transform, tokenizer) triple.

Patch maps compare the text embedding with each patch (location) embedding in the joint space, by cosine
("similarity") or by dot product ("contribution", each location's share of the score when the image embedding is
their mean). For an open_clip ``VisionTransformer`` the patch tokens go through ``ln_post`` and ``proj``, exactly as
the pooled token does; for a ``ModifiedResNet`` the last feature map goes through the attention pool's value and
output projections (MaskCLIP's trick: the pool's query/key only weight locations, the value path is what is
projected). The patch-grid map is Gaussian-smoothed (``sigma`` in patch units, 0.5 by default: BioViL's 1.5 on its
15x15 grid moves the peak of an oracle map out of a real NIH box on our 8x8 grids,
``tests/evaluation/test_grounding_oracle.py``) and resampled once, bilinearly, straight into the original image's pixels by
undoing the eval transform's resize and centre crop (read from ``preprocess.transforms``, never assumed). Original
pixels the model never saw (cut off by the crop) are NaN in the map, as in hi-ml's BioViL engine, so overlays leave
them blank.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthvlp.checkpoints import ClipCheckpoint, load
from synthvlp.config import NEGATIVE_PROMPTS, POSITIVE_PROMPTS
from synthvlp.errors import UserError

DEFAULT_SIGMA = 0.5
MAP_KINDS = ("similarity", "contribution")


@dataclass(frozen=True)
class Frame:
    """Where the eval transform put the original image in the model input, per axis (y, x).

    ``input = scale * original + offset`` in pixel-edge coordinates (pixel i spans [i, i + 1)); ``original`` and
    ``input`` are (height, width).
    """

    original: tuple[int, int]
    input: tuple[int, int]
    scale: tuple[float, float]
    offset: tuple[float, float]


@dataclass
class ImageTextEngine:
    """A CLIP model in eval mode with its eval transform (PIL image -> tensor) and tokenizer (texts -> tokens)."""

    model: object
    preprocess: Callable
    tokenizer: Callable

    @classmethod
    def from_checkpoint(cls, checkpoint: Path | ClipCheckpoint, random_init_seed: int | None = None) -> ImageTextEngine:
        """The model a CLIP checkpoint (a path or a loaded one) holds; with ``random_init_seed``, its architecture
        initialised from that seed instead (the weights are not loaded)."""
        from synthvlp.models import clip_from_checkpoint

        record = checkpoint if isinstance(checkpoint, ClipCheckpoint) else load(checkpoint, ClipCheckpoint)
        return cls(*clip_from_checkpoint(record, random_init_seed))

    @property
    def visual(self):
        """The image tower (open_clip ``model.visual``), e.g. to fine-tune a copy of it."""
        return self.model.visual

    def encode_images(self, count: int, open_image: Callable[[int], object], batch_size: int = 128,
                      advance: Callable[[int], None] | None = None):
        """(count, dim) L2-normalised embeddings of images ``open_image(0 .. count - 1)``, opened and transformed one
        batch at a time; ``advance(n)`` is called after each batch of n."""
        import torch

        features = []
        with torch.no_grad():
            for begin in range(0, count, batch_size):
                index = range(begin, min(count, begin + batch_size))
                batch = torch.stack([self.preprocess(open_image(i).convert("RGB")) for i in index])
                features.append(self.model.encode_image(batch, normalize=True))
                if advance is not None:
                    advance(len(index))
        return torch.cat(features) if features else torch.zeros((0, 1))

    def encode_texts(self, texts: Sequence[str]):
        """(len(texts), dim) L2-normalised text embeddings."""
        import torch

        with torch.no_grad():
            return self.model.encode_text(self.tokenizer(list(texts)), normalize=True)

    def class_text_embeddings(self, classes: Sequence[str], templates: Sequence[str]):
        """(n_classes, dim): the normalised mean of each class's prompt embeddings (a prompt ensemble)."""
        features = self.encode_texts([t.format(name=name) for name in classes for t in templates])
        mean = features.reshape(len(classes), len(templates), -1).mean(dim=1)
        return mean / mean.norm(dim=-1, keepdim=True)

    def zero_shot_probabilities(self, image_features, classes: Sequence[str], positive: Sequence[str] = POSITIVE_PROMPTS,
                                negative: Sequence[str] = NEGATIVE_PROMPTS) -> np.ndarray:
        """(n_images, n_classes) p(positive): the softmax over each class's positive/negative prompt pair of the
        images' scaled cosine similarities (CheXzero)."""
        import torch

        if image_features.shape[0] == 0:
            return np.zeros((0, len(classes)))
        pos = self.class_text_embeddings(classes, positive)
        neg = self.class_text_embeddings(classes, negative)
        with torch.no_grad():
            pair = torch.stack([image_features @ pos.T, image_features @ neg.T], dim=-1) * self.model.logit_scale.exp()
            return pair.softmax(dim=-1)[..., 0].numpy()

    def similarity_maps(self, images: Sequence, phrases: Sequence[str], batch_size: int = 32, sigma: float = DEFAULT_SIGMA,
                        kind: str = "similarity") -> list[np.ndarray]:
        """One float32 (H, W) map per (images[i], phrases[i]) pair, in that image's original pixels.

        ``kind`` "similarity" is the cosine of each location embedding with the text (BioViL, MaskCLIP);
        "contribution" is their dot product without normalising the location: for a tower whose image embedding is
        the mean of its location embeddings (``ConvTower``, a mean-pooled ViT) it is each location's additive share
        of the image-text score, CAM's map, and a location that carries little signal cannot win by its direction
        alone. The model is put in eval mode for the call (BatchNorm and dropout must not see these batches) and
        restored.
        """
        if len(images) != len(phrases):
            raise ValueError(f"similarity_maps: {len(images)} images but {len(phrases)} phrases; they are paired")
        if kind not in MAP_KINDS:
            raise ValueError(f"similarity_maps: kind {kind!r} is not one of {MAP_KINDS}")
        was_training = self.model.training
        self.model.eval()
        try:
            return [heat for begin in range(0, len(images), batch_size)
                    for heat in self._maps(images[begin:begin + batch_size], phrases[begin:begin + batch_size], sigma, kind)]
        finally:
            self.model.train(was_training)

    def _maps(self, images: Sequence, phrases: Sequence[str], sigma: float, kind: str) -> list[np.ndarray]:
        """``similarity_maps`` of one batch."""
        import torch
        import torch.nn.functional as F
        from scipy.ndimage import gaussian_filter

        device = next(self.model.parameters()).device
        with torch.no_grad():
            prepared = [preprocess_with_frame(self.preprocess, image.convert("RGB")) for image in images]
            patches = dense_features(self.model, torch.stack([tensor for tensor, _ in prepared]).to(device)).float()
            if kind == "similarity":
                patches = F.normalize(patches, dim=-1)
            text = self.model.encode_text(self.tokenizer(list(phrases)).to(device), normalize=True).float()
            grids = torch.einsum("bhwd,bd->bhw", patches, text).cpu().numpy()
        return [to_original(gaussian_filter(grid, sigma) if sigma > 0 else grid, frame) for grid, (_, frame) in zip(grids, prepared)]


def _size(image) -> tuple[int, int]:
    """(height, width) of a PIL image or a (..., H, W) tensor."""
    return (image.height, image.width) if hasattr(image, "height") else tuple(image.shape[-2:])


def preprocess_with_frame(preprocess, image):
    """(model input tensor, Frame): runs ``preprocess`` step by step, recording each step's geometry.

    Resizes are measured (output size / input size per axis, as torchvision maps pixel edges); centre crops and
    pads follow torchvision's arithmetic (pad floor(d/2) before, crop offset round(d/2)). Any other step that
    changes the size cannot be undone and is an error naming it.
    """
    from open_clip.transform import CenterCropOrPad, ResizeKeepRatio
    from torchvision.transforms import CenterCrop, Resize

    steps = getattr(preprocess, "transforms", None)
    if steps is None:
        raise UserError(f"grounding: the eval transform {type(preprocess).__name__} has no .transforms list; "
                        "pass open_clip's Compose so its resize and crop can be undone")
    original = _size(image)
    scale, offset = [1.0, 1.0], [0.0, 0.0]
    for step in steps:
        before = _size(image)
        image = step(image)
        after = _size(image)
        if isinstance(step, (Resize, ResizeKeepRatio)):
            for axis in (0, 1):
                ratio = after[axis] / before[axis]
                scale[axis] *= ratio
                offset[axis] *= ratio
        elif isinstance(step, (CenterCrop, CenterCropOrPad)):
            for axis in (0, 1):
                grow = after[axis] - before[axis]
                offset[axis] += grow // 2 if grow > 0 else -int(round(-grow / 2.0))
        elif after != before:
            raise UserError(f"grounding: eval transform step {type(step).__name__} changes the image size "
                            f"{before} -> {after} and cannot be undone; only Resize and CenterCrop are supported")
    return image, Frame(original, _size(image), (scale[0], scale[1]), (offset[0], offset[1]))


def _axis_sampling(n_original: int, scale: float, offset: float, n_input: int, n_grid: int):
    """Bilinear taps along one axis: (low index, high index, high weight, pixel seen by the model)."""
    position = scale * (np.arange(n_original) + 0.5) + offset  # original pixel centres in input pixels
    grid = np.clip(position * n_grid / n_input - 0.5, 0, n_grid - 1)  # in grid cells, centres at k + 0.5
    low = np.floor(grid).astype(int)
    return low, np.minimum(low + 1, n_grid - 1), grid - low, (position >= 0) & (position < n_input)


def to_original(heat: np.ndarray, frame: Frame) -> np.ndarray:
    """A map covering the whole model input (any grid size) resampled into the original image's pixels.

    One bilinear resampling (grid cell centres interpolated, edges held), equivalent to upsampling to the input
    size and undoing the transform without interpolating twice. Pixels outside the model input are NaN.
    """
    heat = np.asarray(heat, dtype=np.float32)
    y0, y1, wy, seen_y = _axis_sampling(frame.original[0], frame.scale[0], frame.offset[0], frame.input[0], heat.shape[0])
    x0, x1, wx, seen_x = _axis_sampling(frame.original[1], frame.scale[1], frame.offset[1], frame.input[1], heat.shape[1])
    rows = heat[y0] * (1 - wy)[:, None] + heat[y1] * wy[:, None]
    out = (rows[:, x0] * (1 - wx) + rows[:, x1] * wx).astype(np.float32)
    out[~seen_y, :] = np.nan
    out[:, ~seen_x] = np.nan
    return out


def dense_features(model, batch):
    """(B, grid_h, grid_w, embed_dim) patch embeddings in the joint image-text space (not normalised)."""
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.transformer import VisionTransformer

    from synthvlp.convtower import ConvTower

    visual = model.visual
    if isinstance(visual, ConvTower):  # the image embedding is the mean of these
        return visual.dense(batch)
    if isinstance(visual, VisionTransformer):
        if visual.attn_pool is not None or visual.proj is None:
            raise UserError("grounding: ViTs with an attentional pooler or without a projection are not supported")
        # normalize_intermediates applies ln_post to every token, as _pool does before the CLS/mean token is projected
        out = visual.forward_intermediates(batch, indices=1, normalize_intermediates=True, intermediates_only=True)
        return out["image_intermediates"][-1].permute(0, 2, 3, 1) @ visual.proj
    if isinstance(visual, ModifiedResNet):
        features = visual.forward_intermediates(batch, indices=1, intermediates_only=True)["image_intermediates"][-1]
        pool = visual.attnpool
        return pool.c_proj(pool.v_proj(features.permute(0, 2, 3, 1)))
    raise UserError(f"grounding: image tower {type(visual).__name__} is not supported "
                    "(open_clip VisionTransformer or ModifiedResNet, or synthvlp's ConvTower)")
