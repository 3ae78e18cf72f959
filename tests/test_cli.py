"""The command line as a user meets it: help texts, error messages without tracebacks, exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from synthvlp.cli import app

runner = CliRunner()


COMMANDS = [[], ["run"], ["status"], ["config", "show"], ["models"], ["version"], ["pretrain"], ["pretrain", "rasd"], ["evaluate"],
            ["finetune"], ["compare"], ["serve"], ["export"], ["entities", "extract"], ["entities", "stats"], ["filter", "real"], ["render", "preview"]]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_explains_itself(command, flag):
    result = runner.invoke(app, [*command, flag], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert len(result.output.split()) > 15


def test_help_texts_keep_their_brackets_and_name_what_they_do():
    assert "RASD_CONFIG [overrides]" in runner.invoke(app, ["pretrain", "-h"], terminal_width=200).output
    assert "grounding" in runner.invoke(app, ["evaluate", "-h"], terminal_width=200).output
    rasd = runner.invoke(app, ["pretrain", "rasd", "-h"], terminal_width=200).output
    assert "Usage: root pretrain rasd" in rasd or "pretrain rasd [OPTIONS]" in rasd


def test_entities_extract_prints_json_lines_and_writes_tables(tmp_path):
    import json

    result = runner.invoke(app, ["entities", "extract", "Small left pleural effusion. No pneumothorax."])
    assert result.exit_code == 0, result.output
    [line] = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [(e["canonical"], e["assertion"], e["laterality"]) for e in line["entities"]] == [("pleural effusion", "present", "left"), ("pneumothorax", "absent", None)]
    corpus = tmp_path / "reports.csv"
    corpus.write_text("id,text\na,Right pacemaker.\nb,Heart size is normal.\n")
    table = runner.invoke(app, ["entities", "extract", "--corpus", str(corpus), "--out", str(tmp_path / "m.csv")])
    assert table.exit_code == 0, table.output
    assert "pacemaker" in (tmp_path / "m.csv").read_text() and "right" in (tmp_path / "m.csv").read_text()
    both = runner.invoke(app, ["entities", "extract", "x", "--corpus", str(corpus)])
    assert "one of the two" in str(both.exception)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "synthvlp.cli", *args], capture_output=True, text=True)


def test_user_error_prints_one_message_and_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run:\n  n_samples: -3\n")
    result = _cli("run", str(bad))
    assert result.returncode == 2
    assert "run.n_samples = -3" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_shard_and_stage_arguments(write_config):
    config = write_config()
    assert "expected i/n" in _cli("run", str(config), "--shard", "3/2").stderr
    result = _cli("run", str(config), "--stages", "plan,paint")
    assert result.returncode == 2 and "unknown stage(s) ['paint']" in result.stderr


def test_config_show_resolves_overrides(write_config):
    result = runner.invoke(app, ["config", "show", str(write_config()), "run.seed=11"])
    assert result.exit_code == 0
    assert "seed: 11" in result.output and "shard_size: 20" in result.output


def test_status_reports_partial_runs(write_config, tmp_path):
    config = write_config()
    assert _cli("run", str(config), "--stages", "plan", "--shard", "0/2").returncode == 0
    result = runner.invoke(app, ["status", str(tmp_path / "run")])
    assert result.exit_code == 0
    lines = {line.split()[1]: line for line in result.output.splitlines() if line.startswith("│")}
    assert "partial" in lines["plan"] and "2/3" in lines["plan"] and "40/60" in lines["plan"]
    assert "todo" in lines["images"]


def test_models_lists_our_tiny_config():
    result = runner.invoke(app, ["models"])
    assert "synthvlp-tiny  (synthvlp)" in result.output
