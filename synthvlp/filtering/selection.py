"""The balance stage's decision: drop near-duplicates among accepted samples, then pick the balanced subset."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from synthvlp.config import RunConfig
from synthvlp.filtering.balance import select_samples
from synthvlp.filtering.dedupe import image_duplicates, report_duplicates
from synthvlp.seeding import sample_seed


def select_dataset(config: RunConfig, rows: list[dict], signatures: np.ndarray) -> tuple[pa.Table, dict[str, float]]:
    """(table of id, duplicate-check columns, ``accepted``, ``reject_reasons`` and ``selected``; the train
    split's target count per finding).

    ``signatures`` are the images' rows from ``image_signatures``, aligned with ``rows``.
    Only accepted samples take part in duplicate search, so a rejected image never shadows a good one. A
    near-duplicate is a rejection like any other: its ``accepted`` becomes false and its reason names the check
    and the similarity ("duplicate_image: 0.9996 to an earlier sample"); the manifest takes these two columns
    from here instead of the filter stage's.
    """
    settings = config.filter
    accepted = np.array([bool(r["accepted"]) for r in rows])
    index = np.flatnonzero(accepted)
    columns: dict[str, object] = {"id": [r["id"] for r in rows]}
    eligible = accepted.copy()
    reasons = [[r["reject_reasons"]] if r.get("reject_reasons") else [] for r in rows]
    checks = {}
    if settings.duplicate_image_similarity is not None:
        checks["duplicate_image"] = image_duplicates(signatures[index], settings.duplicate_image_similarity)
    if settings.duplicate_report_jaccard is not None:
        texts = [f"{rows[i]['findings']} {rows[i]['impression']}" for i in index]
        checks["duplicate_report"] = report_duplicates(texts, settings.duplicate_report_jaccard)
    for name, (similarity, duplicate) in checks.items():
        scores = np.full(len(rows), np.nan)
        scores[index] = similarity
        verdicts: list[str | None] = [None] * len(rows)
        for position, i in enumerate(index):
            verdicts[i] = "reject" if duplicate[position] else "pass"
            if duplicate[position]:
                reasons[i].append(f"{name}: {similarity[position]:.4f} to an earlier sample")
        eligible[index[duplicate]] = False
        columns[f"filter_{name}_score"] = pa.array(scores, pa.float64(), from_pandas=True)
        columns[f"filter_{name}_verdict"] = pa.array(verdicts, pa.string())
    candidates = [{"split": r["split"], "planned_entities": r["planned_entities"], "eligible": bool(e)} for r, e in zip(rows, eligible, strict=True)]
    selection = select_samples(config.balance, candidates, seed=sample_seed(config.run.seed, "dataset", "balance"))
    columns["accepted"] = eligible.tolist()
    columns["reject_reasons"] = pa.array(["; ".join(r) if r else None for r in reasons], pa.string())
    columns["selected"] = selection.selected.tolist()
    return pa.table(columns), selection.targets
