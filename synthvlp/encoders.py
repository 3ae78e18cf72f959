"""Image feature encoders for similarity search: an embedded one that needs no weights, and any local HF model.

Filters compare generated images against a bank of problematic exemplars by cosine similarity of these features.
Both encoders take grayscale pixels (n, h, w) in [0, 1] and return L2-normalised float32 features (n, d).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from synthvlp.errors import UserError


class ImageEncoder(Protocol):
    name: str

    def encode(self, pixels: np.ndarray) -> np.ndarray: ...


def _normalise(features: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return (features / np.maximum(norms, 1e-12)).astype(np.float32)


def _resize(pixels: np.ndarray, size: int) -> np.ndarray:
    """Area-average (n, h, w) to (n, size, size), whatever the input size."""
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[:, None]
    return torch.nn.functional.adaptive_avg_pool2d(tensor, size)[:, 0].numpy()


class GradientEncoder:
    """Weight-free features: a centred 16x16 thumbnail plus 8x8 cells of 9-bin gradient-orientation histograms.

    Centring makes cosine similarity a correlation, so two upright chest films score high and an upright film
    against a rotated, inverted or non-chest exemplar scores low. Deterministic and fast (vectorised numpy).
    """

    name = "gradient"

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        small = _resize(pixels, 64)
        thumb = _resize(small, 16).reshape(len(small), -1)
        gy, gx = np.gradient(small, axis=(1, 2))
        magnitude = np.hypot(gx, gy)
        angle = (np.arctan2(gy, gx) % np.pi) / np.pi * 9
        bins = np.minimum(angle.astype(int), 8)
        weighted = (bins[..., None] == np.arange(9)) * magnitude[..., None]  # (n, 64, 64, 9)
        histograms = weighted.reshape(len(small), 8, 8, 8, 8, 9).sum(axis=(2, 4)).reshape(len(small), -1)
        parts = [_normalise(part - part.mean(axis=1, keepdims=True)) for part in (thumb, histograms)]
        return _normalise(np.concatenate(parts, axis=1))


class HuggingFaceEncoder:
    """Any transformers image model in a local folder (e.g. a RAD-DINO or DINOv2 layout): pooled output, or the
    first token of the last hidden state when the model has no pooler."""

    def __init__(self, folder: Path, device: str = "cpu", batch_size: int = 32) -> None:
        folder = Path(folder)
        if not folder.is_dir() or not (folder / "config.json").is_file():
            raise UserError(f"{folder}: not a Hugging Face model folder (config.json missing); filter.exemplar_encoder is 'gradient' or such a folder")
        if not any((folder / f).exists() for f in ("preprocessor_config.json", "processor_config.json")):
            raise UserError(f"{folder}: preprocessor_config.json missing; save the model's image processor beside it")
        from transformers import AutoImageProcessor, AutoModel

        try:
            self.processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
            self.model = AutoModel.from_pretrained(folder, local_files_only=True).to(device).eval()
        except (OSError, ValueError, KeyError) as exc:  # transformers' errors for a folder that is not a loadable model
            raise UserError(f"{folder}: not a loadable Hugging Face image model ({str(exc).splitlines()[0][:200]})") from None
        self.device, self.batch_size = device, batch_size
        self.name = f"hf:{folder.name}"

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        out = []
        with torch.no_grad():
            for begin in range(0, len(pixels), self.batch_size):
                rgb = np.repeat((pixels[begin : begin + self.batch_size, ..., None] * 255).astype(np.uint8), 3, axis=-1)
                inputs = self.processor(images=list(rgb), return_tensors="pt").to(self.device)
                output = self.model(**inputs)
                pooled = getattr(output, "pooler_output", None)
                features = pooled if pooled is not None else output.last_hidden_state[:, 0]
                out.append(features.float().cpu().numpy())
        return _normalise(np.concatenate(out)) if out else np.zeros((0, 1), dtype=np.float32)


def build_encoder(spec: str) -> ImageEncoder:
    """``gradient`` (embedded, no weights) or a path to a local Hugging Face image-model folder."""
    if spec == "gradient":
        return GradientEncoder()
    return HuggingFaceEncoder(Path(spec))
