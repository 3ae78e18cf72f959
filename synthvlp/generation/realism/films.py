"""The two sets of films a realism measurement compares: rendered ones from image shards, real ones from a folder
or a CSV, all as float32 grayscale in [0, 1] at one size.

Real films keep their own split when the CSV has a ``split`` column (held-out = anything but ``train``), so a
patient's films never sit on both sides of the discriminator's train/test cut; otherwise a fixed hash of the file
name decides, the same on every run.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from synthvlp.errors import UserError
from synthvlp.runfolder import RunLayout
from synthvlp.store import read_shard

SUFFIXES = (".png", ".jpg", ".jpeg")
HELD_OUT_SHARE = 0.3  # held-out share of films without a stated split


@dataclass
class Films:
    """``images`` (n, size, size) float32 in [0, 1]; ``held_out`` marks the discriminator's test films."""

    images: np.ndarray
    held_out: np.ndarray
    names: list[str]


def to_film(image: Image.Image, size: int) -> np.ndarray:
    """One grayscale film in [0, 1] at ``size`` x ``size`` (8- and 16-bit PNGs alike; RGB averaged)."""
    array = np.asarray(image)
    peak = 65535.0 if image.mode in ("I", "I;16", "I;16B") or array.dtype == np.uint16 else 255.0
    array = array.astype(np.float32)
    if array.ndim == 3:
        array = array[..., :3].mean(axis=-1)
    film = array / peak
    if film.shape != (size, size):
        film = np.asarray(Image.fromarray(film, mode="F").resize((size, size), Image.BILINEAR))
    return np.clip(film, 0.0, 1.0).astype(np.float32)


def _hashed_held_out(name: str) -> bool:
    return zlib.crc32(name.encode()) % 1000 < HELD_OUT_SHARE * 1000


def shard_paths(source: Path) -> list[Path]:
    """The image shards of a run folder (``images/shard-*.tar``), a folder of shards, or one shard file."""
    source = Path(source)
    if source.is_file() and source.suffix == ".tar":
        return [source]
    shards = RunLayout(source).image_shards() or (sorted(source.glob("shard-*.tar")) if source.is_dir() else [])
    if shards:
        return shards
    raise UserError(f"{source}: no image shards (expected a run folder with images/shard-*.tar, a folder of "
                    "shard-*.tar files or one .tar file); run the images stage first")


def load_rendered(source: Path, size: int, limit: int) -> Films:
    """Up to ``limit`` rendered films, in sample order; held-out by the same fixed hash of the sample key."""
    images, names = [], []
    for shard in shard_paths(source):
        for sample in read_shard(shard):
            if "png" not in sample:
                continue
            images.append(to_film(Image.open(io.BytesIO(sample["png"])), size))
            names.append(str(sample["__key__"]))
            if len(images) == limit:
                break
        if len(images) == limit:
            break
    if not images:
        raise UserError(f"{source}: the image shards hold no .png films")
    return Films(np.stack(images), np.array([_hashed_held_out(n) for n in names]), names)


def _real_listing(source: Path) -> tuple[list[Path], list[bool]]:
    source = Path(source)
    if source.is_dir() and (source / "labels.csv").is_file():
        source = source / "labels.csv"
    if source.is_file() and source.suffix.lower() == ".csv":
        frame = pd.read_csv(source, dtype=str, keep_default_na=False)
        if "path" not in frame.columns:
            raise UserError(f"{source}: no 'path' column (image paths relative to the CSV's folder); found {list(frame.columns)}")
        paths = [source.parent / p for p in frame["path"]]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise UserError(f"{source}: {len(missing)} image(s) listed in 'path' do not exist, e.g. {missing[0]}")
        if "split" in frame.columns:
            return paths, [s != "train" for s in frame["split"]]
        return paths, [_hashed_held_out(p.name) for p in paths]
    if source.is_dir():
        paths = sorted(p for p in source.rglob("*") if p.suffix.lower() in SUFFIXES)
        if paths:
            return paths, [_hashed_held_out(p.name) for p in paths]
        raise UserError(f"{source}: no .png/.jpg films in this folder")
    raise UserError(f"{source}: not a folder of films or a CSV with a 'path' column")


def load_real(source: Path, size: int, limit: int | None = None) -> Films:
    """Real films from a folder (every .png/.jpg under it; a ``labels.csv`` there is used as the listing) or a CSV."""
    paths, held_out = _real_listing(source)
    if limit is not None:
        paths, held_out = paths[:limit], held_out[:limit]
    images = []
    for path in paths:
        try:
            images.append(to_film(Image.open(path), size))
        except OSError as exc:
            raise UserError(f"{path}: not a readable image ({exc})") from exc
    return Films(np.stack(images), np.array(held_out), [p.name for p in paths])
