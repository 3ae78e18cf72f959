"""Put several runs' zero-shot results side by side (real vs synthetic vs mixed), one table per benchmark.

A run is a run folder (its ``evaluate/`` is used) or an evaluation folder written by ``synthvlp evaluate``;
either holds one ``<benchmark>/zeroshot.csv`` per benchmark. Cells are AUC with its 95% CI; a benchmark or
class a run lacks shows "-", so runs evaluated on different sets still line up.
"""

from __future__ import annotations

from pathlib import Path

from synthvlp.errors import UserError
from synthvlp.evaluation.harness import benchmark_folders, mean_auc, mean_text, read_csv, with_ci


def evaluation_root(path: Path) -> Path:
    """The folder holding ``<benchmark>/zeroshot.csv`` for a run folder or an evaluation folder."""
    for candidate in (path / "evaluate", path):
        if benchmark_folders(candidate):
            return candidate
    raise UserError(f"{path}: no zero-shot results (expected {path}/evaluate/<benchmark>/zeroshot.csv or {path}/<benchmark>/zeroshot.csv)")


def run_label(path: Path) -> str:
    """A column name for a run: its folder name, or its parent's when the folder is a bare 'evaluate'."""
    resolved = path.resolve()
    return resolved.parent.name if resolved.name == "evaluate" else resolved.name


def compare_runs(paths: list[Path]) -> dict[str, list[list[str]]]:
    """{benchmark: rows}, the first row the header (``class``, then one AUC column per run), the last the mean."""
    if len(paths) < 1:
        raise UserError("compare: give at least one run")
    labels = [run_label(p) for p in paths]
    if len(set(labels)) < len(labels):
        labels = [str(p) for p in paths]
    results: dict[str, dict[str, dict[str, dict[str, str]]]] = {}
    means: dict[str, dict[str, tuple[float, float, float]]] = {}
    for label, path in zip(labels, paths, strict=True):
        for folder in benchmark_folders(evaluation_root(path)):
            results.setdefault(folder.name, {})[label] = {row["name"]: row for row in read_csv(folder / "zeroshot.csv")}
            means.setdefault(folder.name, {})[label] = mean_auc(folder)
    tables = {}
    for benchmark, by_run in sorted(results.items()):
        classes = list(dict.fromkeys(name for rows in by_run.values() for name in rows))
        rows = [["class", *labels]]
        for name in classes:
            rows.append([name, *(with_ci(by_run[label][name], "auc") if name in by_run.get(label, {}) else "-" for label in labels)])
        rows.append(["mean AUC", *(mean_text(*means[benchmark][label]) if label in means[benchmark] else "-" for label in labels)])
        tables[benchmark] = rows
    return tables


def tables_markdown(tables: dict[str, list[list[str]]]) -> str:
    lines = []
    for benchmark, rows in tables.items():
        lines += [f"## {benchmark}: zero-shot AUC (95% CI)", "", "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
        lines.append("")
    return "\n".join(lines)
