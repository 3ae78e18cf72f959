"""Evaluate one CLIP model (an ``ImageTextEngine``) on labelled image sets and write the tables, plots and ``results.md``.

One folder per benchmark (``<out>/<title>/``) holds ``zeroshot.csv`` (a row per class, every metric with its
95% CI), ``roc.png``, ``summary.json`` (image counts, missing images, classes the benchmark lacks) and, when the
set has grounding regions, ``grounding.csv`` (a row per label), ``grounding_regions.csv`` and
``overlays.png``. ``results_markdown`` renders the tables from those files, so ``results.md``, the run report
and ``synthvlp compare`` all read the same numbers.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthvlp.config import EvaluateSection
from synthvlp.errors import UserError
from synthvlp.evaluation.benchmarks.base import LabelledSet
from synthvlp.evaluation.inference import ImageTextEngine
from synthvlp.evaluation.zeroshot import mean_auc_interval, plot_roc, score_classes
from synthvlp.store import atomic_open, write_text_atomic

log = logging.getLogger(__name__)


def restrict_classes(labelled: LabelledSet, wanted: Sequence[str]) -> tuple[LabelledSet, list[str]]:
    """The set with its label columns reduced to ``wanted`` (in that order) and the wanted classes it lacks."""
    present = [c for c in wanted if c in labelled.classes]
    columns = [labelled.classes.index(c) for c in present]
    lacking = [c for c in wanted if c not in labelled.classes]
    reduced = LabelledSet(labelled.name, labelled.images, labelled.ids, present, labelled.labels[:, columns],
                          [r for r in labelled.regions if r.label in present], labelled.split, labelled.group, labelled.missing,
                          labelled.unreadable)
    return reduced, lacking


def readable_images(labelled: LabelledSet) -> LabelledSet:
    """The set without undecodable images (listed in ``unreadable``); a set left with none is a ``UserError``, since
    a table of NaNs is no result."""
    checked = labelled.without_unreadable()
    if len(checked) == 0 and not checked.unreadable:
        shown = f" (e.g. {', '.join(checked.missing[:3])})" if checked.missing else ""
        raise UserError(f"{labelled.name}: no image to score: {len(checked.missing):,} listed, none found on disk{shown}; "
                        "check the data path and the images folder (--images, or the benchmark's images option)")
    if len(checked) == 0:
        raise UserError(f"{labelled.name}: no readable image to evaluate ({len(checked.missing)} listed but missing on disk, "
                        f"{len(checked.unreadable)} unreadable, e.g. {', '.join(checked.unreadable[:3])}); check the benchmark's files")
    return checked


def evaluate_set(engine: ImageTextEngine, labelled: LabelledSet, classes: Sequence[str], settings: EvaluateSection, out: Path,
                 seed: int, advance: Callable[[int], None] | None = None, floor: ImageTextEngine | None = None,
                 batch_size: int = 128) -> list[Path]:
    """Zero-shot classification (and grounding where the set has regions) of one set into ``out``; with ``floor``
    (a randomly initialised model of the same architecture) its zero-shot scores too, in ``zeroshot_floor.csv``.

    ``batch_size`` images go through the model at once. A set none of whose listed images is on disk is an
    error, not a table of n/a; unreadable images are left out and listed in ``summary.json``; boxes that reach
    past their image are counted and warned about (they are in another resolution than the images), never
    dropped silently."""
    labelled, lacking = restrict_classes(readable_images(labelled), classes)
    if not labelled.classes:
        raise UserError(f"{labelled.name}: none of the classes {list(classes)} is labelled in this benchmark; set evaluate.classes (or --classes)")
    outside = boxes_outside(labelled)
    if outside:
        log.warning("%s: %d of %d boxes reach past their image (e.g. %s); they are in another resolution than the images, "
                    "so grounding skips what lies outside", labelled.name, len(outside), len(labelled.regions), outside[0])
    probabilities = _zero_shot(engine, labelled, settings, advance, batch_size)
    results = score_classes(probabilities, labelled.labels, labelled.classes, settings.bootstrap, seed)
    written = [_write_csv(out / "zeroshot.csv", [r.row() for r in results])]
    roc = out / "roc.png"
    plot_roc(probabilities, labelled.labels, labelled.classes, roc, title=f"Zero-shot ROC: {out.name}")
    summary = {"benchmark": out.name, "source": labelled.name, "images": len(labelled), "missing": len(labelled.missing),
               "missing_examples": labelled.missing[:5], "unreadable": len(labelled.unreadable), "unreadable_images": labelled.unreadable,
               "classes_lacking": lacking, "regions": len(labelled.regions),
               "regions_outside_image": len(outside), "regions_outside_examples": outside[:5],
               "min_positives": settings.min_positives, "grounding_map": settings.grounding_map,
               **mean_auc_interval(probabilities, labelled.labels, labelled.classes, settings.min_positives, settings.bootstrap, seed)}
    (out / "zeroshot_floor.csv").unlink(missing_ok=True)
    if floor is not None:
        floor_probabilities = _zero_shot(floor, labelled, settings, batch_size=batch_size)
        floor_results = score_classes(floor_probabilities, labelled.labels, labelled.classes, settings.bootstrap, seed)
        written.append(_write_csv(out / "zeroshot_floor.csv", [r.row() for r in floor_results]))
        floor_mean = mean_auc_interval(floor_probabilities, labelled.labels, labelled.classes, settings.min_positives, settings.bootstrap, seed)
        summary.update({f"floor_{key}": value for key, value in floor_mean.items() if key != "classes_in_mean"})
    written += [roc, _write_json(out / "summary.json", summary)]
    for stale in ("grounding.csv", "grounding_regions.csv", "overlays.png", "finetune.csv"):  # a rerun shows no old table
        (out / stale).unlink(missing_ok=True)
    if settings.grounding and labelled.regions:
        written += ground(engine, labelled, settings, out, seed, batch_size)
    return written


@dataclass
class EvaluationSet:
    """One set to score into ``<out>/<title>/``: the whole set (a linear probe reads its train split), the split
    scored zero-shot (None: every image), the classes to score, and whether to fit a linear probe."""

    title: str
    labelled: LabelledSet
    classes: Sequence[str]
    split: str | None = None
    linear_probe: bool = False


Progress = Callable[[str, int], AbstractContextManager[Callable[[int], None]]]
"""(label, total) -> a context whose value advances a progress bar by n."""


@dataclass
class CheckpointEvaluation:
    """A checkpoint loaded to score sets into ``<out>/<title>/``: what ``synthvlp evaluate`` and the run's evaluate
    stage both do, each then writing ``results.md`` (``write_results``). ``floor`` is a randomly initialised model
    of the same architecture, scored beside it (``zeroshot_floor.csv``) when given."""

    engine: ImageTextEngine
    floor: ImageTextEngine | None
    settings: EvaluateSection
    seed: int
    progress: Progress
    say: Callable[[str], None]
    batch_size: int = 128

    @classmethod
    def load(cls, checkpoint: Path, settings: EvaluateSection, seed: int, progress: Progress, say: Callable[[str], None],
             floor_seed: int | None = None, batch_size: int = 128) -> CheckpointEvaluation:
        """Load ``checkpoint`` (a named error for a bad file, before any set is read), and with ``floor_seed`` its floor."""
        from synthvlp.checkpoints import ClipCheckpoint, load

        record = load(checkpoint, ClipCheckpoint)
        floor = ImageTextEngine.from_checkpoint(record, random_init_seed=floor_seed) if floor_seed is not None else None
        return cls(ImageTextEngine.from_checkpoint(record), floor, settings, seed, progress, say, batch_size)

    def score(self, target: EvaluationSet, out: Path) -> list[Path]:
        """Zero-shot (and grounding) tables of one set in ``out/<title>``, and its linear probe when asked for."""
        labelled = target.labelled.only_split(target.split) if target.split is not None else target.labelled
        folder = out / target.title
        with self.progress(f"evaluate {target.title}", len(labelled)) as advance:
            written = evaluate_set(self.engine, labelled, target.classes, self.settings, folder, seed=self.seed, advance=advance,
                                   floor=self.floor, batch_size=self.batch_size)
        if target.linear_probe:
            self.say(f"evaluate {target.title}: linear probe at {self.settings.finetune_fractions} of the train split, seeds {self.settings.finetune_seeds}")
            written += probe_set(self.engine, target.labelled, target.classes, self.settings, folder)
        return written


def _zero_shot(engine: ImageTextEngine, labelled: LabelledSet, settings: EvaluateSection,
               advance: Callable[[int], None] | None = None, batch_size: int = 128) -> np.ndarray:
    """(n_images, n_classes) zero-shot probabilities of ``engine`` with the configured prompt ensembles."""
    features = engine.encode_images(len(labelled), labelled.open, batch_size, advance=advance)
    return engine.zero_shot_probabilities(features, labelled.classes, settings.positive_prompts, settings.negative_prompts)


def boxes_outside(labelled: LabelledSet) -> list[str]:
    """A description of each box (of a region without a mask) that reaches more than 1% past its image."""
    sizes: dict[int, tuple[int, int]] = {}
    outside = []
    for region in labelled.regions:
        if region.box is None or region.mask is not None:
            continue
        if region.image not in sizes:
            with labelled.open(region.image) as image:
                sizes[region.image] = image.size
        width, height = sizes[region.image]
        x0, y0, x1, y1 = region.box
        if x1 > 1.01 * width or y1 > 1.01 * height or x0 < -0.01 * width or y0 < -0.01 * height:
            outside.append(f"{labelled.ids[region.image]}: {region.label} box ({x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}) on a {width}x{height} image")
    return outside


def ground(engine: ImageTextEngine, labelled: LabelledSet, settings: EvaluateSection, out: Path, seed: int, batch_size: int = 32) -> list[Path]:
    """Zero-shot grounding of every region: ``grounding.csv`` (per label), ``grounding_regions.csv``, ``overlays.png``."""
    from synthvlp.evaluation.grounding import ground_set, plot_overlays, region_text

    def prompt_for(label: str) -> str:
        return settings.positive_prompts[0].format(name=label)

    rows, summary = ground_set(engine, labelled, prompt_for=prompt_for, batch_size=batch_size, bootstrap=settings.bootstrap, seed=seed,
                               kind=settings.grounding_map)
    written = [_write_csv(out / "grounding.csv", summary), _write_csv(out / "grounding_regions.csv", rows)]
    shown = [r for r in labelled.regions if r.box is not None or r.mask is not None][: settings.overlays]
    if shown:
        images = [labelled.open(r.image) for r in shown]
        maps = engine.similarity_maps(images, [region_text(r, prompt_for) for r in shown], kind=settings.grounding_map)
        plot_overlays(labelled, maps, shown, out / "overlays.png", n=len(shown))
        written.append(out / "overlays.png")
    return written


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with atomic_open(path, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["name"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _write_json(path: Path, payload: dict) -> Path:
    write_text_atomic(path, json.dumps(payload, indent=1, sort_keys=True))
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _number(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def with_ci(row: dict[str, str], metric: str) -> str:
    value = _number(row[metric])
    if value != value:
        return "n/a"
    low, high = _number(row.get(f"{metric}_ci_low", "")), _number(row.get(f"{metric}_ci_high", ""))
    return f"{value:.3f} ({low:.3f}-{high:.3f})" if low == low else f"{value:.3f}"


def probe_set(engine: ImageTextEngine, labelled: LabelledSet, classes: Sequence[str], settings: EvaluateSection, out: Path) -> list[Path]:
    """Linear probe on the set's train split, scored on its test split, at ``settings.finetune_fractions``."""
    from synthvlp.evaluation.finetune import linear_probe

    labelled, _ = restrict_classes(readable_images(labelled), classes)
    if labelled.split is None or not {"train", "test"} <= set(labelled.split):
        raise UserError(f"evaluate.benchmarks: {labelled.name}: linear_probe needs a benchmark with train and test splits")
    rows = linear_probe(engine, labelled.only_split("train"), labelled.only_split("test"),
                        settings.finetune_fractions, settings.finetune_seeds)
    return [write_finetune(rows, out, "finetune")]


def write_finetune(rows: list[dict], out: Path, name: str) -> Path:
    """``out/<name>.csv``: the protocol's per-class (or per-run, for segmentation) rows."""
    return _write_csv(out / f"{name}.csv", rows)


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the mean over seeds and its 95% t-interval (NaN bounds for fewer than two values)."""
    values = [v for v in values if v == v]
    if not values:
        return (float("nan"),) * 3
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    from scipy.stats import t

    half = float(t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values)))
    return mean, mean - half, mean + half


def _interval(values: list[float]) -> str:
    """Mean and 95% t-interval over seeds (just the mean for one seed)."""
    return mean_text(*t_interval(values))


def finetune_markdown(folder: Path) -> list[str]:
    """Tables of ``finetune.csv`` (mean AUC per protocol and label fraction) and ``segmentation.csv`` (Dice per
    init and fraction), each a mean with a 95% t-interval over seeds."""
    lines: list[str] = []
    if (folder / "finetune.csv").exists():
        from synthvlp.evaluation.finetune import mean_auc as mean_auc_per_run

        rows = [{**r, "auc": _number(r["auc"])} for r in read_csv(folder / "finetune.csv")]
        lines += ["### Fine-tuning: " + folder.name, "",
                  "Mean test AUC over classes, then mean and 95% t-interval over seeds (a fixed-seed training subset per seed, whole patients). "
                  "'labels' is the share of the training split actually used: a subset smaller than one positive per class is raised to that.", "",
                  "| protocol | labels | training images | mean AUC |", "|---|---|---|---|"]
        per_seed: dict[tuple[str, str], list[float]] = {}
        for run in mean_auc_per_run(rows):
            per_seed.setdefault((run["protocol"], run["fraction"]), []).append(run["mean_auc"])
        for (protocol, fraction), means in per_seed.items():
            chosen = [r for r in rows if (r["protocol"], r["fraction"]) == (protocol, fraction)]
            images = sorted({int(r.get("n_subset") or r["n_train"]) for r in chosen})
            count = f"{images[0]}-{images[-1]}" if len(images) > 1 else str(images[0])
            lines.append(f"| {protocol} | {_label_share(float(fraction), images, chosen[0].get('n_pool'))} | {count} | {_interval(means)} |")
        lines.append("")
    if (folder / "segmentation.csv").exists():
        rows = read_csv(folder / "segmentation.csv")
        lines += ["### Segmentation fine-tuning: " + folder.name, "",
                  "Foreground Dice on the test images; mean and 95% t-interval over seeds (same training subset and decoder init for both encoders).", "",
                  "| labels | pretrained encoder | from scratch |", "|---|---|---|"]
        for fraction in dict.fromkeys(r["fraction"] for r in rows):
            cell = {init: _interval([_number(r["dice_mean"]) for r in rows if r["fraction"] == fraction and r["init"] == init]) for init in ("pretrained", "scratch")}
            lines.append(f"| {float(fraction):.0%} | {cell['pretrained']} | {cell['scratch']} |")
        lines.append("")
    return lines


def _label_share(asked: float, images: list[int], pool: str | None) -> str:
    """The share of the training split used, with the share asked for when the positives rule raised it."""
    if not pool or not int(pool):
        return f"{asked:.0%}"
    used = np.mean(images) / int(pool)
    return f"{used:.1%} (asked {asked:.0%}; a positive per class)" if used > asked * 1.5 else f"{asked:.0%}"


def benchmark_folders(root: Path) -> list[Path]:
    """The per-benchmark result folders under an evaluation folder, in name order."""
    return sorted(p.parent for p in root.glob("*/zeroshot.csv"))


def mean_auc(folder: Path) -> tuple[float, float, float]:
    """(mean AUC, CI low, CI high) of one benchmark folder: over the classes with enough positives, as its
    ``summary.json`` records it (folders evaluated before it did: over every scorable class, no interval)."""
    summary = json.loads((folder / "summary.json").read_text())
    if "mean_auc" in summary:
        return (summary["mean_auc"], *summary["mean_auc_ci"])
    values = [v for v in (_number(r["auc"]) for r in read_csv(folder / "zeroshot.csv")) if v == v]
    return (float(np.mean(values)) if values else float("nan"), float("nan"), float("nan"))


def mean_text(mean: float, low: float, high: float) -> str:
    return "n/a" if mean != mean else f"{mean:.3f} ({low:.3f}-{high:.3f})" if low == low else f"{mean:.3f}"


def results_markdown(root: Path, link_prefix: str = "") -> list[str]:
    """Markdown tables of every benchmark folder under ``root``; image links are prefixed with ``link_prefix``."""
    lines: list[str] = []
    for folder in benchmark_folders(root):
        summary = json.loads((folder / "summary.json").read_text())
        floor = {r["name"]: r for r in read_csv(folder / "zeroshot_floor.csv")} if (folder / "zeroshot_floor.csv").exists() else None
        lines += [f"### Zero-shot classification: {summary['benchmark']}", "",
                  _scored_images(summary)
                  + (f"; {summary['unreadable']} unreadable, left out ({', '.join(summary['unreadable_images'][:3])})" if summary.get("unreadable") else "")
                  + (f"; not labelled in this benchmark: {', '.join(summary['classes_lacking'])}" if summary["classes_lacking"] else "") + ".",
                  "", "| class | pos | neg | AUC (95% CI) | random init AUC | F1 best | ACC best | MCC best | F1 @0.5 | note |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for row in read_csv(folder / "zeroshot.csv"):
            floor_cell = with_ci(floor[row["name"]], "auc") if floor and row["name"] in floor else "-"
            lines.append(f"| {row['name']} | {row['positives']} | {row['negatives']} | {with_ci(row, 'auc')} | {floor_cell} | {with_ci(row, 'f1_best')} | "
                         f"{with_ci(row, 'acc_best')} | {with_ci(row, 'mcc_best')} | {with_ci(row, 'f1_05')} | {row['note']} |")
        average = mean_auc(folder)
        if average[0] == average[0]:
            counted = summary.get("classes_in_mean")
            line = f"Mean AUC {mean_text(*average)}"
            if counted is not None:
                line += f" over the {len(counted)} classes with at least {summary['min_positives']} positive and negative images"
            if "floor_mean_auc" in summary:
                line += f"; a randomly initialised model of the same architecture: {mean_text(summary['floor_mean_auc'], *summary['floor_mean_auc_ci'])}"
            lines += ["", line + ". F1/ACC/MCC 'best' use the threshold that maximises F1 on these images (optimistic)."]
        lines += ["", f"![ROC curves]({link_prefix}{folder.name}/roc.png)", ""]
        lines += _grounding_markdown(folder, summary["benchmark"], link_prefix, summary.get("grounding_map", "similarity"))
        lines += finetune_markdown(folder)
    return lines


_MAP_TEXT = {"contribution": "dot product: each location's share of the image-text score", "similarity": "cosine similarity"}


def _scored_images(summary: dict) -> str:
    """"Scored the 621 images present of 112,120 listed": a subset on disk is a normal way to evaluate."""
    images, missing = summary["images"], summary["missing"]
    text = f"Scored the {images:,} images present of {images + missing:,} listed" if missing else f"Scored {images:,} images"
    outside = summary.get("regions_outside_image", 0)
    return text + (f"; {outside} of {summary['regions']} boxes reach past their image (another resolution), see summary.json" if outside else "")


def _grounding_markdown(folder: Path, benchmark: str, link_prefix: str, map_kind: str) -> list[str]:
    path = folder / "grounding.csv"
    if not path.exists():
        return []
    lines = [f"### Zero-shot grounding: {benchmark}", "",
             f"Text-to-location maps ({_MAP_TEXT.get(map_kind, map_kind)}) against the truth regions (phantom masks on synthetic data; a box or mask on real data). "
             "Pointing game: the map's peak inside the region, beside its chance level (the share of the film the region covers); IoU and Dice: mean over thresholds 0.1-0.9 of the min-max "
             "normalised map; CNR: |mean in - mean out| / sqrt(var in + var out). 95% CIs by bootstrap over regions.", "",
             "| label | regions | pointing | chance | IoU | Dice | CNR |", "|---|---|---|---|---|---|---|"]
    for row in read_csv(path):
        lines.append(f"| {row['label']} | {row['regions']} | {with_ci(row, 'pointing')} | {_number(row.get('chance', '')):.3f} | {with_ci(row, 'iou')} | "
                     f"{with_ci(row, 'dice')} | {with_ci(row, 'cnr')} |")
    if (folder / "overlays.png").exists():
        lines += ["", f"![grounding overlays]({link_prefix}{folder.name}/overlays.png)"]
    return lines + [""]


def write_results(root: Path, title: str) -> Path:
    """``root/results.md``: every benchmark's tables under one heading."""
    path = root / "results.md"
    write_text_atomic(path, "\n".join([f"# {title}", "", *results_markdown(root)]) + "\n")
    return path
