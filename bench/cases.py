"""The benchmark cases ``bench/runner.py`` runs: each names its sides (ours, then the peer), measures one side in
a fresh process, turns one round's sides into a ratio, and states the target that ratio must meet.

A side's ``measure(side, params, scratch)`` returns ``{"value": float, ...}`` (``value`` in the case's unit, any
other numbers are recorded beside it); ``prepare(params, scratch)`` makes shared inputs once per run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    sides: tuple[str, ...]
    unit: str
    ratio_name: str
    ratio: Callable[[dict[str, dict]], float]
    measure: Callable[[str, dict, Path], dict]
    sizes: dict[str, dict]
    target: float | None = None
    at_most: bool = False  # the ratio must stay at or below the target (a slowdown), not reach it
    prepare: Callable[[dict, Path], None] | None = None
    needs: Callable[[dict], str | None] = field(default=lambda params: None)  # why it cannot run here, or None


def speedup(ours: str, peer: str) -> Callable[[dict[str, dict]], float]:
    """Ratio of rates (higher is faster): ours / peer."""
    return lambda r: r[ours]["value"] / r[peer]["value"]


def time_speedup(ours: str, peer: str) -> Callable[[dict[str, dict]], float]:
    """Ratio of seconds per item: peer / ours (above 1: ours is faster)."""
    return lambda r: r[peer]["value"] / r[ours]["value"]


# ---- pre-training ---------------------------------------------------------------------------------------------
def _pretrain_prepare(params: dict, scratch: Path) -> None:
    from bench_pretrain import extract_for_csv, write_shards

    shards = write_shards(scratch, params["batch"] * params["steps"], 64)
    if params.get("open_clip"):
        extract_for_csv(shards, scratch / "csv")


def _steady(log: Path, batch: int, warmup: int) -> float:
    import csv

    with open(log) as handle:
        seconds = [batch / float(r["samples_per_s"]) for r in csv.DictReader(handle)][warmup:]
    return batch * len(seconds) / sum(seconds)


def competitor(threads: int = 2) -> subprocess.Popen:
    """Another job on the same cores: a NumPy matmul loop with ``threads`` BLAS threads (killed by the caller)."""
    code = "import numpy as np\na = np.random.rand(400, 400)\nwhile True: a @ a"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    return subprocess.Popen([sys.executable, "-c", code], env=env)


def _pretrain_contention(side: str, params: dict, scratch: Path) -> dict:
    """The quickstart's pre-training (synthvlp-tiny, 64 px, the engine's own loop) alone or beside a competitor."""
    import torch

    from synthvlp.config import PretrainSection
    from synthvlp.pretrain.engine import train

    hog = competitor() if side == "contended" else None
    try:
        time.sleep(1.0 if hog else 0.0)
        settings = PretrainSection(
            model="synthvlp-tiny", batch_size=params["batch"], max_steps=params["steps"], warmup_steps=1, threads=params.get("threads"),
            workers=0, checkpoint_every=10**6, tensorboard=False, precision="fp32",
        )
        out = scratch / f"run-{side}-{time.time_ns()}"
        train(settings, sorted(scratch.glob("train-*.tar")), out, seed=0, say=lambda s: None)
        return {"value": _steady(out / "log.csv", params["batch"], params["warmup"]), "torch_threads": torch.get_num_threads()}
    finally:
        if hog:
            hog.kill()
            hog.wait()


THREAD_VARIANTS = {"2 threads, passive": (2, "PASSIVE"), "2 threads, spinning": (2, "ACTIVE"), "1 thread": (1, "PASSIVE")}
"""The thread settings ``pretrain-threads`` compares beside a competitor: the policy's default first."""


def _pretrain_threads(side: str, params: dict, scratch: Path) -> dict:
    """One thread setting of the quickstart's pre-training beside a 2-thread competitor; the wait policy is set
    before torch loads OpenMP (this process has not imported torch yet)."""
    threads, policy = THREAD_VARIANTS[side]
    os.environ["OMP_WAIT_POLICY"] = policy
    return _pretrain_contention("contended", {**params, "threads": threads}, scratch)


def _pretrain_vs_open_clip(side: str, params: dict, scratch: Path) -> dict:
    from bench_pretrain import run_open_clip, run_ours

    from synthvlp.threads import budget

    args = argparse.Namespace(model="synthvlp-tiny", batch=params["batch"], steps=params["steps"], warmup=params["warmup"], threads=params.get("threads") or budget())
    shards = sorted(scratch.glob("train-*.tar"))
    folder = scratch / f"{side}-{time.time_ns()}"
    folder.mkdir()
    if side == "ours":
        result = run_ours(args, shards, folder, params["workers"])
    else:
        (folder / "csv").symlink_to(scratch / "csv")
        result = run_open_clip(args, shards, folder, params["workers"], extract=False)
    return {"value": result["samples_s"], "peak_rss_mib": result["rss"], "threads": args.threads}


def _open_clip_missing(params: dict) -> str | None:
    try:
        import open_clip_train  # noqa: F401
    except ImportError:
        return "open_clip_train is not installed"
    return None


# ---- rendering --------------------------------------------------------------------------------------------------
def _render(side: str, params: dict, scratch: Path) -> dict:
    from bench_render import worker

    from synthvlp.threads import apply

    apply("small")  # as the images stage does for the phantom backend
    result = worker(side, params["size"], params["images"], None, 0)
    return {"value": result["images_per_s"], "peak_rss_mib": result["peak_mb"]}


# ---- RaSD --------------------------------------------------------------------------------------------------------
RASD_PEERS = {"peer_python": "/work/peer-venvs/rasd/bin/python", "peer_root": "/work/peers/RaSD"}
"""Where bench/bench_rasd.py's set-up puts the peers (a venv with torchio + SimpleITK, the reference checkout)."""

def _rasd_missing(params: dict) -> str | None:
    python, root = params.get("peer_python"), params.get("peer_root")
    if not python or not Path(python).exists():
        return f"peer interpreter {python!r} is missing (see bench/bench_rasd.py)"
    if params["peer"] == "reference" and (not root or not Path(root).is_dir()):
        return f"reference checkout {root!r} is missing"
    return None


def _rasd(step: str) -> Callable[[str, dict, Path], dict]:
    def measure(side: str, params: dict, scratch: Path) -> dict:
        from bench_rasd import spawn

        from synthvlp.threads import plan

        threads = params.get("threads") or plan("compute").intra
        label_file = scratch / "labels.pt"  # ours writes the label map the peers' appearance chains start from
        ns = argparse.Namespace(threads=threads, peer_root=params.get("peer_root") or "")
        if side == "ours" or not label_file.exists():
            result = spawn(sys.executable, "ours", params["case"], params["repeats"], ns, str(label_file))
        if side != "ours":
            result = spawn(params["peer_python"], side, params["case"], params["repeats"], ns, str(label_file))
        return {"value": result[step], "threads": threads, "peak_rss_mib": result.get("peak_mib")}

    return measure


# ---- report writing ----------------------------------------------------------------------------------------------
def _reports(side: str, params: dict, scratch: Path) -> dict:
    from bench_reports import measure

    result = measure(samples=params["samples"], concurrency=params["concurrency"], max_batch=params["max_batch"], max_tokens=params["max_tokens"], folder=scratch)
    return {"value": result["best_per_s"], "ceiling": result["ceiling"], "best_concurrency": result["best_concurrency"], "rows": result["rows"]}


# ---- filters -----------------------------------------------------------------------------------------------------
def _filters_prepare(params: dict, scratch: Path) -> None:
    from bench_filters import phantom_pngs

    (scratch / "pngs.json").write_text(json.dumps([p.hex() for p in phantom_pngs(params["images"], params["size"])]))


def _filters(what: str) -> Callable[[str, dict, Path], dict]:
    def measure(side: str, params: dict, scratch: Path) -> dict:
        from bench_filters import decode_and_check, duplicates_brute, duplicates_ours, per_image_checks

        from synthvlp.threads import apply

        apply("small")  # as the filter stage does
        pngs = [bytes.fromhex(h) for h in json.loads((scratch / "pngs.json").read_text())]
        jobs = {
            ("checks", "ours"): lambda: decode_and_check(pngs, params["size"]),
            ("checks", "per-image loop"): lambda: per_image_checks(pngs, params["size"]),
            ("dedupe", "ours"): lambda: duplicates_ours(pngs, params["size"]),
            ("dedupe", "pairwise loop"): lambda: duplicates_brute(pngs, params["size"]),
        }
        seconds = jobs[what, side]()
        return {"value": len(pngs) / seconds}

    return measure


CASES: dict[str, Case] = {
    c.name: c
    for c in [
        Case(
            "pretrain-contention", "quickstart pre-training (synthvlp-tiny, 64 px, batch 64) alone vs beside a 2-thread NumPy job",
            ("contended", "alone"), "samples/s", "alone / contended (slowdown)", lambda r: r["alone"]["value"] / r["contended"]["value"],
            _pretrain_contention, {"smoke": {"batch": 8, "steps": 3, "warmup": 1}, "full": {"batch": 64, "steps": 12, "warmup": 3}},
            target=2.0, at_most=True, prepare=_pretrain_prepare,
        ),
        Case(
            "pretrain-threads", "quickstart pre-training beside a 2-thread NumPy job: the policy's default vs the old spinning 2 threads and 1 thread",
            tuple(THREAD_VARIANTS), "samples/s", "default / best other setting",
            lambda r: r["2 threads, passive"]["value"] / max(r["2 threads, spinning"]["value"], r["1 thread"]["value"]),
            _pretrain_threads, {"smoke": {"batch": 8, "steps": 3, "warmup": 1}, "full": {"batch": 64, "steps": 12, "warmup": 3}},
            target=1.0, prepare=_pretrain_prepare,
        ),
        Case(
            "pretrain-vs-open-clip", "synthvlp pretrain vs open_clip_train.main, same model (synthvlp-tiny), shards, batch 64, fp32",
            ("ours", "open_clip_train"), "samples/s", "ours / open_clip_train", speedup("ours", "open_clip_train"),
            _pretrain_vs_open_clip, {"smoke": {"batch": 8, "steps": 4, "warmup": 1, "workers": 0, "open_clip": True},
                                     "full": {"batch": 64, "steps": 12, "warmup": 3, "workers": 1, "open_clip": True}},
            target=0.95, prepare=_pretrain_prepare, needs=_open_clip_missing,
        ),
        Case(
            "phantom-render", "phantom renderer vs the walking skeleton's procedural renderer, same plans, 1 image at a time",
            ("phantom", "procedural"), "images/s", "phantom / procedural", speedup("phantom", "procedural"),
            _render, {"smoke": {"size": 64, "images": 3}, "full": {"size": 256, "images": 40}},
        ),
        Case(
            "filters-checks", "PNG decode + all image checks, batched (ours) vs a per-image loop (PIL decode + numpy)",
            ("ours", "per-image loop"), "images/s", "ours / per-image loop", speedup("ours", "per-image loop"),
            _filters("checks"), {"smoke": {"images": 16, "size": 64}, "full": {"images": 1024, "size": 256}},
            target=1.0, prepare=_filters_prepare,
        ),
        Case(
            "filters-dedupe", "near-duplicate search over signatures (ours) vs a pairwise Python loop, same images",
            ("ours", "pairwise loop"), "images/s", "ours / pairwise loop", speedup("ours", "pairwise loop"),
            _filters("dedupe"), {"smoke": {"images": 16, "size": 64}, "full": {"images": 2400, "size": 64}},
            target=10.0, prepare=_filters_prepare,
        ),
        Case(
            "reports-ceiling", "openai client through the reports stage vs the built-in server's own ceiling (tiny random Llama)",
            ("client",), "reports/s", "client / server ceiling", lambda r: r["client"]["value"] / r["client"]["ceiling"],
            _reports, {"smoke": {"samples": 8, "concurrency": [8], "max_batch": 4, "max_tokens": 4},
                       "full": {"samples": 384, "concurrency": [16, 64], "max_batch": 16, "max_tokens": 16}},
            target=0.9,
        ),
    ]
}

for _dims, _size in (("2d", "512^2"), ("3d", "128^3")):
    for _step, _peer, _target in (("whole", "reference", 3.0), ("appearance", "torchio", 5.0)):
        _name = f"rasd-{_dims}-{_step}"
        CASES[_name] = Case(
            _name, f"RaSD {_dims} {_size}, {_step} sample, batch 1: ours vs {_peer} (seconds per sample)",
            ("ours", _peer), "s/sample", f"{_peer} / ours (speed-up)", time_speedup("ours", _peer), _rasd(_step),
            {size: {"case": _dims, "repeats": repeats, "peer": _peer, **RASD_PEERS} for size, repeats in (("smoke", 1), ("full", 3))},
            target=_target, needs=_rasd_missing,
        )
