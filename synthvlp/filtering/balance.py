"""Choose which accepted samples are exported for training and testing."""

from __future__ import annotations

import pyarrow as pa

from synthvlp.config import BalanceSection


def select_samples(settings: BalanceSection, manifest: pa.Table) -> pa.Table:
    """Mark accepted samples as selected, keeping at most ``max_samples`` per split in index order."""
    rows = manifest.select(["id", "split", "accepted"]).to_pylist()
    kept: dict[str, int] = {}
    selected = []
    for row in rows:
        take = bool(row["accepted"]) and (settings.max_samples is None or kept.get(row["split"], 0) < settings.max_samples)
        if take:
            kept[row["split"]] = kept.get(row["split"], 0) + 1
        selected.append(take)
    return pa.table({"id": manifest.column("id"), "selected": selected})
