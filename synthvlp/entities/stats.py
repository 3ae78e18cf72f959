"""Entity statistics of a report corpus: how long-tailed is it, and which entities does it lack?

Backs `synthvlp entities stats CORPUS`. SynCXR balances its synthetic set because real entity frequencies are
long-tailed; these numbers say how far a corpus (real, or a run's synthetic manifest) is from flat.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from synthvlp.entities.corpus import read_corpus
from synthvlp.entities.extractor import EntityExtractor
from synthvlp.entities.negation import ASSERTIONS
from synthvlp.entities.vocabulary import CATEGORIES

log = logging.getLogger(__name__)
BATCH = 512


def long_tail(counts: Sequence[int]) -> dict[str, float]:
    """Gini, normalised entropy, imbalance ratio (max/min) and the share of the top 10% of entities, over the
    entities that occur at least once. A flat distribution gives gini 0, entropy 1, imbalance 1."""
    xs = sorted(c for c in counts if c > 0)
    n, total = len(xs), sum(xs)
    if n == 0:
        return {"entities": 0, "gini": 0.0, "normalised_entropy": 0.0, "imbalance_ratio": 0.0, "top10_share": 0.0}
    gini = (2 * sum(i * x for i, x in enumerate(xs, 1))) / (n * total) - (n + 1) / n
    entropy = -sum(x / total * math.log(x / total) for x in xs)
    top = xs[-max(1, math.ceil(n / 10)):]
    return {"entities": n, "gini": gini, "normalised_entropy": entropy / math.log(n) if n > 1 else 1.0,
            "imbalance_ratio": xs[-1] / xs[0], "top10_share": sum(top) / total}


def run_stats(corpus_path: str | Path, out_dir: str | Path, text_column: str | None = None,
              extractor: EntityExtractor | None = None) -> dict:
    """Count entity mentions by category and assertion; write entity_counts.csv/.parquet, rank_frequency.png,
    category_counts.png and summary.json to `out_dir`; return the summary."""
    extractor = extractor or EntityExtractor()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts: Counter[tuple[str, str, str]] = Counter()
    reports_with: Counter[str] = Counter()
    n_reports = n_empty = 0
    errors: list[str] = []
    for batch in _batches(read_corpus(corpus_path, text_column), BATCH):
        for report, mentions in zip(batch, extractor.extract([r.text for r in batch])):
            n_reports += 1
            if report.error:
                errors.append(f"{report.id}: {report.error}")
            elif not report.text.strip():
                n_empty += 1
            for m in mentions:
                counts[(m.canonical, m.category, m.assertion)] += 1
            reports_with.update({m.canonical for m in mentions})
    table = _table(counts, reports_with)
    table.to_csv(out / "entity_counts.csv", index=False)
    table.to_parquet(out / "entity_counts.parquet", index=False)
    vocab_size = len(extractor.vocab)
    summary = {
        "corpus": str(corpus_path), "reports": n_reports, "empty_reports": n_empty, "errors": len(errors),
        "error_examples": errors[:20], "mentions": int(table["total"].sum()) if len(table) else 0,
        "vocabulary_entities": vocab_size, "entities_seen": int(len(table)),
        "coverage": len(table) / vocab_size if vocab_size else 0.0,
        "all": long_tail(table["total"].tolist()),
        "present": long_tail(table["present"].tolist()),
        "by_category": {c: long_tail(table.loc[table["category"] == c, "total"].tolist()) for c in CATEGORIES},
    }
    _plots(table, out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if errors:
        log.warning("%d of %d reports could not be read (see summary.json error_examples)", len(errors), n_reports)
    return summary


def _batches(items: Iterable, size: int) -> Iterable[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _table(counts: Counter, reports_with: Counter):  # noqa: ANN202 - pandas.DataFrame
    import pandas as pd

    rows: dict[tuple[str, str], dict[str, int]] = {}
    for (name, category, assertion), n in counts.items():
        rows.setdefault((name, category), dict.fromkeys(ASSERTIONS, 0))[assertion] += n
    records = [{"entity": name, "category": category, **by, "total": sum(by.values()), "reports": reports_with[name]}
               for (name, category), by in rows.items()]
    columns = ["entity", "category", *ASSERTIONS, "total", "reports"]
    table = pd.DataFrame(records, columns=columns)
    return table.sort_values(["total", "entity"], ascending=[False, True], ignore_index=True)


def _plots(table, out: Path) -> None:  # noqa: ANN001 - pandas.DataFrame
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for category in CATEGORIES:
        sub = table.loc[table["category"] == category, "total"].sort_values(ascending=False).tolist()
        if sub:
            ax.loglog(range(1, len(sub) + 1), sub, marker=".", linestyle="-", label=category)
    ax.set(xlabel="rank within category", ylabel="mentions", title="Entity rank-frequency (log-log)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "rank_frequency.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    bottom = [0] * len(CATEGORIES)
    for assertion in ASSERTIONS:
        heights = [int(table.loc[table["category"] == c, assertion].sum()) for c in CATEGORIES]
        ax.bar(CATEGORIES, heights, bottom=bottom, label=assertion)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set(ylabel="mentions", title="Mentions per category and assertion")
    ax.tick_params(axis="x", labelsize=8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "category_counts.png", dpi=120)
    plt.close(fig)
