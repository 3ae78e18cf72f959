"""The run report: ``report.md`` with one section per stage (counts, rejects and why, loss, AUC) and its plots.

Built from the run folder's artifacts only, so it can be regenerated at any time and always matches them.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from synthvlp.store import atomic_open, write_text_atomic

if TYPE_CHECKING:
    from synthvlp.runner import Runner


def _save(figure, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=110)
    plt.close(figure)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_report(runner: Runner) -> Path:
    """Write ``report.md`` and ``plots/*.png`` for whatever stages have finished."""
    run_dir = runner.run_dir
    plots = run_dir / "plots"
    plots.mkdir(exist_ok=True)
    table = runner.joined_parts()
    lines = [f"# Run report: {runner.config.run.name}", "", f"Run folder `{run_dir}`; config in `config.yaml`, provenance in `run.json`.", ""]
    if table is None:
        lines.append("No stage has finished every unit yet.")
    else:
        rows = table.to_pylist()
        lines += _plan_section(rows, plots / "entities.png")
        if "findings" in table.column_names:
            lines += _reports_section(rows)
        if "image_generator" in table.column_names:
            lines += _images_section(rows, run_dir, runner.config.images.size)
        if "accepted" in table.column_names:
            lines += _filter_section(rows)
        if "selected" in table.column_names:
            lines += _balance_section(rows)
    lines += _pretrain_section(run_dir / "pretrain", plots / "loss.png")
    lines += _evaluate_section(run_dir / "evaluate")
    path = run_dir / "report.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def _plan_section(rows: list[dict], plot: Path) -> list[str]:
    splits = Counter(r["split"] for r in rows)
    present = Counter(e["name"] for r in rows for e in r["planned_entities"] if e["assertion"] == "present")
    normal = sum(1 for r in rows if not any(e["assertion"] == "present" for e in r["planned_entities"]))
    plt = _plt()
    figure, axis = plt.subplots(figsize=(6, 3))
    names = sorted(present, key=present.get, reverse=True)
    axis.barh(names[::-1], [present[n] for n in names][::-1])
    axis.set(xlabel="samples", title="Planned findings (present)")
    figure.tight_layout()
    _save(figure, plot)
    lines = ["## Plan", "", f"{len(rows)} samples: {splits.get('train', 0)} train, {splits.get('test', 0)} test; {normal} with no finding.", ""]
    lines += ["| finding | samples |", "|---|---|"] + [f"| {n} | {present[n]} |" for n in names]
    return lines + ["", f"![planned findings](plots/{plot.name})", ""]


def _reports_section(rows: list[dict]) -> list[str]:
    def present(entities) -> set:
        return {e["name"] for e in entities or () if e["assertion"] == "present" and e["category"] in ("ABNORMALITY", "DISEASE")}

    agree = sum(1 for r in rows if present(r["planned_entities"]) == present(r["extracted_entities"]))
    length = sum(len(r["findings"]) + len(r["impression"]) for r in rows) / max(1, len(rows))
    generators = Counter(r["report_generator"] for r in rows)
    return [
        "## Reports",
        "",
        f"Writer: {', '.join(generators)}. Mean length {length:.0f} characters.",
        f"The extractor reads back exactly the planned abnormal findings in {agree}/{len(rows)} reports ({agree / max(1, len(rows)):.1%}).",
        "",
    ]


def _images_section(rows: list[dict], run_dir: Path, size: int) -> list[str]:
    undrawable: Counter = Counter()
    for path in sorted((run_dir / "parts" / "images").glob("undrawable-*.json")):
        undrawable.update(json.loads(path.read_text()))
    shards = len({r["image_shard"] for r in rows})
    lines = ["## Images", "", f"Renderer: {', '.join(Counter(r['image_generator'] for r in rows))}; {size}x{size} px; {len(rows)} images in {shards} shards."]
    if undrawable:
        lines.append("Findings drawn as a generic opacity (no dedicated drawing): " + ", ".join(f"{k} x{v}" for k, v in sorted(undrawable.items())))
    return lines + [""]


def _filter_section(rows: list[dict]) -> list[str]:
    reasons = Counter(reason for r in rows if r["reject_reasons"] for reason in r["reject_reasons"].split(","))
    accepted = sum(1 for r in rows if r["accepted"])
    lines = ["## Filter", "", f"{accepted} accepted, {len(rows) - accepted} rejected.", ""]
    if reasons:
        lines += ["| reason | rejected |", "|---|---|"] + [f"| {k} | {v} |" for k, v in reasons.most_common()] + [""]
    return lines


def _balance_section(rows: list[dict]) -> list[str]:
    selected = Counter(r["split"] for r in rows if r["selected"])
    shards = len({r["shard"] for r in rows if r["shard"]})
    return ["## Balance", "", f"Exported {selected.get('train', 0)} train and {selected.get('test', 0)} test samples in {shards} shards under `dataset/`.", ""]


def _pretrain_section(folder: Path, plot: Path) -> list[str]:
    metrics_path, log_path = folder / "metrics.json", folder / "log.csv"
    if not metrics_path.exists() or not log_path.exists():
        return []
    metrics = json.loads(metrics_path.read_text())
    with open(log_path, newline="") as handle:
        log = list(csv.DictReader(handle))
    plt = _plt()
    figure, axis = plt.subplots(figsize=(6, 3))
    axis.plot([int(r["step"]) for r in log], [float(r["loss"]) for r in log])
    axis.set(xlabel="step", ylabel="CLIP loss", title="Pre-training loss")
    figure.tight_layout()
    _save(figure, plot)
    first = float(log[0]["loss"]) if log else float("nan")
    return [
        "## Pre-training",
        "",
        f"{metrics['steps']} steps, {metrics['samples']} samples in {metrics['seconds']:.1f} s ({metrics['samples_per_second']:.1f} samples/s).",
        f"Loss {first:.3f} -> {metrics['final_loss']:.3f}.",
        "",
        f"![loss curve](plots/{plot.name})",
        "",
    ]


def _evaluate_section(folder: Path) -> list[str]:
    results = folder / "zeroshot.csv"
    if not results.exists():
        return []
    with open(results, newline="") as handle:
        rows = list(csv.DictReader(handle))
    lines = ["## Zero-shot classification (synthetic test split)", "", "| class | positives | negatives | AUC | 95% CI | note |", "|---|---|---|---|---|---|"]
    aucs = []
    for r in rows:
        auc = float(r["auc"])
        if auc == auc:
            aucs.append(auc)
        lines.append(f"| {r['name']} | {r['positives']} | {r['negatives']} | {auc:.3f} | {float(r['ci_low']):.3f}-{float(r['ci_high']):.3f} | {r['note']} |")
    if aucs:
        lines += ["", f"Mean AUC over {len(aucs)} classes: {sum(aucs) / len(aucs):.3f}."]
    return lines + ["", "![ROC curves](evaluate/roc.png)", ""]
