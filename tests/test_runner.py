"""The runner on tiny runs: resuming, sharding, corruption, config guard, disk-full, seed independence."""

from __future__ import annotations

import errno
import json
import os
import shutil

import pyarrow.parquet as pq
import pytest
from rich.console import Console

from synthvlp.config import load_config
from synthvlp.errors import RunFolderError, UserError
from synthvlp.runfolder import prepare_run_folder
from synthvlp.runner import Runner

DATA_STAGES = ("plan", "reports", "images", "filter", "balance")


def make_runner(path, force=False, shard=(0, 1), overrides=()):
    config = load_config(path, list(overrides))
    console = Console(record=True, width=200)
    return Runner(config, prepare_run_folder(config, force=force), console=console, shard=shard)


def test_data_stages_write_schema_valid_manifest_and_shards(write_config):
    runner = make_runner(write_config())
    runner.run(DATA_STAGES)
    manifest = pq.read_table(runner.run_dir / "manifest.parquet")
    assert manifest.num_rows == 60
    assert manifest.column("id").to_pylist() == [f"s{i:08d}" for i in range(60)]
    assert manifest.column("findings").null_count == 0
    assert set(manifest.column("filter_contrast_verdict").to_pylist()) <= {"pass", "reject"}
    selected = [r for r in manifest.to_pylist() if r["selected"]]
    assert selected and all(r["shard"].startswith(r["split"]) for r in selected)
    assert (runner.run_dir / "report.md").read_text().startswith("# Run report: tiny")
    assert sorted(p.name for p in (runner.run_dir / "images").iterdir()) == [f"shard-{i:06d}.tar" for i in range(3)]


def test_rerun_skips_finished_units_and_keeps_bytes(write_config):
    runner = make_runner(write_config())
    runner.run(DATA_STAGES)
    before = (runner.run_dir / "manifest.parquet").read_bytes()
    again = make_runner(write_config())
    again.run(DATA_STAGES)
    output = again.console.export_text()
    assert "plan: all 3 units already done" in output
    assert "balance: already done" in output
    assert (runner.run_dir / "manifest.parquet").read_bytes() == before


def test_truncated_shard_is_detected_redone_and_reported(write_config):
    runner = make_runner(write_config())
    runner.run(DATA_STAGES)
    before = (runner.run_dir / "manifest.parquet").read_bytes()
    shard = runner.run_dir / "images" / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[:1000])
    again = make_runner(write_config())
    again.run(DATA_STAGES)
    assert "images unit-000001: images/shard-000001.tar is truncated" in again.console.export_text()
    assert (runner.run_dir / "manifest.parquet").read_bytes() == before


def test_shards_of_a_run_union_to_the_unsharded_run(write_config, tmp_path):
    whole = make_runner(write_config(out_dir=tmp_path / "whole"))
    whole.run(DATA_STAGES)
    split_path = write_config(out_dir=tmp_path / "split", name="split.yaml")
    for index in range(2):
        part = make_runner(split_path, shard=(index, 2))
        part.run(DATA_STAGES)
        assert "balance: skipped under --shard" in part.console.export_text()
    assert not (tmp_path / "split" / "manifest.parquet").exists()
    make_runner(split_path).run(DATA_STAGES)
    assert (tmp_path / "split" / "manifest.parquet").read_bytes() == (tmp_path / "whole" / "manifest.parquet").read_bytes()


def test_samples_do_not_depend_on_shard_size(write_config, tmp_path):
    a = make_runner(write_config(out_dir=tmp_path / "a", name="a.yaml"))
    b = make_runner(write_config(out_dir=tmp_path / "b", name="b.yaml", run={"shard_size": 7}))
    for runner in (a, b):
        runner.run(("plan", "reports", "images", "filter"))
    columns = ["id", "split", "planned_entities", "findings", "impression", "report_seed", "image_seed", "filter_contrast_score"]
    assert pq.read_table(a.run_dir / "manifest.parquet", columns=columns).equals(pq.read_table(b.run_dir / "manifest.parquet", columns=columns))


def test_other_config_is_refused_unless_forced(write_config, tmp_path):
    make_runner(write_config()).run(("plan",))
    changed = write_config(name="changed.yaml", run={"seed": 8})
    with pytest.raises(RunFolderError, match=r"different config:\n  run.name|run.seed: 7 -> 8"):
        make_runner(changed)
    forced = make_runner(changed, force=True)
    forced.run(("plan",))
    assert "plan unit-000000: its settings changed; redoing it" in forced.console.export_text()


def test_unwritable_run_folder_is_named(write_config, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RunFolderError, match="run folder is not writable"):
        make_runner(write_config(out_dir=blocker / "run"))


def test_missing_upstream_stage_is_explained(write_config):
    with pytest.raises(UserError, match="reports needs .*part-000000.parquet.*run the earlier stages first"):
        make_runner(write_config()).run(("reports",))
    with pytest.raises(UserError, match="unknown stage"):
        make_runner(write_config()).run(("plan", "paint"))


def test_disk_full_mid_stage_keeps_finished_units(write_config, monkeypatch):
    runner = make_runner(write_config())
    runner.run(("plan", "reports"))
    real_fsync, calls = os.fsync, {"n": 0}

    def fsync_until_full(fd):
        calls["n"] += 1
        if calls["n"] > 4:  # unit 0 writes shard, warnings, part; the ledger record; then the disk fills
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_until_full)
    with pytest.raises(UserError, match="no space left on device"):
        runner.run(("images",))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert runner.ledger.is_recorded("images", "unit-000000")
    assert not any(p.name.endswith(".tmp") for p in runner.run_dir.rglob("*"))
    resumed = make_runner(write_config())
    resumed.run(("images",))
    assert "images: resumed, 1 units were already done" in resumed.console.export_text()


def test_deleted_run_folder_parts_are_rebuilt(write_config):
    runner = make_runner(write_config())
    runner.run(("plan", "reports"))
    before = (runner.run_dir / "manifest.parquet").read_bytes()
    shutil.rmtree(runner.run_dir / "parts" / "reports")
    again = make_runner(write_config())
    again.run(("plan", "reports"))
    assert "reports unit-000000: parts/reports/part-000000.parquet is missing" in again.console.export_text()
    assert (runner.run_dir / "manifest.parquet").read_bytes() == before


def test_names_places_and_the_comparison_corpus_do_not_change_fingerprints(tmp_path):
    from synthvlp.runner import STAGE_SECTIONS

    base = Runner(load_config(None, []), tmp_path / "a")
    other = Runner(load_config(None, ["run.name=other", f"run.out_dir={tmp_path / 'b'}", "plan.source_corpus=corpus.csv"]), tmp_path / "b")
    changed = Runner(load_config(None, ["plan.max_findings=3"]), tmp_path / "c")
    for stage in STAGE_SECTIONS:
        assert base.fingerprint(stage) == other.fingerprint(stage)
        assert base.fingerprint(stage) != changed.fingerprint(stage)


def test_a_run_trains_on_other_runs_shards_by_glob_and_scores_their_test_split(write_config, tmp_path):
    """A mixed recipe: no data stages of its own, pretrain.shards globs another run's shards, and evaluate scores
    the benchmarks listed (that run's test split) since it has no test split of its own."""
    source = make_runner(write_config(tmp_path / "source"))
    source.run(DATA_STAGES)
    pattern = str(tmp_path / "source" / "dataset" / "train-*.tar")
    mixed = make_runner(write_config(tmp_path / "mixed", name="mixed.yaml", pretrain={"shards": [pattern]}, evaluate={
        "bootstrap": 10, "benchmarks": [{"name": "shards", "path": str(tmp_path / "source" / "dataset"), "split": "test", "title": "source-test"}]}))
    assert mixed.training_shards() == sorted((tmp_path / "source" / "dataset").glob("train-*.tar"))
    mixed.run(("pretrain", "evaluate"))
    assert (tmp_path / "mixed" / "evaluate" / "source-test" / "zeroshot.csv").exists()
    assert not (tmp_path / "mixed" / "evaluate" / "synthetic-test").exists()
    assert "own test split" in (tmp_path / "mixed" / "evaluate" / "skipped.json").read_text()
    trained_on = json.loads((tmp_path / "mixed" / "pretrain" / "metrics.json").read_text())["training_pairs"]
    source_train = pq.read_table(tmp_path / "source" / "parts" / "balance" / "selection.parquet").to_pylist()
    assert trained_on == {str(tmp_path / "source" / "dataset"): sum(1 for r in source_train if r["shard"] and r["shard"].startswith("train"))}
    assert f"from {tmp_path / 'source' / 'dataset'}" in (tmp_path / "mixed" / "report.md").read_text()


def test_a_shard_pattern_matching_nothing_is_named(write_config, tmp_path):
    runner = make_runner(write_config(pretrain={"shards": [str(tmp_path / "nowhere" / "train-*.tar")]}))
    with pytest.raises(UserError, match="nowhere/train-\\*.tar matches no file"):
        runner.training_shards()


def test_the_stage_registry_holds_every_configurable_stage_in_run_order():
    from synthvlp.config import STAGES
    from synthvlp.stages import REGISTRY, UnitStage

    assert tuple(REGISTRY) == STAGES
    assert all(stage.name == name and stage.sections[-1] in (name, "filter") for name, stage in REGISTRY.items())
    assert [n for n, s in REGISTRY.items() if isinstance(s, UnitStage)] == ["plan", "reports", "images", "filter"]
