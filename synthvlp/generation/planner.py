"""Balanced entity plans (SynCXR step 2): which entities each synthetic report (and image) will state.

Each report gets k entities from the abnormal pool (``plan.findings``) and m from the normal side
(``plan.normals`` plus the absence of each finding). Every pool item has a frequency cap tau_max and leaves the
pool once it is reached, so the planned distribution is flat where a real corpus is long-tailed. A draw that
contradicts what the plan already holds (a vocabulary exclusion pair, a finding and its absence) is skipped.

Caps couple samples, so the plan of a whole run is computed in one pass in sample order, with every draw taken
from the sample's own generator ``sample_rng(seed, id, "plan")``; units then slice it. That is what keeps a plan
independent of sharding and unit size: it depends on (config, seed, sample id) only.
"""

from __future__ import annotations

import difflib

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from synthvlp.config import RunConfig
from synthvlp.entities import Vocabulary
from synthvlp.errors import ConfigError
from synthvlp.schema import BOX, ENTITY
from synthvlp.seeding import sample_id, sample_rng

SIDES = ("left", "right", "bilateral")
ABNORMAL = ("ABNORMALITY", "DISEASE")
NORMAL_SIDE = ("NON-ABNORMALITY", "NON-DISEASE", "ANATOMY")


@dataclass(frozen=True)
class PoolItem:
    """One thing a plan can state: an entity with an assertion ("present", or "absent" for 'no <finding>')."""

    name: str
    assertion: str

    @property
    def label(self) -> str:
        """The form ``Vocabulary.conflicts`` understands: 'no X' for an absence."""
        return self.name if self.assertion == "present" else f"no {self.name}"


def check_findings(config: RunConfig, vocab: Vocabulary) -> None:
    """Every pool entity must be in the vocabulary and on its side; say which one is not and what is close."""
    for field, names, allowed in (("findings", config.plan.findings, ABNORMAL), ("normals", config.plan.normals, NORMAL_SIDE)):
        for name in names:
            try:
                entity = vocab[name]
            except KeyError:
                known = [e.name for e in vocab.entities]
                close = difflib.get_close_matches(name.lower(), known, n=5, cutoff=0.75) or [n for n in known if name.split()[-1] in n][:5]
                hint = f"; did you mean {close[0]!r}? similar entries: {close}" if close else ""
                raise ConfigError(f"plan.{field}: {name!r} is not in the entity vocabulary{hint}") from None
            if entity.category not in allowed:
                raise ConfigError(f"plan.{field}: {name!r} is a {entity.category} entity; plan.{field} takes {'/'.join(allowed)} entities")


def pools(config: RunConfig) -> tuple[list[PoolItem], list[PoolItem]]:
    """The k-side and m-side pools, in config order (the order is part of what a seed reproduces)."""
    plan = config.plan
    abnormal = [PoolItem(n, "present") for n in plan.findings]
    normal = [PoolItem(n, "present") for n in plan.normals]
    if plan.absences:
        normal += [PoolItem(n, "absent") for n in plan.findings]
    return abnormal, normal


def caps(config: RunConfig) -> tuple[int, int]:
    """tau_max for the k side and the m side: the configured cap, or cap_slack times the uniform share."""
    plan, n = config.plan, config.run.n_samples
    if plan.tau_max is not None:
        return plan.tau_max, plan.tau_max
    abnormal, normal = pools(config)

    def share(low: int, high: int, size: int) -> int:
        return max(1, math.ceil(plan.cap_slack * n * (low + high) / 2 / max(1, size)))

    return share(plan.min_findings, plan.max_findings, len(abnormal)), share(plan.min_normals, plan.max_normals, len(normal))


def plan_run(config: RunConfig, vocab: Vocabulary) -> pa.Table:
    """Plan every sample of the run: id, index, split and planned entities (dicts of the manifest's ENTITY)."""
    plan = config.plan
    abnormal, normal = pools(config)
    cap_k, cap_m = caps(config)
    counts: Counter[PoolItem] = Counter()
    rows: dict[str, list] = {"id": [], "index": [], "split": [], "planned_entities": []}
    for index in range(config.run.n_samples):
        key = sample_id(index)
        rng = sample_rng(config.run.seed, key, "plan")
        split = "test" if rng.random() < config.run.test_fraction else "train"
        k = int(rng.integers(plan.min_findings, plan.max_findings + 1))
        m = int(rng.integers(plan.min_normals, plan.max_normals + 1))
        chosen: list[PoolItem] = []
        for pool, want, cap in ((abnormal, k, cap_k), (normal, m, cap_m)):
            taken = 0
            for position in rng.permutation(len(pool)).tolist():
                if taken == want:
                    break
                item = pool[position]
                if counts[item] >= cap or any(c.name == item.name or vocab.conflicts(c.label, item.label) for c in chosen):
                    continue
                chosen.append(item)
                counts[item] += 1
                taken += 1
        sides = rng.integers(0, len(SIDES), size=len(chosen)).tolist()
        entities = [_entity(vocab, item, SIDES[s]) for item, s in zip(chosen, sides, strict=True)]
        rows["id"].append(key)
        rows["index"].append(index)
        rows["split"].append(split)
        rows["planned_entities"].append(entities)
    return pa.table(rows)


@dataclass(frozen=True)
class LabelledFilm:
    """One real film of a labelled set as the planner needs it (the runner reads the set with its adapter).

    ``positives`` and ``negatives`` are harmonised label names (1 and 0 in the set); ``boxes`` are
    (label, x0, y0, x1, y1) in the film's own pixels, x1/y1 exclusive.
    """

    source: str
    split: str
    positives: tuple[str, ...]
    negatives: tuple[str, ...]
    boxes: tuple[tuple[str, float, float, float, float], ...] = ()


def plan_labelled(config: RunConfig, vocab: Vocabulary, films: Sequence[LabelledFilm]) -> pa.Table:
    """One sample per film: its positives that are vocabulary entities are the k side (no side: the labels do not
    say), and m normal-side statements are drawn as in ``plan_run`` from ``plan.normals`` plus the absence of each
    of ``plan.findings`` the film is labelled negative for, without caps (the set's own distribution is kept).

    Adds ``source_image`` and ``source_boxes`` (boxes of present findings, rounded outwards) for the images stage.
    """
    plan = config.plan
    findings = set(plan.findings)
    rows: dict[str, list] = {"id": [], "index": [], "split": [], "planned_entities": [], "source_image": [], "source_boxes": []}
    for index, film in enumerate(films):
        key = sample_id(index)
        rng = sample_rng(config.run.seed, key, "plan")
        chosen = [PoolItem(name, "present") for name in film.positives if name in vocab]
        pool = [PoolItem(n, "present") for n in plan.normals]
        if plan.absences:
            pool += [PoolItem(n, "absent") for n in plan.findings if n in film.negatives]
        want, taken = int(rng.integers(plan.min_normals, plan.max_normals + 1)), 0
        for position in rng.permutation(len(pool)).tolist():
            if taken == want:
                break
            item = pool[position]
            if not any(c.name == item.name or vocab.conflicts(c.label, item.label) for c in chosen):
                chosen.append(item)
                taken += 1
        present = {item.name for item in chosen if item.assertion == "present"}
        rows["id"].append(key)
        rows["index"].append(index)
        rows["split"].append(film.split)
        rows["planned_entities"].append([_entity(vocab, item, None) for item in chosen])
        rows["source_image"].append(film.source)
        rows["source_boxes"].append([
            {"name": label, "laterality": None, "x0": math.floor(x0), "y0": math.floor(y0), "x1": math.ceil(x1), "y1": math.ceil(y1)}
            for label, x0, y0, x1, y1 in film.boxes if label in present and (label in findings or label in vocab)
        ])
    return pa.table({**{k: rows[k] for k in ("id", "index", "split")},
                     "planned_entities": pa.array(rows["planned_entities"], pa.list_(ENTITY)),
                     "source_image": pa.array(rows["source_image"], pa.string()),
                     "source_boxes": pa.array(rows["source_boxes"], pa.list_(BOX))})


def _entity(vocab: Vocabulary, item: PoolItem, side: str | None) -> dict[str, str | None]:
    """A present lateral entity gets a side (None when it is not known); an absence never does ('no left
    effusion' beside 'right effusion' would be a laterality conflict the extractor cannot represent)."""
    lateral = item.assertion == "present" and vocab[item.name].lateral
    return {"name": item.name, "category": vocab[item.name].category, "assertion": item.assertion, "laterality": side if lateral else None}
