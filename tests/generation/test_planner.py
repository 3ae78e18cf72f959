"""The balanced planner: caps, k/m ranges, no contradictions, reproducible and independent of sharding."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from synthvlp.config import load_config
from synthvlp.entities import load_vocabulary
from synthvlp.errors import ConfigError
from synthvlp.generation.plan_stats import flatness, planned_counts
from synthvlp.generation.planner import PoolItem, caps, check_findings, plan_run
from synthvlp.runfolder import prepare_run_folder
from synthvlp.runner import Runner

VOCAB = load_vocabulary()


def contradictions(entities: list[dict]) -> list[str]:
    """Pairs of planned entities a report may not state together, repeated entities and sides on entities without
    one: what no plan may hold."""
    labels = [e["name"] if e["assertion"] == "present" else f"no {e['name']}" for e in entities]
    found = [f"{a} / {b}" for i, a in enumerate(labels) for b in labels[i + 1 :] if VOCAB.conflicts(a, b)]
    names = [e["name"] for e in entities]
    found += [f"{n} twice" for n in sorted({n for n in names if names.count(n) > 1})]
    found += [f"{e['name']} has side {e['laterality']} but is not lateral" for e in entities if e["laterality"] and not VOCAB[e["name"]].lateral]
    return found


def config(**plan):
    overrides = [f"{k}={v}" for k, v in {"run.n_samples": 600, "run.seed": 3, **{f"plan.{k}": v for k, v in plan.items()}}.items()]
    return load_config(None, overrides)


def test_caps_are_respected_and_k_m_ranges_hold():
    cfg = config(min_findings=1, max_findings=3, min_normals=0, max_normals=2, tau_max=120)
    table = plan_run(cfg, VOCAB)
    counts = Counter(PoolItem(e["name"], e["assertion"]) for row in table.column("planned_entities").to_pylist() for e in row)
    assert max(counts.values()) <= 120
    for row in table.column("planned_entities").to_pylist():
        k = sum(e["category"] in ("ABNORMALITY", "DISEASE") and e["assertion"] == "present" for e in row)
        assert k <= 3 and len(row) - k <= 2


def test_no_plan_is_contradictory_even_with_conflict_prone_pools():
    """'normal chest' excludes every abnormality, 'normal heart size' excludes cardiomegaly, absences their finding."""
    cfg = config(max_findings=3, normals="[normal chest, normal heart size, clear lungs, normal pleural spaces]", max_normals=4)
    for row in plan_run(cfg, VOCAB).column("planned_entities").to_pylist():
        assert contradictions(row) == [], row


def test_caps_flatten_a_skewed_pool():
    """Uniform draws over a pool that exclusions thin out are skewed; a tight cap evens the counts out."""
    loose = planned_counts(config(tau_max=10_000), plan_run(config(tau_max=10_000), VOCAB).column("planned_entities").to_pylist())
    tight_cfg = config()
    tight = planned_counts(tight_cfg, plan_run(tight_cfg, VOCAB).column("planned_entities").to_pylist())
    assert max(tight.values()) <= max(caps(tight_cfg))
    assert flatness(tight)["gini"] < flatness(loose)["gini"]


def test_plans_depend_only_on_seed_and_sample_id():
    a = plan_run(config(), VOCAB)
    assert a.equals(plan_run(config(), VOCAB))
    other_seed = load_config(None, ["run.n_samples=600", "run.seed=4"])
    assert not a.column("planned_entities").equals(plan_run(other_seed, VOCAB).column("planned_entities"))


def test_unknown_or_misplaced_entity_is_named():
    with pytest.raises(ConfigError, match=r"plan.normals: 'cardiomegaly' is a ABNORMALITY entity"):
        check_findings(config(normals="[cardiomegaly]", max_normals=1), VOCAB)
    with pytest.raises(ConfigError, match=r"plan.findings: 'unicorn' is not in the entity vocabulary"):
        check_findings(config(findings="[unicorn]", max_findings=1), VOCAB)
    with pytest.raises(ConfigError, match=r"'pleural efusion' is not in the entity vocabulary; did you mean 'pleural effusion'\?"):
        check_findings(config(findings="[pleural efusion]", max_findings=1), VOCAB)


@pytest.mark.parametrize(("shard_size", "shards"), [(7, 1), (25, 3)])
def test_plans_are_independent_of_unit_size_and_sharding(write_config, tmp_path, shard_size, shards):
    """The run's plan is one global pass sliced per unit: any unit size and any --shard split give the same rows."""
    reference = plan_run(load_config(write_config(tmp_path / "ref")), VOCAB)
    path = write_config(tmp_path / f"run-{shard_size}", run={"shard_size": shard_size}, name=f"c{shard_size}.yaml")
    cfg = load_config(path)
    run_dir = prepare_run_folder(cfg)
    for index in range(shards):
        Runner(cfg, run_dir, console=Console(quiet=True), shard=(index, shards)).run(["plan"])
    runner = Runner(cfg, run_dir, console=Console(quiet=True))
    parts = [pq.read_table(runner.layout.part("plan", u.index)) for u in runner.units()]
    assert pa.concat_tables(parts).equals(reference)
