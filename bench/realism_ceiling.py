"""How far matching coarse statistics alone could bring the realism discriminator: a ceiling for layout tuning.

Tuning the renderer's shapes and ranges moves the films' mean layout, its per-pixel spread and their intensity
histograms. This bench asks, before anyone spends a week on that, what the fixed discriminator of
``synthvlp render realism`` would say if those were matched exactly. It scores three versions of the same films:

- ``as rendered``;
- ``histograms matched``: every film, real and rendered, mapped rank for rank onto the pooled histogram of the real
  training films, so no intensity cue is left;
- ``+ layout matched``: before that, each rendered film (standardised to mean 0, sd 1) is moved onto the real
  training films' per-pixel mean, and its deviation from the rendered mean scaled to their per-pixel spread.

Each at several discriminator input sizes (the films are area-downsampled first, so 4 px leaves 16 numbers per
film), with the layout probe beside it. Only the real *training* films define the targets; AUCs are on the held-out
films, as in ``measure``. A control column runs the last transform on real films: the real set split in two by
patient, one half layout-matched to the other, so what the transform itself leaves behind reads off directly. If
``+ layout matched`` stays far above the control, no change of shapes or ranges alone can pass the discriminator:
the joint arrangement of the coarse layout is what gives the films away.

Run from the repository root on a realism run folder (``bench/bench_realism.py`` leaves one in ``OUT/run``):

    .venv/bin/python bench/realism_ceiling.py /tmp/realism/run --real ../shared/data/nih-real-256
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from synthvlp.generation.realism import Films, Protocol, load_real, load_rendered
from synthvlp.generation.realism.discriminator import discriminator_auc
from synthvlp.generation.realism.probes import probe

QUANTILES = 257


def _standardised(films: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean, sd = films.mean((1, 2), keepdims=True), films.std((1, 2), keepdims=True) + 1e-6
    return (films - mean) / sd, mean, sd


def match_histograms(films: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each film's pixels replaced, rank for rank, by the quantiles of ``reference`` (pooled pixel values)."""
    levels = np.quantile(reference, np.linspace(0.0, 1.0, QUANTILES))
    out = np.empty_like(films)
    for i, film in enumerate(films):
        ranks = np.argsort(np.argsort(film.ravel(), kind="stable"), kind="stable") / (film.size - 1)
        out[i] = np.interp(ranks, np.linspace(0.0, 1.0, QUANTILES), levels).reshape(film.shape)
    return out


def match_layout(rendered: np.ndarray, real_train: np.ndarray, blur: float = 2.0) -> np.ndarray:
    """Rendered films moved onto the real films' per-pixel mean and spread (of films standardised one by one)."""
    real_std, _, _ = _standardised(real_train)
    films, mean, sd = _standardised(rendered)
    own_mean = gaussian_filter(films.mean(0), blur)
    ratio = gaussian_filter(real_std.std(0), 2 * blur) / np.maximum(gaussian_filter(films.std(0), 2 * blur), 1e-3)
    moved = gaussian_filter(real_std.mean(0), blur) + (films - own_mean) * ratio
    return np.clip(moved * sd + mean, 0.0, 1.0).astype(np.float32)


def _pooled(train: np.ndarray) -> np.ndarray:
    """About 150 training films, evenly picked: the pooled histogram every film is matched to."""
    return train[:: max(1, len(train) // 150)]


def variants(real: Films, rendered: Films) -> dict[str, tuple[Films, Films]]:
    """The three versions of (real, rendered) the table compares."""
    train = real.images[~real.held_out]
    reference = _pooled(train)
    real_matched = _with(real, match_histograms(real.images, reference))
    layout_matched = match_histograms(match_layout(rendered.images, train), reference)
    return {
        "as rendered": (real, rendered),
        "histograms matched": (real_matched, _with(rendered, match_histograms(rendered.images, reference))),
        "+ layout matched": (real_matched, _with(rendered, layout_matched)),
    }


def control(real: Films) -> tuple[Films, Films]:
    """Real films split in two by a hash of the name: half A as it is, half B through the full transform."""
    in_b = np.array([int(hashlib.sha256(name.encode()).hexdigest(), 16) % 2 == 1 for name in real.names])
    a, b = (_subset(real, ~in_b), _subset(real, in_b))
    train = a.images[~a.held_out]
    reference = _pooled(train)
    return _with(a, match_histograms(a.images, reference)), _with(b, match_histograms(match_layout(b.images, train), reference))


def _with(films: Films, images: np.ndarray) -> Films:
    return Films(images, films.held_out, films.names)


def _subset(films: Films, keep: np.ndarray) -> Films:
    return Films(films.images[keep], films.held_out[keep], [name for name, k in zip(films.names, keep) if k])


def table(real: Films, rendered: Films, sizes: list[int], seeds: tuple[int, ...]) -> str:
    cases = {**variants(real, rendered), "control: real vs real, + layout matched": control(real)}
    lines = ["| discriminator input | " + " | ".join(cases) + " |", "|---|" + "---:|" * len(cases)]
    for size in sizes:
        cells = []
        for real_films, rendered_films in cases.values():
            aucs = discriminator_auc(real_films, rendered_films, Protocol(input_size=size, seeds=seeds))
            cells.append(f"{np.mean(aucs):.3f} ± {np.std(aucs, ddof=1) if len(aucs) > 1 else 0.0:.3f}")
        lines.append(f"| CNN, {size} px | " + " | ".join(cells) + " |")
    probes = [probe(real_films, rendered_films).layout for real_films, rendered_films in cases.values()]
    lines.append("| layout probe | " + " | ".join(f"{value:.3f}" for value in probes) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rendered", type=Path, help="a run folder (or shards folder) of rendered films")
    parser.add_argument("--real", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "nih-real-256")
    parser.add_argument("--size", type=int, default=256, help="film size both sets are compared at")
    parser.add_argument("--limit", type=int, default=1000, help="rendered films to read")
    parser.add_argument("--input-sizes", default="64,16,8,4", help="discriminator input sizes, comma-separated")
    parser.add_argument("--seeds", type=int, default=3, help="discriminator seeds per cell")
    args = parser.parse_args()
    real = load_real(args.real, args.size)
    rendered = load_rendered(args.rendered, args.size, args.limit)
    print(f"{len(rendered.images)} rendered films from {args.rendered}, {len(real.images)} real from {args.real}, at {args.size} px\n")
    print(table(real, rendered, [int(s) for s in args.input_sizes.split(",")], tuple(range(args.seeds))))


if __name__ == "__main__":
    main()
