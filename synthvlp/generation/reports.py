"""The reports stage: plan rows in; verified FINDINGS/IMPRESSION, re-extracted entities and attempts out.

Each sample runs its own write -> extract -> verify loop, up to 1 + ``reports.max_retries`` attempts, with the
previous attempt's problems as feedback. Samples run concurrently (a remote server is only saturated by many
requests in flight), and each finished sample goes to the journal at once, so a rerun after a crash asks the
model only for what is missing. A report that never verifies is kept with ``report_verified`` false and its
reasons, so nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from synthvlp.config import RunConfig
from synthvlp.entities import EntityExtractor
from synthvlp.errors import UserError
from synthvlp.generation.journal import Journal
from synthvlp.generation.verify import feedback, problems
from synthvlp.generation.writers import ReportWriter, WriteRequest, WriterError, build_writer
from synthvlp.schema import ENTITY
from synthvlp.seeding import sample_seed


def write_reports(
    config: RunConfig,
    plan: pa.Table,
    extractor: EntityExtractor,
    advance: Callable[[int], None] = lambda n: None,
    journal: Path | None = None,
    writer: ReportWriter | None = None,
) -> pa.Table:
    """Write and verify one report per planned sample, resuming from ``journal`` when given."""
    writer = writer or build_writer(config)
    record = Journal(journal) if journal else None
    done = record.read() if record else {}
    rows = plan.select(["id", "planned_entities"]).to_pylist()
    advance(sum(1 for r in rows if r["id"] in done))
    todo = [r for r in rows if r["id"] not in done]
    try:
        results, failures = asyncio.run(_produce_all(config, writer, extractor, todo, record, advance))
    except WriterError as exc:  # the backend could not start (no server answering, no model listed)
        raise UserError(f"reports: {exc}") from None
    finally:
        if record:
            record.close()
    if failures:
        first_id, reason = failures[0]
        raise UserError(
            f"reports: {len(failures)} of {len(todo)} samples got no draft from the {config.reports.backend} backend "
            f"(first: {first_id}: {reason}); {len(results) + len(done)} finished reports are kept, rerun to resume"
        )
    done.update(results)
    return _table(config, rows, done, extractor)


async def _produce_all(config, writer, extractor, rows, record, advance) -> tuple[dict[str, dict], list[tuple[str, str]]]:
    results: dict[str, dict] = {}
    failures: list[tuple[str, str]] = []

    async def one(row: dict) -> None:
        try:
            result = await _produce(config, writer, extractor, row)
        except WriterError as exc:
            failures.append((row["id"], str(exc)))
            return
        if record:
            record.append(result)
        results[row["id"]] = result
        advance(1)

    await writer.start()
    try:
        await asyncio.gather(*(one(r) for r in rows))
    finally:
        await writer.stop()
    return results, failures


async def _produce(config: RunConfig, writer: ReportWriter, extractor: EntityExtractor, row: dict) -> dict:
    """The verification loop for one sample."""
    rejections: list[str] = []
    hints: tuple[str, ...] = ()
    for attempt in range(config.reports.max_retries + 1):
        request = WriteRequest(row["id"], row["planned_entities"], attempt, hints, config.run.seed)
        draft = await writer.write(request)
        reasons = problems(row["planned_entities"], extractor.extract([f"{draft.findings} {draft.impression}"])[0])
        if not reasons:
            break
        rejections.append(f"attempt {attempt + 1}: " + "; ".join(reasons))
        hints = tuple(feedback(reasons))
    return {
        "id": row["id"],
        "findings": draft.findings,
        "impression": draft.impression,
        "generator": writer.tag,
        "attempts": attempt + 1,
        "verified": not reasons,
        "rejections": " | ".join(rejections),
    }


def _table(config: RunConfig, rows: list[dict], done: dict[str, dict], extractor: EntityExtractor) -> pa.Table:
    records = [done[r["id"]] for r in rows]
    mentions = extractor.extract([f"{r['findings']} {r['impression']}" for r in records])
    return pa.table(
        {
            "id": [r["id"] for r in records],
            "findings": [r["findings"] for r in records],
            "impression": [r["impression"] for r in records],
            "extracted_entities": pa.array([_dedupe(m) for m in mentions], pa.list_(ENTITY)),
            "report_generator": [r["generator"] for r in records],
            "report_seed": [sample_seed(config.run.seed, r["id"], "report", r["attempts"] - 1) for r in records],
            "report_attempts": pa.array([r["attempts"] for r in records], pa.int32()),
            "report_verified": pa.array([r["verified"] for r in records], pa.bool_()),
            # typed explicitly: a unit whose reports all passed first time would otherwise get a null-typed column
            "report_rejections": pa.array([r["rejections"] or None for r in records], pa.string()),
        }
    )


def _dedupe(mentions: list) -> list[dict[str, str | None]]:
    """One entry per (entity, assertion, side), in order of first mention."""
    seen: dict[tuple, dict[str, str | None]] = {}
    for m in mentions:
        key = (m.canonical, m.assertion, m.laterality)
        seen.setdefault(key, {"name": m.canonical, "category": m.category, "assertion": m.assertion, "laterality": m.laterality})
    return list(seen.values())
