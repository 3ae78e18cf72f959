"""Run benchmark cases against their peers, interleaved round by round, and keep the evidence as JSON.

Each round runs every side of a case once, in order (ours, peer, ours, peer, ...), each in a fresh process, so
both see the same machine at nearly the same moment; a round's ratio compares its own two sides. A run records
the 1-minute load before and after every measurement, the thread settings, versions and the git revision, and
writes one JSON file per case to ``--out``; ``bench/tables.py`` turns the newest of them into BENCHMARKS.md's
tables. The exit status is 1 when a case's median ratio misses its target (``--no-check``: always 0).

    python bench/runner.py                                  # every case whose peers are installed, full sizes
    python bench/runner.py phantom-render filters-checks --rounds 5
    python bench/runner.py pretrain-contention -p threads=1 --label "1 thread"
    python bench/runner.py --size smoke --rounds 1 --no-check --out /tmp/bench   # seconds: the CI smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from cases import BENCH, CASES, REPO, Case

sys.path.insert(0, str(REPO))
import synthvlp  # noqa: E402,F401 - sets the thread environment (synthvlp.threads) that every side inherits
from synthvlp.threads import available_cpus, cgroup_cpus, plan  # noqa: E402

RESULTS = BENCH / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="*", help=f"Cases to run (default: all): {', '.join(CASES)}")
    parser.add_argument("--size", choices=["smoke", "full"], default="full")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                        help="Override a case parameter (JSON value or text), e.g. threads=1, or its target.")
    parser.add_argument("--label", default="", help="Name this variant (e.g. '1 thread'); tables keep the newest run per case and label.")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-check", dest="check", action="store_false", help="Exit 0 even when a ratio misses its target.")
    parser.add_argument("--side", nargs=2, metavar=("CASE", "SIDE"), help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        result = CASES[args.side[0]].measure(args.side[1], json.loads(args.params), args.scratch)
        print("RESULT " + json.dumps(result))
        return 0
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; cases are {', '.join(CASES)}")
    overrides = dict(_param(p) for p in args.param)
    missed = []
    for name in args.cases or list(CASES):
        case = CASES[name]
        params = {**case.sizes[args.size], **overrides}
        why = case.needs(params)
        if why:
            print(f"{name}: skipped, {why}")
            continue
        record = run_case(case, params, args.size, args.rounds, args.label)
        path = write_record(record, args.out)
        summary = record["summary"]
        verdict = {True: "met", False: "MISSED", None: "no target"}[summary["met"]]
        print(f"{name}: {case.ratio_name} median {summary['ratio_median']:.3g} (rounds {', '.join(f'{r:.3g}' for r in summary['ratios'])}); "
              f"target {_target_text(summary)}: {verdict}; {path}")
        if summary["met"] is False:
            missed.append(name)
    if missed and args.check:
        print(f"missed target: {', '.join(missed)}")
        return 1
    return 0


def _param(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _target_text(summary: dict) -> str:
    if summary["target"] is None:
        return "none"
    return f"{'<=' if summary['at_most'] else '>='} {summary['target']:g}"


def run_case(case: Case, params: dict, size: str, rounds: int, label: str = "") -> dict:
    """Measure every side of ``case`` ``rounds`` times, interleaved, and summarise the ratios."""
    began = datetime.now(timezone.utc)
    with tempfile.TemporaryDirectory(prefix=f"bench-{case.name}-") as tmp:
        scratch = Path(tmp)
        if case.prepare:
            case.prepare(params, scratch)
        measured = []
        for index in range(rounds):
            sides = {}
            for side in case.sides:
                sides[side] = _measure_side(case, side, params, scratch)
            measured.append({"round": index, "sides": sides, "ratio": case.ratio(sides)})
    ratios = [r["ratio"] for r in measured]
    median = statistics.median(ratios)
    target = params.get("target", case.target)
    met = None if target is None else (median <= target if case.at_most else median >= target)
    return {
        "case": case.name, "label": label, "what": case.what, "size": size, "params": params, "rounds": measured,
        "summary": {
            "ratio_name": case.ratio_name, "ratios": ratios, "ratio_median": median, "ratio_min": min(ratios), "ratio_max": max(ratios),
            "target": target, "at_most": case.at_most, "met": met, "unit": case.unit,
            "side_medians": {side: statistics.median(r["sides"][side]["value"] for r in measured) for side in case.sides},
            "load_range": [min(s["load_before"] for r in measured for s in r["sides"].values()), max(s["load_after"] for r in measured for s in r["sides"].values())],
        },
        "machine": machine(), "started": began.isoformat(timespec="seconds"), "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def _measure_side(case: Case, side: str, params: dict, scratch: Path) -> dict:
    load_before = os.getloadavg()[0]
    command = [sys.executable, str(Path(__file__)), "--side", case.name, side, "--params", json.dumps(params), "--scratch", str(scratch)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": _pythonpath()})
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"{case.name} / {side} failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    result = json.loads(lines[-1][len("RESULT ") :])
    return {**result, "wall_s": time.perf_counter() - started, "load_before": load_before, "load_after": os.getloadavg()[0]}


def _pythonpath() -> str:
    """This checkout first, so sides measure the code beside the runner, not an installed copy."""
    return os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)


def machine() -> dict:
    """Where and with what the run happened: CPUs, thread policy, load, versions, git revision."""
    packages = {}
    for name in ("synthvlp", "torch", "numpy", "open_clip_torch", "pillow", "threadpoolctl"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {
        "cpus_online": os.cpu_count(), "cpus_available": available_cpus(), "cgroup_cpus": cgroup_cpus(),
        "threads_compute": plan("compute").intra, "threads_small": plan("small").intra,
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
        "nice": os.nice(0), "load_avg": os.getloadavg(), "python": platform.python_version(), "platform": platform.platform(),
        "packages": packages, "git": _git(),
    }


def _git() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO).stdout.strip()

    return {"revision": git("rev-parse", "--short", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def write_record(record: dict, folder: Path) -> Path:
    """``folder/<case>[--label]--<UTC time>.json``, written whole or not at all."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = record["started"].replace(":", "").replace("+0000", "Z")
    label = "--" + re.sub(r"[^A-Za-z0-9]+", "-", record["label"]).strip("-") if record["label"] else ""
    path = folder / f"{record['case']}{label}--{stamp}.json"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(record, indent=1) + "\n")
    temporary.replace(path)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
