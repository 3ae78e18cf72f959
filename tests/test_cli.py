"""The command line as a user meets it: help texts, error messages without tracebacks, exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from synthvlp.cli import app

runner = CliRunner()


@pytest.mark.parametrize("command", [[], ["run"], ["status"], ["config", "show"], ["models"], ["version"]])
def test_every_command_explains_itself(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output
    assert len(result.output.split()) > 15


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
