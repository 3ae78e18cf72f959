"""Label-efficiency protocols: linear probe and full fine-tuning at 1/10/100% of the training labels.

Both protocols train on a fixed-seed subset of the training images (``label_fraction_split``: whole patients,
at least one positive per class where the set has one) and score each class by AUC on the test images that have
a 1 or 0 for it. NaN labels are unknown, never negatives: they are skipped per class in training and scoring.
The caller's engine is never modified; fine-tuning works on a copy of its image tower.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from synthvlp.errors import UserError
from synthvlp.evaluation.benchmarks.base import LabelledSet
from synthvlp.evaluation.inference import ImageTextEngine

Say = Callable[[str], None]


LINEAR_PROBE = "linear_probe"
"""The ``protocol`` value of linear-probe rows in ``finetune.csv``."""


def label_fraction_split(labelled: LabelledSet, fraction: float, seed: int) -> np.ndarray:
    """Sorted row indices of a ``fraction`` of ``labelled`` (pass the training split), drawn by patient.

    Patients (``group``; each image its own patient when there is none) are shuffled with ``seed``. First, for
    each class in order, the first shuffled patient with a positive image is taken if no taken patient has one,
    so a 1% split of a rare class is still trainable; then patients are added in shuffled order until at least
    ``ceil(fraction * n)`` images are taken. The positives rule can take a little more than the fraction.
    """
    if not 0 < fraction <= 1:
        raise UserError(f"label fraction {fraction!r} must be in (0, 1]")
    n = len(labelled)
    if fraction == 1 or n == 0:
        return np.arange(n)
    groups = labelled.group if labelled.group is not None else [str(i) for i in range(n)]
    names = sorted(set(groups))
    members: dict[str, list[int]] = {name: [] for name in names}
    for row, name in enumerate(groups):
        members[name].append(row)
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    positive = np.nan_to_num(labelled.labels, nan=0.0) == 1
    taken: list[str] = []
    for column in range(positive.shape[1]):
        if not any(positive[members[name], column].any() for name in taken):
            first = next((name for name in order if positive[members[name], column].any()), None)
            if first is not None:
                taken.append(first)
    target, count = math.ceil(fraction * n), sum(len(members[name]) for name in taken)
    for name in order:
        if count >= target:
            break
        if name not in taken:
            taken.append(name)
            count += len(members[name])
    return np.array(sorted(row for name in taken for row in members[name]), dtype=np.int64)


def class_rows(protocol: str, fraction: float, seed: int, train: LabelledSet, test_labels: np.ndarray,
               scores: np.ndarray, pool: int) -> list[dict]:
    """One row per class: test AUC over the test images labelled 1/0 for it, and the training counts: the
    subset's images (``n_subset``; more than ``fraction`` of the ``pool`` training images when a positive per
    class had to be added) and those labelled for the class (``n_train``)."""
    rows = []
    for column, name in enumerate(train.classes):
        known_train = ~np.isnan(train.labels[:, column])
        known = ~np.isnan(test_labels[:, column])
        y = test_labels[known, column] == 1
        auc = float(roc_auc_score(y, scores[known, column])) if 0 < y.sum() < len(y) else float("nan")
        rows.append({"protocol": protocol, "fraction": fraction, "seed": seed, "class": name, "auc": auc,
                     "n_train_pos": int((train.labels[known_train, column] == 1).sum()), "n_train": int(known_train.sum()),
                     "n_test": int(known.sum()), "n_subset": len(train), "n_pool": pool})
    return rows


def mean_auc(rows: Sequence[dict]) -> list[dict]:
    """Mean AUC over the scorable classes of each (protocol, fraction, seed), in first-seen order."""
    keys = list(dict.fromkeys((r["protocol"], r["fraction"], r["seed"]) for r in rows))
    out = []
    for protocol, fraction, seed in keys:
        values = [r["auc"] for r in rows if (r["protocol"], r["fraction"], r["seed"]) == (protocol, fraction, seed) and r["auc"] == r["auc"]]
        out.append({"protocol": protocol, "fraction": fraction, "seed": seed, "mean_auc": float(np.mean(values)) if values else float("nan")})
    return out


def linear_probe(engine: ImageTextEngine, train_set: LabelledSet, test_set: LabelledSet, fractions: Sequence[float] = (0.01, 0.1, 1.0),
                 seeds: Sequence[int] = (0,), C: float = 1.0, batch_size: int = 128, say: Say | None = None) -> list[dict]:
    """Logistic regression per class on frozen, normalised image embeddings; rows as ``class_rows``.

    Features are standardised on the training subset so one ``C`` means the same for every model's embedding
    scale; ``C`` is fixed (no inner CV) because at 1% there are too few images to cross-validate. A class whose
    training subset lacks positives or negatives gets a NaN AUC rather than a constant predictor's 0.5.
    """
    _check_classes(train_set, test_set)
    engine.model.eval()
    train_x = engine.encode_images(len(train_set), train_set.open, batch_size).numpy()
    test_x = engine.encode_images(len(test_set), test_set.open, batch_size).numpy()
    rows = []
    for fraction in fractions:
        for seed in seeds:
            index = label_fraction_split(train_set, fraction, seed)
            train = train_set.select(index)
            scores = np.full(test_set.labels.shape, np.nan)
            for column in range(len(train.classes)):
                known = ~np.isnan(train.labels[:, column])
                y = train.labels[known, column] == 1
                if 0 < y.sum() < len(y):
                    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
                    classifier.fit(train_x[index][known], y)
                    scores[:, column] = classifier.decision_function(test_x)
            rows += class_rows(LINEAR_PROBE, fraction, seed, train, test_set.labels, np.nan_to_num(scores), len(train_set))
            if say is not None:
                say(f"linear probe {fraction:g} seed {seed}: {len(index)} training images")
    return rows


class ImageClassifier(nn.Module):
    """An image tower (open_clip ``model.visual``) and a linear head, one logit per class."""

    def __init__(self, visual: nn.Module, embed_dim: int, num_classes: int) -> None:
        super().__init__()
        self.visual = visual
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.visual(images))


def _batch(labelled: LabelledSet, rows: Sequence[int], preprocess) -> torch.Tensor:
    return torch.stack([preprocess(labelled.open(int(i)).convert("RGB")) for i in rows])


def masked_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy over the known (non-NaN) cells only, so unknown labels teach nothing."""
    known = ~torch.isnan(labels)
    loss = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(labels), reduction="none")
    return (loss * known).sum() / known.sum().clamp_min(1)


def train_classifier(engine: ImageTextEngine, train: LabelledSet, *, epochs: int = 3, batch_size: int = 16, lr: float = 1e-4,
                     head_lr: float = 1e-3, weight_decay: float = 0.05, seed: int = 0,
                     say: Say | None = None) -> tuple[ImageClassifier, list[float]]:
    """A copy of the engine's image tower plus a head trained end to end; returns it and the mean loss of each epoch.

    The head starts from ``seed`` and batches are drawn from a generator seeded with it, so a run is
    reproducible without touching the global RNG; the head gets a larger learning rate as it starts from zero
    knowledge while the tower is already trained.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        classifier = ImageClassifier(copy.deepcopy(engine.visual), engine.visual.output_dim, len(train.classes))
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW([{"params": classifier.visual.parameters(), "lr": lr},
                                   {"params": classifier.head.parameters(), "lr": head_lr}], weight_decay=weight_decay)
    labels = torch.from_numpy(np.asarray(train.labels, dtype=np.float32))
    classifier.train()
    losses = []
    for epoch in range(epochs):
        order, total = torch.randperm(len(train), generator=generator), 0.0
        for begin in range(0, len(train), batch_size):
            rows = order[begin : begin + batch_size]
            loss = masked_bce(classifier(_batch(train, rows.tolist(), engine.preprocess)), labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(rows)
        losses.append(total / max(len(train), 1))
        if say is not None:
            say(f"fine-tune epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f}")
    classifier.eval()
    return classifier, losses


def full_finetune(engine: ImageTextEngine, train_set: LabelledSet, test_set: LabelledSet, fractions: Sequence[float] = (0.01, 0.1, 1.0),
                  seeds: Sequence[int] = (0,), epochs: int = 3, batch_size: int = 16, lr: float = 1e-4, head_lr: float = 1e-3,
                  weight_decay: float = 0.05, say: Say | None = None) -> list[dict]:
    """The image tower and a linear head fine-tuned with masked BCE per (fraction, seed); rows as ``class_rows``."""
    _check_classes(train_set, test_set)
    rows = []
    for fraction in fractions:
        for seed in seeds:
            train = train_set.select(label_fraction_split(train_set, fraction, seed))
            classifier, _ = train_classifier(engine, train, epochs=epochs, batch_size=batch_size, lr=lr,
                                             head_lr=head_lr, weight_decay=weight_decay, seed=seed, say=say)
            with torch.no_grad():
                scores = torch.cat([classifier(_batch(test_set, range(b, min(b + batch_size, len(test_set))), engine.preprocess))
                                    for b in range(0, len(test_set), batch_size)]).numpy()
            rows += class_rows("full_finetune", fraction, seed, train, test_set.labels, scores, len(train_set))
    return rows


def _check_classes(train: LabelledSet, test: LabelledSet) -> None:
    if len(train) == 0 or len(test) == 0:
        raise UserError(f"{train.name} ({len(train)} images) and {test.name} ({len(test)} images): both need images")
    if list(train.classes) != list(test.classes):
        raise UserError(f"{train.name} and {test.name} have different classes ({train.classes} vs {test.classes}); "
                        "restrict both to the same classes first")
