"""SIGKILL a real `synthvlp run` at several points; the resumed run must end byte-identical to an uninterrupted one."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

DATA_STAGES = "plan,reports,images,filter,balance"


def _command(config: Path) -> list[str]:
    return [sys.executable, "-m", "synthvlp.cli", "run", str(config), "--stages", DATA_STAGES]


def _records(run_dir: Path) -> int:
    return sum(1 for _ in (run_dir / ".state").rglob("*.json")) if (run_dir / ".state").exists() else 0


def _run_until(config: Path, run_dir: Path, records: int, timeout: float = 120.0) -> bool:
    """Start a run and SIGKILL it once ``records`` ledger records exist; False if it finished first."""
    process = subprocess.Popen(_command(config), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if _records(run_dir) >= records:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.002)
    process.wait()
    assert process.returncode == 0, process.stderr.read().decode()
    return False


def test_killed_runs_resume_to_identical_manifest(write_config, tmp_path):
    settings = {"run": {"n_samples": 240, "shard_size": 20}, "images": {"size": 64}}
    reference = write_config(out_dir=tmp_path / "reference", name="reference.yaml", **settings)
    subprocess.run(_command(reference), check=True, capture_output=True)

    killed = write_config(out_dir=tmp_path / "killed", name="killed.yaml", **settings)
    run_dir = tmp_path / "killed"
    kills = 0
    for threshold in (1, 5, 13, 14, 26, 30, 41, 48):  # 12 units x 4 stages + balance = 49 records
        if _run_until(killed, run_dir, threshold):
            kills += 1
    assert kills >= 4, "the run finished before most kill points; the test no longer kills mid-run"
    finished = subprocess.run(_command(killed), capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert (run_dir / "manifest.parquet").read_bytes() == (tmp_path / "reference" / "manifest.parquet").read_bytes()
    for shard in sorted((tmp_path / "reference" / "dataset").iterdir()):
        assert (run_dir / "dataset" / shard.name).read_bytes() == shard.read_bytes()
    assert not any(p.name.endswith(".tmp") for p in run_dir.rglob("*"))
