"""Tiny training data for the pre-training tests: random grey images with short captions, as shards or a CSV."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from synthvlp.store import write_shard

WORDS = ["cardiomegaly", "pleural effusion", "clear lungs", "pneumothorax", "normal heart size", "nodule"]


def png_bytes(rng: np.random.Generator, size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((rng.random((size, size)) * 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def caption(rng: np.random.Generator) -> str:
    return " ".join(rng.choice(WORDS, 2, replace=False))


def make_shards(folder: Path, n_shards: int = 2, per_shard: int = 24, seed: int = 0, corrupt: tuple[str, ...] = ()) -> list[Path]:
    """Shards of ``per_shard`` samples keyed ``t<shard><index>``; keys in ``corrupt`` get garbage PNG bytes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(n_shards):
        samples = []
        for i in range(per_shard):
            key = f"t{s}{i:04d}"
            image = b"\x89PNG not really" if key in corrupt else png_bytes(rng)
            samples.append({"__key__": key, "png": image, "txt": caption(rng).encode()})
        path = folder / f"train-{s:06d}.tar"
        write_shard(path, samples)
        paths.append(path)
    return paths


def make_csv(folder: Path, n: int = 20, seed: int = 1) -> Path:
    """A MIMIC-style CSV (image path relative to the CSV, report text, patient id) with its PNG files."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        (folder / "images" / f"{i}.png").write_bytes(png_bytes(rng))
        rows.append({"image": f"images/{i}.png", "text": caption(rng), "patient_id": f"p{i // 2}"})
    path = folder / "pairs.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path
