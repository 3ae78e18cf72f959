"""The sample schema: the manifest's columns, their types, and validation on write.

One row per sample. Stages fill their own columns; columns of stages that have not run are null. Quality
checks add two columns each, ``filter_<check>_score`` (float) and ``filter_<check>_verdict`` ("pass" or
"reject"), and a check that finds a neighbour (the memorisation guard) a third, ``filter_<check>_nearest`` (its
key), so a new check needs no schema change. The manifest is written only through ``write_manifest``,
which validates it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from synthvlp.errors import UserError
from synthvlp.store import atomic_open

ENTITY = pa.struct(
    [
        ("name", pa.string()),
        ("category", pa.string()),
        ("assertion", pa.string()),
        ("laterality", pa.string()),
    ]
)
"""An entity in a plan or extracted from text: canonical name, RaTE category, assertion, laterality or null."""

BOX = pa.struct(
    [
        ("name", pa.string()),
        ("laterality", pa.string()),
        ("x0", pa.int32()),
        ("y0", pa.int32()),
        ("x1", pa.int32()),
        ("y1", pa.int32()),
    ]
)
"""A drawn finding's box in image pixels (x1, y1 exclusive; null when its mask is empty). The i-th box of a
sample is bit i of its ``<key>.seg.png`` mask."""

ASSERTIONS = ("present", "absent", "uncertain")
VERDICTS = ("pass", "reject")
SPLITS = ("train", "test")

COLUMNS = pa.schema(
    [
        ("id", pa.string()),
        ("index", pa.int64()),
        ("split", pa.string()),
        ("planned_entities", pa.list_(ENTITY)),
        ("source_image", pa.string()),
        ("source_boxes", pa.list_(BOX)),
        ("findings", pa.string()),
        ("impression", pa.string()),
        ("extracted_entities", pa.list_(ENTITY)),
        ("report_generator", pa.string()),
        ("report_seed", pa.int64()),
        ("report_attempts", pa.int32()),
        ("report_verified", pa.bool_()),
        ("report_rejections", pa.string()),
        ("image_generator", pa.string()),
        ("image_seed", pa.int64()),
        ("image_attempts", pa.int32()),
        ("image_rejections", pa.string()),
        ("finding_boxes", pa.list_(BOX)),
        ("image_shard", pa.string()),
        ("accepted", pa.bool_()),
        ("reject_reasons", pa.string()),
        ("selected", pa.bool_()),
        ("shard", pa.string()),
    ]
)
"""Fixed columns in order. ``source_image`` is the real film a sample was planned from (``plan.labels``; null for
samples planned from scratch) and ``source_boxes`` that film's boxes in its own pixels. ``image_shard`` is the stage shard holding the rendered image; ``image_attempts``
counts the renders regeneration needed and ``image_rejections`` lists each rejected render's failing checks
("attempt 1: contrast"; null when the first render passed); ``accepted`` is true when every per-sample check
passed and, once balance has run, the sample is no near-duplicate (``reject_reasons`` then names the duplicate
check and its similarity); ``selected`` marks the samples balance exported (eligible: accepted and not a near-duplicate); ``shard`` is the
exported training/test shard (null when the sample was not selected). ``report_attempts`` counts the drafts the
verification loop needed, ``report_verified`` says whether the last one matched the plan, and
``report_rejections`` lists each failed attempt's reasons ("attempt 1: missing: nodule (present, right)"; null
when the first draft passed)."""

FILTER_COLUMN = re.compile(r"^filter_[a-z0-9_]+_(score|verdict|nearest)$")


def empty_table() -> pa.Table:
    return COLUMNS.empty_table()


def conform(table: pa.Table) -> pa.Table:
    """Order and type ``table`` as the schema says: fixed columns first (nulls where absent), then filter columns."""
    length = table.num_rows
    arrays, fields = [], []
    for field in COLUMNS:
        if field.name in table.column_names:
            arrays.append(table.column(field.name).cast(field.type))
        else:
            arrays.append(pa.nulls(length, field.type))
        fields.append(field)
    for name in sorted(n for n in table.column_names if FILTER_COLUMN.match(n)):
        kind = pa.float64() if name.endswith("_score") else pa.string()
        arrays.append(table.column(name).cast(kind))
        fields.append(pa.field(name, kind))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def validate(table: pa.Table, source: str = "manifest") -> None:
    """Raise ``UserError`` naming the column (and first bad row) if ``table`` breaks the sample schema."""
    unknown = [n for n in table.column_names if n not in COLUMNS.names and not FILTER_COLUMN.match(n)]
    if unknown:
        raise UserError(f"{source}: unknown columns {unknown}; filter columns must match {FILTER_COLUMN.pattern}")
    for field in COLUMNS:
        if field.name not in table.column_names:
            raise UserError(f"{source}: missing column {field.name!r}")
        if not table.schema.field(field.name).type.equals(field.type):
            raise UserError(f"{source}: column {field.name!r} has type {table.schema.field(field.name).type}, expected {field.type}")
    ids = table.column("id").to_pylist()
    if any(i is None for i in ids):
        raise UserError(f"{source}: column 'id' has nulls at row {ids.index(None)}")
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        duplicate = next(i for i in ids if i in seen or seen.add(i))
        raise UserError(f"{source}: sample id {duplicate!r} appears more than once")
    bad_key = next((i for i in ids if "." in i or "/" in i), None)
    if bad_key is not None:
        raise UserError(f"{source}: sample id {bad_key!r} contains '.' or '/', which WebDataset keys cannot")
    _check_values(table, "split", SPLITS, source)
    for name in table.column_names:
        if FILTER_COLUMN.match(name) and name.endswith("_verdict"):
            _check_values(table, name, VERDICTS, source)
    for column in ("planned_entities", "extracted_entities"):
        for row, entities in enumerate(table.column(column).to_pylist()):
            for entity in entities or ():
                if entity["assertion"] not in ASSERTIONS:
                    raise UserError(f"{source}: row {row} ({ids[row]}), {column}: assertion {entity['assertion']!r} not in {ASSERTIONS}")


def _check_values(table: pa.Table, column: str, allowed: tuple[str, ...], source: str) -> None:
    for row, value in enumerate(table.column(column).to_pylist()):
        if value is not None and value not in allowed:
            raise UserError(f"{source}: row {row}, column {column!r}: {value!r} not in {allowed}")


def write_manifest(table: pa.Table, path: Path) -> None:
    """Validate and write the manifest atomically. Bytes depend only on the rows, so reruns are identical."""
    table = conform(table)
    validate(table, source=str(path))
    with atomic_open(path, "wb") as handle:
        pq.write_table(table, handle, compression="zstd")

