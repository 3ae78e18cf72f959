"""Choose the training subset whose entity distribution best matches a target, under a size budget.

SynCXR's gain comes partly from flattening the long tail of findings. Targets: ``uniform`` (every finding at most
``entity_cap`` samples) or ``temperature`` (target share proportional to frequency^(1/T); T=1 keeps the data's
shape, large T flattens it). Candidates are visited in a seeded random order and a sample is taken while none of
its findings has reached its target, so the result is reproducible and independent of sharding. The test split
is never rebalanced (evaluation must see the data as it is); both splits honour ``max_samples``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from synthvlp.config import BalanceSection

NO_FINDING = "no finding"
ABNORMAL = ("ABNORMALITY", "DISEASE")


def sample_findings(entities: list[dict] | None) -> list[str]:
    """The abnormal findings a sample shows, or ``[NO_FINDING]``: the units the distribution is measured in."""
    names = sorted({e["name"] for e in entities or () if e["assertion"] == "present" and e["category"] in ABNORMAL})
    return names or [NO_FINDING]


@dataclass
class Selection:
    selected: np.ndarray  # bool per row
    targets: dict[str, float]  # per finding: the train split's target count (empty when target is none)


def targets_for(counts: Counter, settings: BalanceSection, budget: int, mean_findings: float) -> dict[str, float]:
    if settings.target == "uniform":
        cap = settings.entity_cap if settings.entity_cap is not None else budget * mean_findings / max(1, len(counts))
        return {name: float(min(count, cap)) for name, count in counts.items()}
    weights = {name: count ** (1.0 / settings.temperature) for name, count in counts.items()}
    scale = budget * mean_findings / sum(weights.values())
    return {name: min(float(counts[name]), w * scale) for name, w in weights.items()}


def select_samples(settings: BalanceSection, rows: list[dict], seed: int) -> Selection:
    """Rows need ``split``, ``planned_entities`` and ``eligible`` (accepted and not a duplicate)."""
    selected = np.zeros(len(rows), dtype=bool)
    order = np.random.default_rng(seed).permutation(len(rows))
    targets: dict[str, float] = {}
    for split in ("train", "test"):
        candidates = [i for i in order if rows[i]["eligible"] and rows[i]["split"] == split]
        budget = min(len(candidates), settings.max_samples or len(candidates))
        if split == "test" or settings.target == "none":
            selected[sorted(candidates)[:budget]] = True
            continue
        findings = {i: sample_findings(rows[i]["planned_entities"]) for i in candidates}
        counts = Counter(name for names in findings.values() for name in names)
        mean_findings = sum(len(n) for n in findings.values()) / max(1, len(findings))
        targets = targets_for(counts, settings, budget, mean_findings)
        taken: Counter = Counter()
        chosen = 0
        for i in candidates:
            if chosen == budget:
                break
            if all(taken[name] < targets[name] for name in findings[i]):
                taken.update(findings[i])
                selected[i] = True
                chosen += 1
    return Selection(selected=selected, targets=targets)
