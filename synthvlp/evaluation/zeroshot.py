"""Zero-shot classification with positive/negative prompt sets per class (the CheXzero convention): the metrics.

The probabilities come from ``ImageTextEngine.zero_shot_probabilities`` (``synthvlp.evaluation.inference``):
p(class) = exp(s+) / (exp(s+) + exp(s-)), where s+ and s- are the image's scaled cosine similarities to the mean
embedding of the positive and of the negative prompts ("There is {name}." / "There is no {name}."). Each class
is scored on the images that have a 1 or 0 for it (NaN cells are uncertain or unlabelled and skipped), with AUC,
then F1, accuracy and MCC at two thresholds: 0.5 (the softmax's natural cut) and the threshold that maximises F1
on the evaluated images (optimistic, as in CheXzero's and MedCLIP's tables, and labelled so). Every metric gets a
percentile-bootstrap 95% CI from resampling images with a fixed seed, thresholds held fixed. A class with no
positive or no negative image gets NaN and a note instead of a misleading number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from synthvlp.bootstrap import Statistic, percentile_bootstrap

METRICS = ("auc", "f1_best", "acc_best", "mcc_best", "f1_05", "acc_05", "mcc_05")


@dataclass
class ClassResult:
    """One class's row of the zero-shot table; ``ci`` maps each metric to its (low, high) 95% interval."""

    name: str
    positives: int
    negatives: int
    auc: float = float("nan")
    f1_best: float = float("nan")
    acc_best: float = float("nan")
    mcc_best: float = float("nan")
    threshold_best: float = float("nan")
    f1_05: float = float("nan")
    acc_05: float = float("nan")
    mcc_05: float = float("nan")
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    note: str = ""

    def row(self) -> dict[str, float | int | str]:
        """Flat CSV row: every metric followed by its ``_ci_low`` and ``_ci_high``."""
        flat = {k: v for k, v in asdict(self).items() if k != "ci"}
        for metric in METRICS:
            low, high = self.ci.get(metric, (float("nan"), float("nan")))
            flat[f"{metric}_ci_low"], flat[f"{metric}_ci_high"] = low, high
        return flat


def _threshold_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """F1, accuracy and MCC of ``p >= threshold`` (numpy, not sklearn: the bootstrap calls this thousands of
    times; tests check it against sklearn)."""
    predicted = p >= threshold
    tp = float(np.sum(predicted & y))
    fp = float(np.sum(predicted & ~y))
    fn = float(np.sum(~predicted & y))
    tn = float(len(y)) - tp - fp - fn
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = (tp * tn - fp * fn) / denominator if denominator else 0.0
    return f1, (tp + tn) / len(y), float(mcc)


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count one half), equal to sklearn's roc_auc_score."""
    from scipy.stats import rankdata

    positives = float(y.sum())
    negatives = len(y) - positives
    return float((rankdata(p)[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def best_f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The score threshold with the highest F1 on (y, p): the precision-recall curve's best point."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(y, p)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision), where=precision + recall > 0)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def _metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    f1_best, acc_best, mcc_best = _threshold_metrics(y, p, threshold)
    f1_05, acc_05, mcc_05 = _threshold_metrics(y, p, 0.5)
    return {"auc": _auc(y, p), "f1_best": f1_best, "acc_best": acc_best, "mcc_best": mcc_best,
            "f1_05": f1_05, "acc_05": acc_05, "mcc_05": mcc_05}


def score_classes(probabilities: np.ndarray, labels: np.ndarray, classes: Sequence[str], bootstrap: int, seed: int) -> list[ClassResult]:
    """Per-class metrics and bootstrap CIs; ``labels`` holds 1/0/NaN (bool arrays are accepted too). The classes
    share one random stream, so a class's interval depends on the classes before it (kept for stable numbers)."""
    labels = np.asarray(labels, dtype=np.float64)
    rng = np.random.default_rng(seed)
    results = []
    for column, name in enumerate(classes):
        known = ~np.isnan(labels[:, column])
        y, p = labels[known, column] == 1, probabilities[known, column]
        result = ClassResult(name, int(y.sum()), int((~y).sum()))
        results.append(result)
        if result.positives == 0 or result.negatives == 0:
            result.note = "needs positive and negative images"
            continue
        result.threshold_best = best_f1_threshold(y, p)
        interval = percentile_bootstrap(_class_metrics(y, p, result.threshold_best), len(y), bootstrap, rng)
        for i, metric in enumerate(METRICS):
            setattr(result, metric, float(interval.estimate[i]))
            result.ci[metric] = (float(interval.low[i]), float(interval.high[i]))
    return results


def _class_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> Statistic:
    """The METRICS of a resample of one class's images at a fixed threshold; None for a draw of one class only."""

    def statistic(rows: np.ndarray) -> list[float] | None:
        if not y[rows].any() or y[rows].all():
            return None
        values = _metrics(y[rows], p[rows], threshold)
        return [values[metric] for metric in METRICS]

    return statistic


def mean_auc_interval(probabilities: np.ndarray, labels: np.ndarray, classes: Sequence[str], min_positives: int,
                      bootstrap: int, seed: int) -> dict[str, object]:
    """Mean AUC over the classes with at least ``min_positives`` positive and negative images, with a percentile
    bootstrap 95% CI that resamples images once for all classes (the same films score every class, so per-class
    intervals cannot be combined). Returns ``{"mean_auc", "mean_auc_ci", "classes_in_mean"}``."""
    labels = np.asarray(labels, dtype=np.float64)
    known = ~np.isnan(labels)
    positive = known & (labels == 1)
    counted = [c for c in range(len(classes))
               if positive[:, c].sum() >= min_positives and (known[:, c] & ~positive[:, c]).sum() >= min_positives]
    if not counted:
        return {"mean_auc": float("nan"), "mean_auc_ci": [float("nan"), float("nan")], "classes_in_mean": []}

    def mean(rows: np.ndarray) -> float:
        aucs = []
        for c in counted:
            keep = known[rows, c]
            y, p = positive[rows, c][keep], probabilities[rows, c][keep]
            if y.any() and not y.all():
                aucs.append(_auc(y, p))
        return float(np.mean(aucs)) if aucs else float("nan")

    interval = percentile_bootstrap(mean, len(labels), bootstrap, np.random.default_rng(seed))
    return {"mean_auc": float(interval.estimate), "mean_auc_ci": [float(interval.low), float(interval.high)],
            "classes_in_mean": [classes[c] for c in counted]}


def plot_roc(probabilities: np.ndarray, labels: np.ndarray, classes: Sequence[str], path: Path, title: str = "Zero-shot ROC") -> None:
    """One ROC curve per scorable class (NaN labels skipped) with its AUC in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    from synthvlp.store import save_png

    labels = np.asarray(labels, dtype=np.float64)
    figure, axis = plt.subplots(figsize=(5, 5))
    for column, name in enumerate(classes):
        known = ~np.isnan(labels[:, column])
        y, p = labels[known, column] == 1, probabilities[known, column]
        if y.any() and not y.all():
            fpr, tpr, _ = roc_curve(y, p)
            axis.plot(fpr, tpr, label=f"{name} ({roc_auc_score(y, p):.2f})")
    axis.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    axis.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    save_png(figure, path)
