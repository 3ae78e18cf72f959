"""The benchmark runner at its smallest sizes (the CI smoke run): interleaved sides in fresh processes, the
evidence it records, its exit status on a missed target, and BENCHMARKS.md generated from its JSON files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

import tables  # noqa: E402


def test_runner_interleaves_records_and_fails_a_missed_target(tmp_path):
    out = tmp_path / "results"
    command = [sys.executable, "bench/runner.py", "filters-checks", "--size", "smoke", "--rounds", "2", "--out", str(out), "-p", "target=1e9"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "missed target: filters-checks" in done.stdout
    (path,) = out.glob("filters-checks--*.json")
    record = json.loads(path.read_text())
    assert [list(r["sides"]) for r in record["rounds"]] == [["ours", "per-image loop"]] * 2
    for measured in record["rounds"]:
        ours, peer = measured["sides"]["ours"], measured["sides"]["per-image loop"]
        assert ours["value"] > 0 and peer["value"] > 0
        assert measured["ratio"] == ours["value"] / peer["value"]
        assert {"load_before", "load_after", "wall_s"} <= set(ours)
    summary = record["summary"]
    assert summary["met"] is False and summary["target"] == 1e9
    assert min(summary["ratios"]) == summary["ratio_min"] <= summary["ratio_median"] <= summary["ratio_max"]
    machine = record["machine"]
    assert machine["git"]["revision"] and machine["packages"]["numpy"] and machine["threads_small"] == 1
    assert machine["threads_compute"] >= 1 and len(machine["load_avg"]) == 3

    document = tmp_path / "BENCHMARKS.md"
    document.write_text(f"# Benchmarks\n\n{tables.START}\nstale\n{tables.END}\n\nprose stays\n")
    assert tables.main(["--results", str(out), "--doc", str(document), "--check"]) == 1
    assert tables.main(["--results", str(out), "--doc", str(document)]) == 0
    text = document.read_text()
    assert "stale" not in text and "prose stays" in text and f"`{path.name}`" in text and "**missed**" in text
    assert tables.main(["--results", str(out), "--doc", str(document), "--check"]) == 0


def test_benchmarks_md_says_what_the_committed_results_say():
    assert tables.main(["--check"]) == 0
