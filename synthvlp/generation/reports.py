"""The reports stage: plan rows in, report text and the entities re-extracted from it out."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from synthvlp.config import RunConfig
from synthvlp.entities import EntityExtractor
from synthvlp.generation import template_writer
from synthvlp.seeding import sample_rng, sample_seed


def write_reports(
    config: RunConfig,
    plan: pa.Table,
    extractor: EntityExtractor,
    advance: Callable[[int], None] = lambda n: None,
) -> pa.Table:
    """Write one report per planned sample and record what the extractor finds in it."""
    ids = plan.column("id").to_pylist()
    plans = plan.column("planned_entities").to_pylist()
    findings, impressions, seeds = [], [], []
    for key, entities in zip(ids, plans, strict=True):
        seed = sample_seed(config.run.seed, key, "report")
        report = template_writer.write_report(entities, sample_rng(config.run.seed, key, "report"))
        findings.append(report.findings)
        impressions.append(report.impression)
        seeds.append(seed)
        advance(1)
    mentions = extractor.extract([f"{f} {i}" for f, i in zip(findings, impressions, strict=True)])
    extracted = [_dedupe(m) for m in mentions]
    return pa.table(
        {
            "id": ids,
            "findings": findings,
            "impression": impressions,
            "extracted_entities": extracted,
            "report_generator": [f"{template_writer.NAME}@{template_writer.VERSION}"] * len(ids),
            "report_seed": seeds,
        }
    )


def _dedupe(mentions: list) -> list[dict[str, str | None]]:
    """One entry per (entity, assertion, side), in order of first mention."""
    seen: dict[tuple, dict[str, str | None]] = {}
    for m in mentions:
        key = (m.canonical, m.assertion, m.laterality)
        seen.setdefault(key, {"name": m.canonical, "category": m.category, "assertion": m.assertion, "laterality": m.laterality})
    return list(seen.values())
