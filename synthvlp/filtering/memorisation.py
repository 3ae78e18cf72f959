"""The memorisation guard: each rendered film's nearest training film, and whether it is a copy of it.

A diffusion model trained on a few hundred patients can reproduce one of them, and a synthetic set that contains
a training patient's film is not safe to share. For every rendered film we find its nearest training film in two
passes: a fixed feature (the centred 16x16 thumbnail ``image_checks.image_signatures`` uses for near-duplicates)
picks the ``CANDIDATES`` closest training films, and the Pearson correlation of the full films (at the index's
size) with those candidates is the score. A film whose score reaches ``filter.max_train_correlation`` is
rejected. The training films come from the ``training-films.npz`` that ``synthvlp render train`` writes beside
the pipeline (keys and uint8 films, ``filter.train_films``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from synthvlp.errors import UserError
from synthvlp.filtering.image_checks import image_signatures

CANDIDATES = 16
"""Training films per rendered film whose full-size correlation is computed: the thumbnail feature ranks a
copy first, but films of one layout are close in it, so a few runners-up are checked too."""
CHUNK = 32
"""Rendered films whose candidates are gathered at once: 32 x 16 films of 256 px is 128 MiB of float32."""


@dataclass(frozen=True)
class TrainingFilms:
    keys: np.ndarray  # (n,) training sample keys
    signatures: np.ndarray  # (n, 256) thumbnail features
    pixels: np.ndarray  # (n, size * size) centred, unit-norm films
    size: int


def _centred(films: np.ndarray) -> np.ndarray:
    """(n, h, w) films as centred, unit-norm rows: the dot product of two rows is their Pearson correlation."""
    flat = films.reshape(len(films), -1).astype(np.float32)
    flat = flat - flat.mean(axis=1, keepdims=True)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)


@cache
def load_training_films(path: Path) -> TrainingFilms:
    """The index at ``path`` (read once per process), or a ``UserError`` naming the file and what is wrong."""
    where = f"filter.train_films = {path}"
    if not Path(path).is_file():
        raise UserError(f"{where}: no such file; point it at the training-films.npz in a `synthvlp render train` pipeline folder")
    try:
        with np.load(path, allow_pickle=False) as data:
            keys, films = data["keys"], data["films"]
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"{where}: not a training-film index (arrays 'keys' and 'films'): {exc}") from None
    if films.ndim != 3 or films.shape[1] != films.shape[2] or len(keys) != len(films) or not len(films):
        raise UserError(f"{where}: expected n square films and n keys, got films {films.shape} and {len(keys)} keys")
    pixels = films.astype(np.float32) / 255.0
    return TrainingFilms(keys=keys.astype(str), signatures=image_signatures(pixels), pixels=_centred(pixels), size=films.shape[1])


def _resize(films: np.ndarray, size: int) -> np.ndarray:
    """(n, h, w) films area-resampled (or interpolated, when smaller) to (n, size, size)."""
    if films.shape[1:] == (size, size):
        return films
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(films, dtype=np.float32))[:, None]
    mode = "area" if films.shape[1] > size else "bilinear"
    return torch.nn.functional.interpolate(tensor, size=(size, size), mode=mode)[:, 0].numpy()


@dataclass(frozen=True)
class Nearest:
    keys: list[str]  # each film's nearest training film
    correlation: np.ndarray  # its Pearson correlation with that film


def nearest_training_films(pixels: np.ndarray, index: TrainingFilms) -> Nearest:
    """For (n, h, w) films in [0, 1]: the training film each is most correlated with, among its thumbnail
    feature's ``CANDIDATES`` nearest."""
    if not len(pixels):
        return Nearest([], np.zeros(0))
    candidates = min(CANDIDATES, len(index.keys))
    similarity = image_signatures(pixels) @ index.signatures.T
    shortlist = np.argpartition(-similarity, candidates - 1, axis=1)[:, :candidates]
    rows = _centred(_resize(pixels, index.size))
    correlation = np.concatenate([
        np.einsum("nd,nkd->nk", rows[start : start + CHUNK], index.pixels[shortlist[start : start + CHUNK]])
        for start in range(0, len(rows), CHUNK)
    ])  # fmt: skip
    best = correlation.argmax(axis=1)
    picked = shortlist[np.arange(len(pixels)), best]
    return Nearest([str(k) for k in index.keys[picked]], correlation[np.arange(len(pixels)), best].astype(np.float64))
