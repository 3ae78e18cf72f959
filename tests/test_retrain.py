"""Retraining a finished run with a standalone `synthvlp pretrain` (docs/pretrain.md): the new model is recorded
like any stage, the old evaluation shows as stale, and the next run evaluates the new model instead of calling
its checkpoint corrupt and training the old one back."""

from __future__ import annotations

import json

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from synthvlp.cli import app
from synthvlp.config import load_config
from synthvlp.errors import RunFolderError
from synthvlp.runfolder import prepare_run_folder
from synthvlp.runner import Runner
from synthvlp.store import file_digest

from pretrain_helpers import make_shards

cli = CliRunner()


def test_pretrain_command_writes_a_ledger_record_and_resumes_from_it(tmp_path):
    """The fast half: `synthvlp pretrain` on shards of its own is the run's pretrain stage, recorded in the ledger."""
    shards = make_shards(tmp_path / "data", n_shards=1, per_shard=16)
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump({
        "run": {"out_dir": str(tmp_path / "run")},
        "pretrain": {"shards": [str(s) for s in shards], "epochs": 1, "batch_size": 8, "warmup_steps": 1, "threads": 1, "tensorboard": False},
    }))
    first = cli.invoke(app, ["pretrain", str(path)])
    assert first.exit_code == 0, first.output
    record = json.loads((tmp_path / "run" / ".state" / "pretrain" / "global.json").read_text())
    assert "pretrain/checkpoint.pt" in record["outputs"] and str(shards[0].resolve()) in record["inputs"]
    again = cli.invoke(app, ["pretrain", str(path)], terminal_width=200)
    assert again.exit_code == 0 and "pretrain: already done" in again.output
    refused = cli.invoke(app, ["pretrain", str(path), "pretrain.lr=0.01"])
    assert isinstance(refused.exception, RunFolderError)
    forced = cli.invoke(app, ["pretrain", str(path), "pretrain.lr=0.01", "pretrain.warmup_steps=5", "--force"], terminal_width=200)
    assert forced.exit_code == 0 and "its settings changed; redoing it" in forced.output
    assert "warmup_steps (5) is not below the run's 2 steps" in forced.output
    assert json.loads((tmp_path / "run" / ".state" / "pretrain" / "global.json").read_text())["fingerprint"] != record["fingerprint"]


def _status(run_dir) -> dict[str, str]:
    result = cli.invoke(app, ["status", str(run_dir)], terminal_width=200)
    assert result.exit_code == 0, result.output
    return {line.split()[1]: line for line in result.output.splitlines() if line.startswith("│")}


@pytest.mark.slow
def test_standalone_pretrain_is_recorded_and_makes_evaluate_stale(write_config, tmp_path):
    path = write_config(run={"n_samples": 40, "shard_size": 20}, evaluate={"bootstrap": 0, "grounding": False})
    config = load_config(path)
    Runner(config, prepare_run_folder(config), console=Console(record=True, width=200)).run()
    run_dir = tmp_path / "run"
    checkpoint = run_dir / "pretrain" / "checkpoint.pt"
    clip_digest = file_digest(checkpoint)

    refused = cli.invoke(app, ["pretrain", str(path), "pretrain.objective=gloria"])
    assert isinstance(refused.exception, RunFolderError) and "pretrain.objective: 'clip' -> 'gloria'" in str(refused.exception)
    assert file_digest(checkpoint) == clip_digest  # nothing was trained or overwritten

    retrained = cli.invoke(app, ["pretrain", str(path), "pretrain.objective=gloria", "--force"])
    assert retrained.exit_code == 0, retrained.output
    gloria_digest = file_digest(checkpoint)
    assert gloria_digest != clip_digest
    states = _status(run_dir)
    assert "done" in states["pretrain"] and "stale" in states["evaluate"] and "settings changed" in states["evaluate"]
    assert "Stale" in (run_dir / "report.md").read_text()

    gloria = load_config(path, ["pretrain.objective=gloria"])
    console = Console(record=True, width=200)
    Runner(gloria, prepare_run_folder(gloria), console=console).run(["pretrain", "evaluate"])
    said = console.export_text()
    assert "pretrain: already done" in said and "corrupt" not in said and "evaluate: its settings changed; redoing it" in said
    assert file_digest(checkpoint) == gloria_digest
    assert "stale" not in _status(run_dir)["evaluate"]
    assert "Stale" not in (run_dir / "report.md").read_text()

    # the recorded config is now the GLoRIA one: running the old config again is a visible choice, not a silent revert
    try:
        prepare_run_folder(config)
    except RunFolderError as exc:
        assert "pretrain.objective: 'gloria' -> 'clip'" in str(exc)
    else:
        raise AssertionError("the run folder accepted the old config without --force")
