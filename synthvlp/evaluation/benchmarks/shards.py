"""Our own WebDataset shards as a benchmark: labels from the planned entities, regions from the phantom masks.

A sample's ``json`` lists its entities with an assertion; "present" is 1, "uncertain" NaN, and "absent" or not
mentioned 0 (a synthetic report states everything its image shows). The phantom renderer also writes
``seg.png`` (one bit per finding) and ``json["masks"]`` naming each bit with its box; a shard from the
diffusers backend has neither, so it gives labels but no regions. Masks decode lazily, per grounded image.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np

from synthvlp.errors import UserError
from synthvlp.evaluation.benchmarks._common import existing, label_matrix
from synthvlp.evaluation.benchmarks.base import LabelledSet, Region
from synthvlp.evaluation.labels import harmonise
from synthvlp.masks import decode_masks
from synthvlp.store import read_shard

VALUES = {"absent": 0.0, "uncertain": float("nan"), "present": 1.0}
"""Assertion -> label, in rising precedence: an entity stated twice (left and right) keeps its strongest."""


def load(path: Path | list[Path], classes: list[str] | None = None) -> LabelledSet:
    """Shards from files, or every ``*.tar`` of a folder; ``classes`` defaults to every entity seen present."""
    paths = [existing(Path(p), "shard") for p in (path if isinstance(path, list) else [path])]
    tars = [t for p in paths for t in (sorted(p.glob("*.tar")) if p.is_dir() else [p])]
    if not tars:
        raise UserError(f"no *.tar shard in {[str(p) for p in paths]}")
    samples = [(tar, s) for tar in tars for s in read_shard(tar)]
    metas = [_meta(tar, s) for tar, s in samples]
    if classes is None:
        classes = sorted({harmonise(e["name"], "shards") for m in metas for e in m.get("entities", [])
                          if e.get("assertion") == "present"})
    refs, ids, rows, regions, split = [], [], [], [], []
    for index, ((tar, sample), meta) in enumerate(zip(samples, metas)):
        if "png" not in sample:
            raise UserError(f"{tar}: sample {sample['__key__']} has no png")
        refs.append(sample["png"])
        ids.append(str(sample["__key__"]))
        rows.append(_row(meta.get("entities", []), classes))
        split.append(str(meta.get("split", "")))
        masks = meta.get("masks", [])
        if "seg.png" in sample and masks:
            count = max(m["bit"] for m in masks) + 1
            for m in masks:
                regions.append(Region(index, harmonise(m["name"], "shards"), (m["x0"], m["y0"], m["x1"], m["y1"]),
                                      mask=partial(_bit, sample["seg.png"], count, m["bit"])))
    return LabelledSet("shards", refs, ids, list(classes), label_matrix(rows, classes), regions, split=split)


def _row(entities: list[dict], classes: list[str]) -> dict[str, float]:
    """Class -> label of the strongest assertion made about it; 0 for a class not mentioned."""
    rank = {assertion: i for i, assertion in enumerate(VALUES)}
    strongest: dict[str, str] = {}
    for entity in entities:
        name = harmonise(entity["name"], "shards")
        if rank[entity["assertion"]] > rank[strongest.get(name, "absent")]:
            strongest[name] = entity["assertion"]
    return {c: VALUES[strongest.get(c, "absent")] for c in classes}


def _meta(tar: Path, sample: dict) -> dict:
    """The sample's parsed json; a missing or broken one is an error naming the shard and key."""
    try:
        return json.loads(sample["json"])
    except (KeyError, ValueError) as exc:
        raise UserError(f"{tar}: sample {sample['__key__']} has no readable json ({exc})") from exc


def _bit(png: bytes, count: int, bit: int) -> np.ndarray:
    """Mask ``bit`` of a ``seg.png``."""
    return decode_masks(png, count)[bit]
