"""The thread policy: what a process may use (affinity, cgroup quota, OMP_NUM_THREADS, torchrun) and what each
kind of work gets, in this process and in DataLoader workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from threadpoolctl import threadpool_info

from synthvlp import threads
from synthvlp.config import RunConfig
from synthvlp.runner import Runner

REPO = Path(__file__).resolve().parent.parent
AFFINITY = len(os.sched_getaffinity(0))


def _cgroup(tmp_path: Path, v2: str | None = None, v1: tuple[str, str] | None = None) -> Path:
    if v2 is not None:
        (tmp_path / "cpu.max").write_text(v2 + "\n")
    if v1 is not None:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(v1[0])
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(v1[1])
    return tmp_path


@pytest.mark.parametrize(
    ("v2", "v1", "expected"),
    [("150000 100000", None, 1.5), ("max 100000", None, None), (None, ("50000", "100000"), 0.5), (None, ("-1", "100000"), None), (None, None, None)],
)
def test_cgroup_quota_v1_and_v2(tmp_path, v2, v1, expected):
    assert threads.cgroup_cpus(_cgroup(tmp_path, v2, v1)) == expected


@pytest.mark.parametrize(("quota", "expected"), [("50000 100000", 1), ("max 100000", AFFINITY), (f"{100000 * AFFINITY + 1} 100000", AFFINITY)])
def test_a_quota_caps_the_affinity_mask_rounded_up(tmp_path, quota, expected):
    assert threads.available_cpus(_cgroup(tmp_path, quota)) == expected


@pytest.mark.parametrize(("value", "expected"), [("3", 3), ("4,2", 4), (" 2 ", 2), ("", None), ("0", None), ("many", None)])
def test_the_users_omp_num_threads(value, expected):
    assert threads.user_threads({"OMP_NUM_THREADS": value}) == expected


def test_budget_shares_cpus_among_torchrun_processes_and_respects_the_user(tmp_path):
    root = _cgroup(tmp_path, "400000 100000")
    cpus = min(AFFINITY, 4)
    assert threads.budget({}, root) == cpus
    assert threads.budget({"LOCAL_WORLD_SIZE": "2"}, root) == max(1, cpus // 2)
    assert threads.budget({"OMP_NUM_THREADS": "1"}, root) == 1
    assert threads.budget({"OMP_NUM_THREADS": "64"}, root) == cpus  # never more than the CPUs


def test_plans_per_kind(tmp_path):
    root = _cgroup(tmp_path, "max 100000")
    assert threads.plan("small", 8, {}, root) == threads.Plan("small", 1, 1)
    assert threads.plan("compute", None, {"OMP_NUM_THREADS": "1"}, root).intra == 1
    assert threads.plan("compute", 64, {}, root).intra == AFFINITY  # an explicit setting is capped at the CPUs
    assert threads.plan("compute", 1, {"OMP_NUM_THREADS": "8"}, root).intra == 1  # and wins over the environment


def test_wait_policy_default_leaves_a_users_choice_alone():
    env: dict[str, str] = {}
    threads.prepare_environment(env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    for own in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "1000"}):
        env = dict(own)
        threads.prepare_environment(env)
        assert env == own


def _blas_threads() -> int:
    return max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")


def test_apply_sets_torch_and_blas_and_restores():
    before = torch.get_num_threads(), _blas_threads()
    try:
        assert threads.apply("small").intra == 1
        assert (torch.get_num_threads(), _blas_threads()) == (1, 1)
        chosen = threads.apply("compute", 2)
        assert torch.get_num_threads() == chosen.intra == min(2, threads.available_cpus())
        assert _blas_threads() == chosen.blas
    finally:
        torch.set_num_threads(before[0])
        threads.apply("small")  # BLAS back to a known state, then to what it was
        from threadpoolctl import threadpool_limits

        threadpool_limits(before[1], user_api="blas")


def test_a_fresh_process_follows_omp_num_threads_and_sleeps_idle_threads():
    code = (
        "import json, synthvlp, os, torch\nfrom synthvlp.threads import apply\nplan = apply('compute')\n"
        "print(json.dumps([plan.intra, torch.get_num_threads(), os.environ.get('OMP_WAIT_POLICY')]))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == [1, 1, "PASSIVE"]


class _PoolSizes(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> tuple[int, int]:
        return torch.get_num_threads(), _blas_threads()


def test_dataloader_workers_use_one_thread_each():
    loader = torch.utils.data.DataLoader(_PoolSizes(), batch_size=None, num_workers=1, worker_init_fn=threads.worker_init)
    assert [tuple(item) for item in loader] == [(1, 1), (1, 1)]


def test_the_runner_gives_models_compute_and_array_work_one_thread(tmp_path):
    runner = Runner(RunConfig(), tmp_path)
    assert [runner.work_kind(s) for s in ("plan", "reports", "images", "filter", "balance", "pretrain", "evaluate")] == [
        "small", "small", "small", "small", "small", "compute", "compute"]
