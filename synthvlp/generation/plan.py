"""Entity plans: which findings each synthetic report (and image) will contain.

The walking-skeleton planner samples findings uniformly from ``plan.findings``; the balanced planner with
frequency caps replaces it behind the same function. A plan depends only on (run seed, sample id), never on the
order or grouping in which samples are planned.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from synthvlp.config import RunConfig
from synthvlp.entities import Vocabulary
from synthvlp.errors import ConfigError
from synthvlp.seeding import sample_id, sample_rng

SIDES = ("left", "right", "bilateral")


def check_findings(config: RunConfig, vocab: Vocabulary) -> None:
    """Every planned finding must be a known abnormal entity; say which one is not and what is close."""
    for name in config.plan.findings:
        try:
            entity = vocab[name]
        except KeyError:
            close = [e.name for e in vocab.entities if name.split()[-1] in e.name][:5]
            hint = f"; similar entries: {close}" if close else ""
            raise ConfigError(f"plan.findings: {name!r} is not in the entity vocabulary{hint}") from None
        if entity.category not in ("ABNORMALITY", "DISEASE"):
            raise ConfigError(f"plan.findings: {name!r} is a {entity.category} entity; list abnormal findings only")


def plan_samples(config: RunConfig, vocab: Vocabulary, indices: Sequence[int]) -> pa.Table:
    """Plan the samples at ``indices``: id, index, split and the planned entities (present and absent)."""
    findings = config.plan.findings
    rows: dict[str, list] = {"id": [], "index": [], "split": [], "planned_entities": []}
    for index in indices:
        key = sample_id(index)
        rng = sample_rng(config.run.seed, key, "plan")
        split = "test" if rng.random() < config.run.test_fraction else "train"
        count = int(rng.integers(config.plan.min_findings, config.plan.max_findings + 1))
        present = sorted(rng.choice(len(findings), size=count, replace=False).tolist())
        entities = []
        for position, name in enumerate(findings):
            side = str(rng.choice(SIDES)) if vocab[name].lateral else None
            if position in present:
                entities.append(_entity(vocab, name, "present", side))
            elif rng.random() < 0.3:
                entities.append(_entity(vocab, name, "absent", None))
        rows["id"].append(key)
        rows["index"].append(index)
        rows["split"].append(split)
        rows["planned_entities"].append(entities)
    return pa.table(rows)


def _entity(vocab: Vocabulary, name: str, assertion: str, laterality: str | None) -> dict[str, str | None]:
    return {"name": name, "category": vocab[name].category, "assertion": assertion, "laterality": laterality}
