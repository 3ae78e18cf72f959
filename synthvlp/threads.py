"""The one place that decides how many threads each kind of work gets (torch, OpenMP/MKL, NumPy's BLAS).

Why it exists: on 2 shared cores, torch's pools at 2 threads made steps several times slower whenever another job
ran (RaSD's 2D appearance 18x slower than at 1 thread; the quickstart's pre-training at a quarter of the
throughput it gets with sleeping threads), because every parallel region waits for its slowest thread and idle
OpenMP threads spin instead of sleeping (BENCHMARKS.md, "Threads"). So:

- ``prepare_environment`` (run when ``synthvlp`` is imported, before torch or NumPy load their runtimes) makes
  idle OpenMP threads sleep (``OMP_WAIT_POLICY=PASSIVE``) unless the user chose a policy;
- ``budget`` is what this process may use: the CPUs in its affinity mask, capped by the cgroup's CPU quota
  (containers, Slurm) and by a user's ``OMP_NUM_THREADS``, shared among torchrun's local processes;
- ``apply(kind)`` sets every pool for one kind of work: ``"compute"`` (training, evaluation, RaSD synthesis,
  diffusion: large tensor ops) gets the budget or an explicit ``threads`` setting; ``"small"`` (phantom
  rendering, image checks, decoding in DataLoader workers: many small array ops) gets 1 thread, because a pool
  costs more than it returns on operations of microseconds and only adds waiting on busy cores.

PIL decodes on the calling thread and has no pool to set; decoding runs in parallel through DataLoader workers,
each of which ``worker_init`` holds to 1 thread, so workers plus the main process do not oversubscribe the cores.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Kind = Literal["compute", "small"]

CGROUP_ROOT = Path("/sys/fs/cgroup")


def prepare_environment(environ: os._Environ | dict = os.environ) -> None:
    """Let idle OpenMP threads sleep instead of spinning (read once, when libgomp loads with torch); a user's own
    ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is left alone."""
    if "OMP_WAIT_POLICY" not in environ and "GOMP_SPINCOUNT" not in environ:
        environ["OMP_WAIT_POLICY"] = "PASSIVE"


def cgroup_cpus(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs the cgroup's quota allows (cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), None when unlimited."""
    for own in _own_cgroup_dirs(root):
        text = _read(own / "cpu.max")
        if text:
            quota, _, period = text.partition(" ")
            if quota != "max" and period:
                return int(quota) / int(period)
            return None
    quota, period = _read(root / "cpu" / "cpu.cfs_quota_us"), _read(root / "cpu" / "cpu.cfs_period_us")
    if quota and period and int(quota) > 0:
        return int(quota) / int(period)
    return None


def _own_cgroup_dirs(root: Path) -> list[Path]:
    """This process's cgroup v2 folder (from /proc/self/cgroup), then the root's."""
    dirs = []
    for line in (_read(Path("/proc/self/cgroup")) or "").splitlines():
        if line.startswith("0::"):
            dirs.append(root / line[3:].lstrip("/"))
    return [*dirs, root]


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def available_cpus(root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may run on: its affinity mask, capped by the cgroup quota (rounded up), at least 1."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpus(root)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def user_threads(environ: os._Environ | dict = os.environ) -> int | None:
    """The user's ``OMP_NUM_THREADS`` (its outer level, e.g. 4 of "4,2"), or None when unset or not a count."""
    value = environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def budget(environ: os._Environ | dict = os.environ, root: Path = CGROUP_ROOT) -> int:
    """Threads this process may use for compute: the available CPUs shared among torchrun's local processes,
    capped by the user's ``OMP_NUM_THREADS``."""
    local = int(environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    cpus = max(1, available_cpus(root) // max(1, local))
    user = user_threads(environ)
    return min(cpus, user) if user else cpus


@dataclass(frozen=True)
class Plan:
    """The threads one kind of work gets: torch intra-op (also MKL's and OpenMP's) and NumPy's BLAS."""

    kind: Kind
    intra: int
    blas: int


def plan(kind: Kind, threads: int | None = None, environ: os._Environ | dict = os.environ, root: Path = CGROUP_ROOT) -> Plan:
    """Threads for ``kind``; an explicit ``threads`` setting wins for compute but never exceeds the available CPUs."""
    if kind == "small":
        return Plan(kind, 1, 1)
    n = min(threads, available_cpus(root)) if threads else budget(environ, root)
    return Plan(kind, n, n)


def apply(kind: Kind, threads: int | None = None) -> Plan:
    """Set torch's (with MKL's and OpenMP's) and NumPy's BLAS pools in this process for ``kind`` of work.

    Small work does not import torch (seconds on a busy machine) when nothing has yet: its pools do not exist,
    and the next ``apply`` after torch loads sets them."""
    from threadpoolctl import threadpool_limits

    chosen = plan(kind, threads)
    if kind == "compute" or "torch" in sys.modules:
        import torch

        torch.set_num_threads(chosen.intra)
        try:  # inter-op threads serve torch.jit.fork only; one is enough, and it can be set once, before first use
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
    threadpool_limits(chosen.blas, user_api="blas")
    return chosen


def worker_init(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=...)``: a decoding worker is small work, so 1 thread in every pool."""
    apply("small")
