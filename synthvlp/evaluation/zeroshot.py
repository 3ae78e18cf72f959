"""Zero-shot classification with a positive/negative prompt pair per class (CheXzero convention).

p(class) = exp(s+) / (exp(s+) + exp(s-)), where s+/- are the image's scaled cosine similarities to the
positive and negative prompts. AUC per class with a bootstrap 95% confidence interval; a class with no positive
or no negative sample gets NaN and a note instead of a misleading number.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

POSITIVE_PROMPTS = ("There is {name}.", "Findings consistent with {name}.")
NEGATIVE_PROMPTS = ("There is no {name}.", "No evidence of {name}.")


@dataclass
class ClassResult:
    name: str
    positives: int
    negatives: int
    auc: float
    ci_low: float
    ci_high: float
    note: str = ""


def load_labelled_images(shards: Sequence[Path], preprocess, classes: Sequence[str]):
    """(image tensor, 0/1 label matrix) from our shards; a class counts as positive when planned present."""
    import torch
    import webdataset as wds

    dataset = wds.WebDataset([str(p) for p in shards], shardshuffle=False, empty_check=False).decode("pil").to_tuple("png", "json")
    images, labels = [], []
    for image, meta in dataset:
        meta = meta if isinstance(meta, dict) else json.loads(meta)
        present = {e["name"] for e in meta["entities"] if e["assertion"] == "present"}
        images.append(preprocess(image))
        labels.append([name in present for name in classes])
    if not images:
        return torch.empty(0), np.zeros((0, len(classes)), dtype=bool)
    return torch.stack(images), np.asarray(labels, dtype=bool)


def zero_shot_probabilities(model, tokenizer, images, classes: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """(n_images, n_classes) probabilities from prompt-ensembled positive/negative text embeddings."""
    import torch

    with torch.no_grad():

        def embed(templates: Sequence[str]) -> torch.Tensor:
            prompts = [t.format(name=name) for name in classes for t in templates]
            features = model.encode_text(tokenizer(prompts), normalize=True).reshape(len(classes), len(templates), -1)
            mean = features.mean(dim=1)
            return mean / mean.norm(dim=-1, keepdim=True)

        positive, negative = embed(POSITIVE_PROMPTS), embed(NEGATIVE_PROMPTS)
        scale = model.logit_scale.exp()
        out = []
        for begin in range(0, images.shape[0], batch_size):
            features = model.encode_image(images[begin : begin + batch_size], normalize=True)
            pair = torch.stack([features @ positive.T, features @ negative.T], dim=-1) * scale
            out.append(pair.softmax(dim=-1)[..., 0])
    return torch.cat(out).numpy() if out else np.zeros((0, len(classes)))


def score_classes(probabilities: np.ndarray, labels: np.ndarray, classes: Sequence[str], bootstrap: int, seed: int) -> list[ClassResult]:
    """AUC per class with a percentile bootstrap CI (resampling images, fixed seed)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    results = []
    for column, name in enumerate(classes):
        y, p = labels[:, column], probabilities[:, column]
        positives, negatives = int(y.sum()), int((~y).sum())
        if positives == 0 or negatives == 0:
            results.append(ClassResult(name, positives, negatives, float("nan"), float("nan"), float("nan"), "needs positives and negatives"))
            continue
        auc = float(roc_auc_score(y, p))
        samples = []
        for _ in range(bootstrap):
            pick = rng.integers(0, len(y), len(y))
            if y[pick].any() and not y[pick].all():
                samples.append(roc_auc_score(y[pick], p[pick]))
        low, high = (np.percentile(samples, [2.5, 97.5]) if samples else (float("nan"), float("nan")))
        results.append(ClassResult(name, positives, negatives, auc, float(low), float(high)))
    return results


def plot_roc(probabilities: np.ndarray, labels: np.ndarray, classes: Sequence[str], path: Path) -> None:
    """One ROC curve per class with its AUC in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    from synthvlp.store import atomic_open

    figure, axis = plt.subplots(figsize=(5, 5))
    for column, name in enumerate(classes):
        y = labels[:, column]
        if y.any() and not y.all():
            fpr, tpr, _ = roc_curve(y, probabilities[:, column])
            axis.plot(fpr, tpr, label=f"{name} ({roc_auc_score(y, probabilities[:, column]):.2f})")
    axis.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    axis.set(xlabel="false positive rate", ylabel="true positive rate", title="Zero-shot ROC")
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=110)
    plt.close(figure)
