"""The run report: ``report.md`` with one section per stage (counts, rejects and why, loss, AUC) and its plots.

Built from the run folder's artifacts only, so it can be regenerated at any time and always matches them.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from synthvlp.config import RunConfig
from synthvlp.runfolder import RunLayout
from synthvlp.store import save_png, write_text_atomic

if TYPE_CHECKING:
    import pyarrow as pa

    from synthvlp.entities import EntityExtractor


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_report(layout: RunLayout, config: RunConfig, table: pa.Table | None, stale_evaluation: str,
                 extractor: Callable[[], EntityExtractor]) -> Path:
    """Write ``report.md`` and ``plots/*.png`` for whatever stages have finished.

    ``table`` is the joined per-unit columns (None before the plan finished), ``stale_evaluation`` why the
    evaluation no longer matches its model ('' when it does), and ``extractor`` builds the entity extractor
    only if the source corpus must be read (compiling the vocabulary takes seconds)."""
    plots = layout.plots
    plots.mkdir(exist_ok=True)
    lines = [f"# Run report: {config.run.name}", "",
             f"Run folder `{layout.root}`; config in `{layout.config.name}`, provenance in `{layout.provenance.name}`.", ""]
    if table is None:
        lines.append("No stage has finished every unit yet.")
    else:
        rows = table.to_pylist()
        lines += _plan_section(rows, plots / "entities.png", config, extractor, layout.parts("plan"))
        if "findings" in table.column_names:
            lines += _reports_section(rows, plots / "attempts.png")
        if "image_generator" in table.column_names:
            lines += _images_section(rows, layout, config.images.size)
        if "accepted" in table.column_names:
            lines += _filter_section(rows)
        if "selected" in table.column_names:
            lines += _balance_section(rows, plots / "balance.png", layout.balance_targets, config.balance)
    lines += _pretrain_section(layout, plots / "loss.png")
    lines += _evaluate_section(layout, stale_evaluation)
    write_text_atomic(layout.report, "\n".join(lines) + "\n")
    return layout.report


def _plan_section(rows: list[dict], plot: Path, config: RunConfig, extractor: Callable[[], EntityExtractor], cache_dir: Path) -> list[str]:
    """Planned distribution over the pool items against the source corpus: the caps must make it flatter."""
    from synthvlp.generation.plan_stats import flatness, planned_counts, source_counts

    splits = Counter(r["split"] for r in rows)
    normal = sum(1 for r in rows if not any(e["assertion"] == "present" and e["category"] in ("ABNORMALITY", "DISEASE") for e in r["planned_entities"]))
    planned = planned_counts(config, [r["planned_entities"] for r in rows])
    source = source_counts(config, extractor, cache_dir)
    names = sorted(planned, key=lambda n: (-planned[n], n))
    plt = _plt()
    figure, axis = plt.subplots(figsize=(7, 0.5 + 0.22 * len(names)))
    total_planned = max(1, sum(planned.values()))
    axis.barh(names[::-1], [planned[n] / total_planned for n in names][::-1], height=0.4, label="plan")
    if source:
        total_source = max(1, sum(source.values()))
        axis.barh([i - 0.4 for i in range(len(names))], [source[n] / total_source for n in names][::-1], height=0.4, label="source corpus")
        axis.legend(fontsize=7)
    axis.tick_params(axis="y", labelsize=7)
    axis.set(xlabel="share of statements", title="Planned entities vs source corpus")
    figure.tight_layout()
    save_png(figure, plot)
    lines = ["## Plan", "", f"{len(rows)} samples: {splits.get('train', 0)} train, {splits.get('test', 0)} test; {normal} with no abnormal finding.", ""]
    lines += ["| distribution | items seen | missing | gini | imbalance ratio |", "|---|---|---|---|---|"]
    for label, counts in (("source corpus", source), ("plan", planned)):
        if counts is not None:
            m = flatness(counts)
            lines.append(f"| {label} | {m['entities']} | {m['missing']} | {m['gini']:.3f} | {m['imbalance_ratio']:.2f} |")
    if source is None:
        lines += ["", "Set plan.source_corpus to compare with a real report corpus."]
    lines += ["", "| pool item | planned | source reports |", "|---|---|---|"]
    lines += [f"| {n} | {planned[n]} | {source[n] if source else '-'} |" for n in names]
    return lines + ["", f"![planned entities](plots/{plot.name})", ""]


def _reports_section(rows: list[dict], plot: Path) -> list[str]:
    """Acceptance rate of the verification loop, attempts histogram and the commonest rejection reasons."""
    verified = sum(1 for r in rows if r.get("report_verified"))
    attempts = Counter(r.get("report_attempts") or 1 for r in rows)
    first = sum(1 for r in rows if (r.get("report_attempts") or 1) == 1 and r.get("report_verified"))
    reasons = Counter(
        reason.split(" (")[0].split(" planned")[0]  # "missing: nodule", "assertion: atelectasis"
        for r in rows if r.get("report_rejections")
        for attempt in r["report_rejections"].split(" | ")
        for reason in attempt.partition(": ")[2].split("; ")
    )
    length = sum(len(r["findings"]) + len(r["impression"]) for r in rows) / max(1, len(rows))
    generators = Counter(r["report_generator"] for r in rows)
    plt = _plt()
    figure, axis = plt.subplots(figsize=(5, 2.6))
    keys = sorted(attempts)
    axis.bar([str(k) for k in keys], [attempts[k] for k in keys])
    axis.set(xlabel="attempts", ylabel="reports", title="Attempts per report")
    figure.tight_layout()
    save_png(figure, plot)
    lines = [
        "## Reports",
        "",
        f"Writer: {', '.join(generators)}. Mean length {length:.0f} characters.",
        f"Verified (every planned entity read back with its assertion and side, no unplanned abnormal one): {verified}/{len(rows)} ({verified / max(1, len(rows)):.1%}).",
        f"Accepted at the first attempt: {first}/{len(rows)} ({first / max(1, len(rows)):.1%}).",
        "",
        "| attempts | reports |",
        "|---|---|",
    ]
    lines += [f"| {k} | {attempts[k]} |" for k in keys]
    if reasons:
        lines += ["", "Commonest rejection reasons: " + ", ".join(f"{k} x{v}" for k, v in reasons.most_common(8))]
    return lines + ["", f"![attempts](plots/{plot.name})", ""]


def _images_section(rows: list[dict], layout: RunLayout, size: int) -> list[str]:
    undrawable: Counter = Counter()
    for path in layout.undrawable_files():
        undrawable.update(json.loads(path.read_text()))
    shards = len({r["image_shard"] for r in rows})
    lines = ["## Images", "", f"Renderer: {', '.join(Counter(r['image_generator'] for r in rows))}; {size}x{size} px; {len(rows)} images in {shards} shards."]
    if undrawable:
        lines.append("Findings drawn as a generic opacity (no dedicated drawing): " + ", ".join(f"{k} x{v}" for k, v in sorted(undrawable.items())))
    warnings: Counter = Counter()  # e.g. impressions the diffusion tokenizer truncated
    for path in layout.image_warnings_files():
        warnings.update(json.loads(path.read_text()))
    for message, count in sorted(warnings.items()):
        lines.append(f"Warning: {message} ({count} images).")
    return lines + [""]


def _filter_section(rows: list[dict]) -> list[str]:
    """Rejects per check, from the verdict columns, so a new check appears here without code changes."""
    checks = sorted({k[len("filter_") : -len("_verdict")] for k in rows[0] if k.startswith("filter_") and k.endswith("_verdict")})
    accepted = sum(1 for r in rows if r["accepted"])
    lines = ["## Filter", "", f"{accepted} accepted, {len(rows) - accepted} rejected by the checks (near-duplicates included once balance has run).", ""]
    lines += ["| check | rejected | median score |", "|---|---|---|"]
    for check in checks:
        verdicts = [r[f"filter_{check}_verdict"] for r in rows]
        scores = sorted(r[f"filter_{check}_score"] for r in rows if r[f"filter_{check}_score"] is not None)
        median = f"{scores[len(scores) // 2]:.3g}" if scores else "-"
        lines.append(f"| {check} | {sum(v == 'reject' for v in verdicts)} | {median} |")
    lines += _memorisation_lines(rows)
    renders = Counter(r["image_attempts"] for r in rows if r.get("image_attempts") is not None)
    if sum(n for a, n in renders.items() if a > 1):
        never = sum(1 for r in rows if r["image_attempts"] and r["image_rejections"] and r["image_rejections"].count("attempt") == r["image_attempts"])
        histogram = ", ".join(f"{a} render{'s' if a > 1 else ''}: {n}" for a, n in sorted(renders.items()))
        lines += ["", f"Regeneration: {sum(n for a, n in renders.items() if a > 1)} images were re-rendered ({histogram}); {never} never passed and were dropped."]
    details = Counter(reason for r in rows if r["reject_reasons"] for reason in r["reject_reasons"].split("; ") if ":" in reason)
    if details:
        lines += ["", "Format problems: " + ", ".join(f"{k} x{v}" for k, v in details.most_common(10))]
    return lines + [""]


def _memorisation_lines(rows: list[dict]) -> list[str]:
    """The distribution of each film's correlation with its nearest training film, and the closest pairs."""
    scored = sorted(((r["filter_memorisation_score"], r["id"], r.get("filter_memorisation_nearest")) for r in rows
                     if r.get("filter_memorisation_score") is not None), reverse=True)
    if not scored:
        return []
    values = np.array([s for s, _, _ in scored])
    quantiles = ", ".join(f"p{q} {np.percentile(values, q):.3f}" for q in (5, 50, 95))
    closest = ", ".join(f"{i} ~ {k} ({s:.3f})" for s, i, k in scored[:3])
    flagged = sum(r.get("filter_memorisation_verdict") == "reject" for r in rows)
    return ["", f"Memorisation: correlation of each film with its nearest training film {quantiles}, max {values[0]:.3f}; "
                f"{flagged} rejected as copies. Closest: {closest}."]


def _balance_section(rows: list[dict], plot: Path, targets_path: Path, settings) -> list[str]:
    from synthvlp.entities.stats import long_tail
    from synthvlp.filtering.balance import sample_findings

    selected = Counter(r["split"] for r in rows if r["selected"])
    shards = len({r["shard"] for r in rows if r["shard"]})
    duplicates = sum(1 for r in rows if any(r.get(k) == "reject" for k in r if k.startswith("filter_duplicate_")))
    train = [r for r in rows if r["split"] == "train" and r["accepted"]]
    before = Counter(n for r in train for n in sample_findings(r["planned_entities"]))
    after = Counter(n for r in train if r["selected"] for n in sample_findings(r["planned_entities"]))
    names = sorted(before, key=before.get, reverse=True)
    plt = _plt()
    figure, axis = plt.subplots(figsize=(7, 3.2))
    positions = range(len(names))
    axis.bar([p - 0.2 for p in positions], [before[n] for n in names], width=0.4, label="accepted")
    axis.bar([p + 0.2 for p in positions], [after[n] for n in names], width=0.4, label="selected")
    targets = json.loads(targets_path.read_text()) if targets_path.exists() else {}
    if targets:
        axis.scatter(list(positions), [targets.get(n, float("nan")) for n in names], marker="_", s=200, color="black", label="target", zorder=3)
    axis.set_xticks(list(positions), names, rotation=40, ha="right", fontsize=7)
    axis.set(ylabel="train samples", title="Findings before and after balancing")
    axis.legend()
    figure.tight_layout()
    save_png(figure, plot)
    lines = [
        "## Balance",
        "",
        f"{duplicates} near-duplicates dropped. Exported {selected.get('train', 0)} train and {selected.get('test', 0)} test samples in {shards} shards under `dataset/`.",
        "",
        "| train split | gini | normalised entropy | imbalance ratio | top-10% share |",
        "|---|---|---|---|---|",
    ]
    for label, counts in (("accepted", before), ("selected", after)):
        m = long_tail(list(counts.values()))
        lines.append(f"| {label} | {m['gini']:.3f} | {m['normalised_entropy']:.3f} | {m['imbalance_ratio']:.2f} | {m['top10_share']:.3f} |")
    if targets:
        lines += ["", f"Target `{settings.target}` (the train split's count per finding that balancing aimed for):", "",
                  "| finding | accepted | target | selected |", "|---|---|---|---|"]
        lines += [f"| {n} | {before[n]} | {targets.get(n, float('nan')):.0f} | {after[n]} |" for n in names]
    else:
        lines += ["", "Balancing target `none`: every eligible sample is exported (set `balance.target` to flatten the tail)."]
    return lines + ["", f"![balance](plots/{plot.name})", ""]


def _pretrain_section(layout: RunLayout, plot: Path) -> list[str]:
    metrics_path, log_path = layout.pretrain_metrics, layout.pretrain_log
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
    save_png(figure, plot)
    first = float(log[0]["loss"]) if log else float("nan")
    return [
        "## Pre-training",
        "",
        f"{metrics['steps']} steps, {metrics['samples']} samples in {metrics['seconds']:.1f} s ({metrics['samples_per_second']:.1f} samples/s).",
        f"Loss {first:.3f} -> {metrics['final_loss']:.3f}.",
        *(["", "Training pairs by origin: " + "; ".join(f"{count} from {where}" for where, count in metrics["training_pairs"].items()) + "."]
          if metrics.get("training_pairs") else []),
        "",
        f"![loss curve](plots/{plot.name})",
        "",
    ]


def _evaluate_section(layout: RunLayout, stale: str) -> list[str]:
    from synthvlp.evaluation.harness import benchmark_folders, results_markdown

    folder = layout.evaluate
    if not benchmark_folders(folder):
        return []
    lines = ["## Evaluation", ""]
    if stale:
        lines += [f"**Stale: {stale}** (e.g. a later `synthvlp pretrain` replaced the model); `synthvlp run` redoes it.", ""]
    skipped = layout.evaluate_skipped
    for note in json.loads(skipped.read_text()) if skipped.exists() else []:
        lines.append(f"- skipped {note}")
    return lines + ([""] if lines[-1] else []) + results_markdown(folder, link_prefix="evaluate/")
