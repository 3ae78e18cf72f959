"""The run folder as a team shares it: one run at a time (shards side by side), names that stay inside it, files
others can read, a source checkout left untouched, and a status that says when a stage's settings changed."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from synthvlp.cli import app
from synthvlp.config import load_config
from synthvlp.errors import ConfigError, RunFolderError
from synthvlp.runfolder import git_revision, prepare_run_folder, run_folder_lock
from synthvlp.store import atomic_open

HOLDER = f"pid {os.getpid()} on host {socket.gethostname()}"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "synthvlp.cli", *args], capture_output=True, text=True)


# ---- the lock --------------------------------------------------------------------------------------------------


def test_a_second_run_is_refused_naming_the_holder(tmp_path):
    with run_folder_lock(tmp_path / "run"):
        with pytest.raises(RunFolderError, match=f"in use by synthvlp run {HOLDER}, unsharded, since"):
            with run_folder_lock(tmp_path / "run"):
                pass
        with pytest.raises(RunFolderError, match=HOLDER):
            with run_folder_lock(tmp_path / "run", (0, 2)):
                pass
    with run_folder_lock(tmp_path / "run"):  # released on exit
        pass
    assert not list((tmp_path / "run" / ".locks").glob("holder-*.json"))


def test_shards_run_side_by_side_but_never_the_same_shard_twice(tmp_path):
    with run_folder_lock(tmp_path, (0, 2)), run_folder_lock(tmp_path, (1, 2)):
        with pytest.raises(RunFolderError, match=f"{HOLDER}, shard 0/2"):
            with run_folder_lock(tmp_path, (0, 2)):
                pass
        with pytest.raises(RunFolderError, match="shard 0/2.*shard 1/2"):
            with run_folder_lock(tmp_path):
                pass


def test_the_command_line_refuses_a_folder_in_use_and_shards_share_it(write_config, tmp_path):
    config = write_config(out_dir=tmp_path / "run")
    with run_folder_lock(tmp_path / "run"):
        refused = _cli("run", str(config), "--stages", "plan")
    assert refused.returncode == 2 and f"in use by synthvlp run {HOLDER}" in refused.stderr
    assert not (tmp_path / "run" / "config.yaml").exists(), "the refused run wrote nothing"
    with run_folder_lock(tmp_path / "run", (0, 2)):
        beside = _cli("run", str(config), "--stages", "plan", "--shard", "1/2")
    assert beside.returncode == 0, beside.stderr


def test_synthvlp_pretrain_by_hand_is_refused_beside_a_run(write_config, tmp_path):
    config = write_config(out_dir=tmp_path / "run")
    with run_folder_lock(tmp_path / "run"):
        refused = _cli("pretrain", str(config))
    assert refused.returncode == 2 and f"in use by synthvlp run {HOLDER}" in refused.stderr


def test_a_killed_holder_leaves_no_lock_behind(tmp_path):
    script = "import sys, time\nfrom synthvlp.runfolder import run_folder_lock\nwith run_folder_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n"
    holder = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderError, match=f"pid {holder.pid} on host"):
            with run_folder_lock(tmp_path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with run_folder_lock(tmp_path):  # the kernel dropped the dead holder's lock
        assert [p.name for p in (tmp_path / ".locks").glob("holder-*.json")] == [f"holder-{socket.gethostname()}-{os.getpid()}-0-of-1.json"]


# ---- names from configs and tables ------------------------------------------------------------------------------


@pytest.mark.parametrize("title", ["../../x", "a/b", ".hidden", "..", " padded"])
def test_benchmark_titles_cannot_leave_the_evaluate_folder(title):
    with pytest.raises(ConfigError, match="must be a plain name"):
        load_config(None, [f'evaluate.benchmarks=[{{name: nih, path: x, title: "{title}"}}]'])


def test_benchmark_titles_are_distinct():
    with pytest.raises(ConfigError, match="used twice"):
        load_config(None, ["evaluate.benchmarks=[{name: nih, path: x}, {name: nih, path: y}]"])
    with pytest.raises(ConfigError, match="clash with 'synthetic-test'"):
        load_config(None, ["evaluate.benchmarks=[{name: nih, path: x, title: synthetic-test}]"])


# ---- permissions -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_get_the_permissions_the_umask_gives(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        with atomic_open(tmp_path / "out.bin") as handle:
            handle.write(b"x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "out.bin").stat().st_mode) == mode


def test_a_run_folder_is_readable_by_the_team(write_config, tmp_path):
    previous = os.umask(0o002)
    try:
        assert _cli("run", str(write_config(out_dir=tmp_path / "run")), "--stages", "plan").returncode == 0
    finally:
        os.umask(previous)
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert len(files) > 5
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {oct(0o664)}


# ---- the source checkout ----------------------------------------------------------------------------------------


def test_provenance_reads_git_without_writing_to_the_checkout(tmp_path):
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tmp_path), *args], capture_output=True, text=True, check=True).stdout

    git("init", "-q")
    (tmp_path / "a.txt").write_text("a\n")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    index = tmp_path / ".git" / "index"
    before = index.read_bytes()
    past = time.time() - 1000
    os.utime(index, (past, past))
    os.utime(tmp_path / "a.txt", None)  # newer than the index: a plain `git status` would refresh and rewrite it
    assert git_revision(tmp_path) == git("rev-parse", "HEAD").strip()
    assert index.read_bytes() == before and index.stat().st_mtime == pytest.approx(past)
    (tmp_path / "a.txt").write_text("b\n")
    assert git_revision(tmp_path).endswith("-dirty")
    assert not (tmp_path / ".git" / "index.lock").exists()


# ---- status ----------------------------------------------------------------------------------------------------


def test_status_reports_a_stage_whose_settings_changed_as_stale(write_config, tmp_path):
    config = write_config(out_dir=tmp_path / "run")
    assert _cli("run", str(config), "--stages", "plan").returncode == 0

    def states() -> dict[str, str]:
        result = CliRunner().invoke(app, ["status", str(tmp_path / "run")])
        assert result.exit_code == 0, result.output
        return {line.split()[1]: line.split()[3] for line in result.output.splitlines() if line.startswith("│")}

    assert states()["plan"] == "done"
    prepare_run_folder(load_config(config, ["run.name=renamed"]))  # a setting no output depends on
    assert states()["plan"] == "done"
    prepare_run_folder(load_config(config, ["plan.max_findings=1"]), force=True)  # --force, then stopped before plan
    assert states()["plan"] == "stale" and states()["reports"] == "todo"
