"""Put several runs' results side by side (real vs synthetic vs mixed), one table per benchmark, and a plot.

A run is a run folder (its ``evaluate/`` is used) or an evaluation folder written by ``synthvlp evaluate``;
either holds one ``<benchmark>/zeroshot.csv`` per benchmark. Cells are AUC with its 95% CI; a benchmark or
class a run lacks shows "-", so runs evaluated on different sets still line up. Under the classes come the mean
zero-shot AUC, the random-init floor and the linear probe, so a figure is always read beside its floor.
"""

from __future__ import annotations

import json
from pathlib import Path

from synthvlp.errors import UserError
from synthvlp.evaluation.harness import benchmark_folders, mean_auc, mean_text, read_csv, t_interval, with_ci
from synthvlp.runfolder import RunLayout


def evaluation_root(path: Path) -> Path:
    """The folder holding ``<benchmark>/zeroshot.csv`` for a run folder or an evaluation folder."""
    for candidate in (RunLayout(path).evaluate, path):
        if benchmark_folders(candidate):
            return candidate
    raise UserError(f"{path}: no zero-shot results (expected {path}/evaluate/<benchmark>/zeroshot.csv or {path}/<benchmark>/zeroshot.csv)")


def run_label(path: Path) -> str:
    """A column name for a run: its folder name, or its parent's when the folder is a bare 'evaluate'."""
    resolved = path.resolve()
    return resolved.parent.name if resolved.name == "evaluate" else resolved.name


def compare_runs(paths: list[Path]) -> dict[str, list[list[str]]]:
    """{benchmark: rows}: the header (``class``, then one column per run), a zero-shot AUC row per class, then
    the mean zero-shot AUC, the random-init floor's and the linear probe's at 100% of the labels (where the run
    scored them), each with its 95% interval."""
    labels = _labels(paths)
    tables = {}
    for benchmark, by_run in sorted(_collect(paths, labels).items()):
        classes = list(dict.fromkeys(name for run in by_run.values() for name in run["classes"]))
        rows = [["class", *labels]]
        for name in classes:
            rows.append([name, *(with_ci(by_run[label]["classes"][name], "auc") if name in by_run.get(label, {}).get("classes", {}) else "-" for label in labels)])
        for key, title in SUMMARY_ROWS:
            cells = [mean_text(*by_run[label][key]) if label in by_run and by_run[label][key] is not None else "-" for label in labels]
            if any(cell != "-" for cell in cells):
                rows.append([title, *cells])
        tables[benchmark] = rows
    return tables


SUMMARY_ROWS = (("mean", "mean AUC"), ("floor", "random-init floor"), ("probe", "linear probe, 100% labels"))
"""(key in ``_collect``'s per-run record, row title) of the summary rows under each comparison table."""


def _labels(paths: list[Path]) -> list[str]:
    if len(paths) < 1:
        raise UserError("compare: give at least one run")
    labels = [run_label(p) for p in paths]
    return labels if len(set(labels)) == len(labels) else [str(p) for p in paths]


def _collect(paths: list[Path], labels: list[str]) -> dict[str, dict[str, dict]]:
    """{benchmark: {run label: {"classes": rows by class, "mean"/"floor"/"probe": (value, low, high) or None}}}."""
    results: dict[str, dict[str, dict]] = {}
    for label, path in zip(labels, paths, strict=True):
        for folder in benchmark_folders(evaluation_root(path)):
            summary = json.loads((folder / "summary.json").read_text())
            floor = (summary["floor_mean_auc"], *summary["floor_mean_auc_ci"]) if "floor_mean_auc" in summary else None
            results.setdefault(folder.name, {})[label] = {
                "classes": {row["name"]: row for row in read_csv(folder / "zeroshot.csv")},
                "mean": mean_auc(folder), "floor": floor, "probe": _probe(folder, summary.get("classes_in_mean")),
            }
    return results


def _probe(folder: Path, classes: list[str] | None) -> tuple[float, float, float] | None:
    """Mean test AUC of the linear probe at 100% of the labels over the zero-shot mean's classes, with a 95%
    t-interval over its seeds (none when every seed trained on the same images); None when the run did not probe
    this benchmark."""
    if not (folder / "finetune.csv").exists():
        return None
    from synthvlp.evaluation.finetune import LINEAR_PROBE
    from synthvlp.evaluation.finetune import mean_auc as per_run

    rows = [{**r, "auc": float(r["auc"])} for r in read_csv(folder / "finetune.csv")
            if r["protocol"] == LINEAR_PROBE and float(r["fraction"]) == 1.0 and (classes is None or r["class"] in classes)]
    means = [run["mean_auc"] for run in per_run(rows) if run["mean_auc"] == run["mean_auc"]]
    if not means:
        return None
    if len(set(means)) == 1:  # 100% of the labels is one subset whatever the seed: no spread to report
        return means[0], float("nan"), float("nan")
    return t_interval(means)


def plot_comparison(paths: list[Path], path: Path) -> None:
    """One panel per benchmark: each run's mean zero-shot AUC (and its linear probe's) with 95% intervals, the
    random-init floor as a grey tick and chance as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from synthvlp.store import save_png

    labels = _labels(paths)
    collected = sorted(_collect(paths, labels).items())
    figure, axes = plt.subplots(1, len(collected), figsize=(3.2 * len(collected) + 1, 3.6), squeeze=False)
    for axis, (benchmark, by_run) in zip(axes[0], collected):
        for offset, key, colour in ((-0.17, "mean", "tab:blue"), (0.17, "probe", "tab:orange")):
            for x, label in enumerate(labels):
                value = by_run.get(label, {}).get(key)
                if value is not None and value[0] == value[0]:
                    low, high = (value[1], value[2]) if value[1] == value[1] else (value[0], value[0])
                    axis.errorbar(x + offset, value[0], yerr=[[value[0] - low], [high - value[0]]], fmt="o", color=colour, capsize=3,
                                  label={"mean": "zero-shot", "probe": "linear probe 100%"}[key] if x == 0 else None)
        for x, label in enumerate(labels):
            floor = by_run.get(label, {}).get("floor")
            if floor is not None:
                axis.plot([x - 0.3, x + 0.3], [floor[0]] * 2, color="grey", linewidth=2, label="random init" if x == 0 else None)
        axis.axhline(0.5, color="k", linestyle="--", linewidth=0.8)
        axis.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        axis.set_title(benchmark, fontsize=9)
        axis.set_ylabel("mean AUC")
    axes[0][0].legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    save_png(figure, path)


def tables_markdown(tables: dict[str, list[list[str]]]) -> str:
    lines = []
    for benchmark, rows in tables.items():
        lines += [f"## {benchmark}: zero-shot AUC (95% CI)", "", "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
        lines.append("")
    return "\n".join(lines)
