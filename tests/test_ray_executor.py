"""The Ray executor on a local Ray instance: same bytes as the local executor, and a killed worker loses nothing."""

from __future__ import annotations

import hashlib
import os
import signal
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from rich.console import Console

from synthvlp.config import load_config
from synthvlp.runfolder import prepare_run_folder
from synthvlp.runner import Runner
from synthvlp.stages import ImagesStage

from conftest import small_config

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")  # Ray's own internals

GENERATION = ("plan", "reports", "images", "filter")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # actors unpickle the runner subclass below, and tests/ is not on their path
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


def make_runner(out_dir: Path, executor: str, runner_class: type[Runner] = Runner, force: bool = False) -> Runner:
    path = out_dir.parent / f"{out_dir.name}.yaml"
    path.write_text(yaml.safe_dump(small_config(out_dir, run={"executor": executor})))
    config = load_config(path, [])
    return runner_class(config, prepare_run_folder(config, force=force), console=Console(record=True, width=200))


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    runner = make_runner(tmp_path_factory.mktemp("local") / "run", "local")
    runner.run(GENERATION)
    return runner.run_dir


def digests(run_dir: Path) -> dict[str, str]:
    """SHA-256 of every stage output and ledger record (paths relative to the run folder)."""
    files = [*run_dir.glob("parts/*/*"), *run_dir.glob("images/*"), *run_dir.glob(".state/*/*"), run_dir / "manifest.parquet"]
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(files)}


def test_ray_executor_writes_the_local_executors_bytes(local_ray, local_run, tmp_path):
    runner = make_runner(tmp_path / "run", "ray")
    runner.run(GENERATION)
    expected = digests(local_run)
    assert len([k for k in expected if k.startswith("images/")]) == 3
    assert digests(runner.run_dir) == expected
    manifest = pq.read_table(runner.run_dir / "manifest.parquet").to_pylist()
    assert len(manifest) == 60
    assert not any(str(local_run) in str(value) for row in manifest for value in row.values())  # nothing run-folder specific


def test_switching_executor_resumes_instead_of_redoing(local_ray, local_run):
    runner = make_runner(local_run, "ray", force=True)
    runner.run(GENERATION)
    output = runner.console.export_text()
    for stage in GENERATION:
        assert f"{stage}: all 3 units already done" in output


class DyingImages(ImagesStage):
    """An images stage that SIGKILLs its own worker once mid-unit (unit 1, after the first sample is rendered,
    before any file is written) and once after a unit's outputs landed but before the driver committed them
    (unit 2)."""

    def run_unit(self, run, unit, advance):
        marker = run.run_dir.parent / f"killed-{unit.index}"
        if unit.index == 1 and not marker.exists():
            marker.touch()

            def die(n: int) -> None:
                os.kill(os.getpid(), signal.SIGKILL)

            return super().run_unit(run, unit, die)
        outputs = super().run_unit(run, unit, advance)
        if unit.index == 2 and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return outputs


class DyingRunner(Runner):
    stages = {**Runner.stages, "images": DyingImages()}


def test_a_killed_ray_worker_loses_nothing(local_ray, local_run, tmp_path):
    make_runner(tmp_path / "run", "local").run(("plan", "reports"))  # only images needs Ray here; this saves time
    runner = make_runner(tmp_path / "run", "ray", runner_class=DyingRunner, force=True)
    runner.run(("images",))
    make_runner(tmp_path / "run", "local", force=True).run(("filter",))
    assert (tmp_path / "killed-1").exists() and (tmp_path / "killed-2").exists()
    assert digests(runner.run_dir) == digests(local_run)
    assert not list(runner.run_dir.rglob("*.tmp"))  # the dead workers' temp files were swept
