"""What tells rendered films from real ones: linear probes that stay graded where the CNN saturates.

The discriminator answers "can a small CNN tell the sets apart"; while a renderer is far from real it answers 1.0
whatever changes, which hides progress and says nothing about where to work. Each probe here is a logistic
regression trained on the training films and scored by ROC AUC on the held-out films (the discriminator's split,
so a patient never sits on both sides), restricted to one kind of evidence:

- ``layout``: each film as ``BLOCKS`` x ``BLOCKS`` block means, standardised per film (mean 0, sd 1), so exposure
  and contrast are out: where the anatomy sits and how bright each region is against the rest of the film;
- ``intensity``: the film's global histogram (quantiles and sd), no position at all.

Besides, ``cell_auc`` scores each block mean on its own (no training): a map of where rendered films are
systematically brighter (> 0.5) or darker (< 0.5) than real ones, which ``cell_map`` draws as a heat-map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthvlp.generation.realism.films import Films

BLOCKS = 8
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


@dataclass
class Probes:
    """Held-out AUC of each probe and the per-block AUC map (rows top to bottom)."""

    layout: float
    intensity: float
    cell_auc: list[list[float]]


def block_means(images: np.ndarray, blocks: int = BLOCKS) -> np.ndarray:
    """(n, blocks * blocks) block means; a side that ``blocks`` does not divide loses its last rows/columns."""
    n, side = len(images), images.shape[-1] // blocks
    cropped = images[:, : side * blocks, : side * blocks]
    return cropped.reshape(n, blocks, side, blocks, side).mean(axis=(2, 4)).reshape(n, -1)


def _standardised(features: np.ndarray) -> np.ndarray:
    return (features - features.mean(axis=1, keepdims=True)) / np.maximum(features.std(axis=1, keepdims=True), 1e-6)


def _histogram(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(len(images), -1)
    return np.column_stack([np.quantile(flat, QUANTILES, axis=1).T, flat.std(axis=1)])


def _held_out_auc(real: np.ndarray, rendered: np.ndarray, real_held: np.ndarray, rendered_held: np.ndarray) -> float:
    """AUC on held-out films of a logistic regression fitted to the rest (features standardised on the fit set)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_fit = np.concatenate([real[~real_held], rendered[~rendered_held]])
    y_fit = np.r_[np.zeros((~real_held).sum()), np.ones((~rendered_held).sum())]
    x_test = np.concatenate([real[real_held], rendered[rendered_held]])
    y_test = np.r_[np.zeros(real_held.sum()), np.ones(rendered_held.sum())]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, class_weight="balanced"))
    model.fit(x_fit, y_fit)
    return float(roc_auc_score(y_test, model.predict_proba(x_test)[:, 1]))


def probe(real: Films, rendered: Films, blocks: int = BLOCKS) -> Probes:
    """Run both probes and the per-block map on two film sets of one size."""
    from sklearn.metrics import roc_auc_score

    real_blocks, rendered_blocks = block_means(real.images, blocks), block_means(rendered.images, blocks)
    labels = np.r_[np.zeros(len(real_blocks)), np.ones(len(rendered_blocks))]
    both = np.concatenate([real_blocks, rendered_blocks])
    cells = [float(roc_auc_score(labels, both[:, j])) for j in range(both.shape[1])]
    return Probes(
        layout=_held_out_auc(_standardised(real_blocks), _standardised(rendered_blocks), real.held_out, rendered.held_out),
        intensity=_held_out_auc(_histogram(real.images), _histogram(rendered.images), real.held_out, rendered.held_out),
        cell_auc=np.asarray(cells).reshape(blocks, blocks).round(4).tolist(),
    )


def cell_map(cell_auc: list[list[float]], tile: int = 48):
    """Heat-map of the per-block AUC: red where rendered films are brighter than real ones, blue where darker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.asarray(cell_auc)
    figure, axes = plt.subplots(figsize=(grid.shape[1] * tile / 100 + 1.2, grid.shape[0] * tile / 100 + 0.6), dpi=100)
    shown = axes.imshow(grid, cmap="coolwarm", vmin=0.0, vmax=1.0)
    for (row, column), value in np.ndenumerate(grid):
        axes.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title("block AUC: >0.5 rendered brighter", fontsize=8)
    figure.colorbar(shown, ax=axes, fraction=0.046)
    figure.tight_layout()
    return figure
