"""The exemplar-similarity filter: reject a generated image that looks like a known-bad one.

SynCXR collected problematic real images (wrong body part, rotated, heavy artefacts, not a chest film) and
rejected every synthetic image whose feature similarity to any of them was too high. The bank is a folder of
such exemplars; its features are cached next to the run, keyed by the encoder and the files' contents, so a
rerun or a second shard does not encode it again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from synthvlp.encoders import ImageEncoder
from synthvlp.errors import UserError
from synthvlp.store import atomic_open

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_BANK_SIZE = 256
"""Exemplars are resized to this square before encoding; encoders resize further as they need."""


def exemplar_files(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"filter.exemplar_dir: {folder} is not a folder of exemplar images")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"filter.exemplar_dir: {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _load(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            gray = image.convert("L").resize((_BANK_SIZE, _BANK_SIZE), Image.Resampling.BILINEAR)
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"{path}: exemplar image cannot be read ({exc})") from None
    return np.asarray(gray, dtype=np.float32) / 255.0


def bank_features(folder: Path, encoder: ImageEncoder, cache_dir: Path) -> np.ndarray:
    """Features of every exemplar in ``folder``, from the cache when the files and encoder are unchanged."""
    files = exemplar_files(folder)
    digest = hashlib.sha256(encoder.name.encode())
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    cache = Path(cache_dir) / f"exemplars-{digest.hexdigest()[:16]}.npy"
    if cache.exists():
        return np.load(cache)
    features = encoder.encode(np.stack([_load(p) for p in files]))
    with atomic_open(cache, "wb") as handle:
        np.save(handle, features)
    return features


def max_similarity(features: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """Highest cosine similarity of each (L2-normalised) feature row to any exemplar."""
    return (features @ bank.T).max(axis=1) if len(features) else np.zeros(0)
