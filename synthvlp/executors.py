"""Executors for the per-unit stages: the same ``run_unit`` of each stage object (``synthvlp.stages``), run
in-process or on Ray.

The runner decides which units to do and owns the ledger; an executor only runs each unit's function and hands
back its outputs, and the runner commits each unit as it arrives. A unit writes its files atomically, so a
worker killed mid-unit leaves nothing committed and nothing half-written: the unit is simply run again (Ray
Data restarts a dead actor and retries its unit). Ray is imported only when ``run.executor`` is ``ray``, so the CLI stays fast.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthvlp.errors import UserError
from synthvlp.runfolder import Unit

if TYPE_CHECKING:
    from synthvlp.config import RunConfig
    from synthvlp.runner import Runner

Advance = Callable[[int], None]


def execute_units(runner: Runner, stage: str, units: Sequence[Unit], advance: Advance) -> Iterator[tuple[Unit, list[Path]]]:
    """Run ``stage`` for ``units`` with the config's executor; yield each finished unit with its outputs."""
    if runner.config.run.executor == "ray":
        yield from _ray_units(runner, stage, units, advance)
        return
    for unit in units:
        yield unit, runner.stages[stage].run_unit(runner, unit, advance)


class _UnitActor:
    """One Ray actor: a runner of its own for the driver's config and run folder, reused for every unit it gets,
    so per-process state (the run plan, a loaded report model or diffusion pipeline) is built once per actor."""

    def __init__(self, runner_class: type[Runner], config: RunConfig, run_dir: Path, stage: str, cwd: str) -> None:
        from rich.console import Console

        os.chdir(cwd)  # relative paths in the config (run folder, models, prompts) mean what they mean to the driver
        self.runner = runner_class(config, run_dir, console=Console(stderr=True))
        self.stage = stage

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        done: dict[str, list] = {"index": [], "outputs": [], "error": []}
        for index, start, stop in zip(batch["index"], batch["start"], batch["stop"], strict=True):
            unit = Unit(int(index), int(start), int(stop))
            try:
                outputs = self.runner.stages[self.stage].run_unit(self.runner, unit, lambda n: None)
            except UserError as exc:  # Ray would wrap it in a traceback; the driver re-raises it plainly
                outputs, error = [], str(exc)
            else:
                error = ""
            done["index"].append(unit.index)
            done["outputs"].append([str(p.relative_to(self.runner.run_dir)) for p in outputs])
            done["error"].append(error)
        return done


def _ray_units(runner: Runner, stage: str, units: Sequence[Unit], advance: Advance) -> Iterator[tuple[Unit, list[Path]]]:
    """Ray Data ``map_batches`` over the units, one unit per block and batch, on a fixed actor pool.

    Every actor must see the run folder at the same path (one machine, or a shared filesystem on a cluster)."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise UserError("run.executor is 'ray' but Ray is not installed; pip install 'synthvlp[ray]'") from None
    from synthvlp.store import sweep_stale_temp

    settings = runner.config.run.ray
    if not ray.is_initialized():
        ray.init(address=settings.address, include_dashboard=False, logging_level=logging.WARNING)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    by_index = {u.index: u for u in units}
    items = [{"index": u.index, "start": u.start, "stop": u.stop} for u in units]
    dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _UnitActor,
        fn_constructor_kwargs={"runner_class": type(runner), "config": runner.config, "run_dir": runner.run_dir, "stage": stage, "cwd": os.getcwd()},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=min(settings.actors, len(items)), max_tasks_in_flight_per_actor=1),
        num_cpus=settings.cpus_per_actor,
        num_gpus=settings.images_gpus_per_actor if stage == "images" else 0,
    )
    for row in dataset.iter_rows():
        if row["error"]:
            raise UserError(row["error"])
        unit = by_index[int(row["index"])]
        advance(unit.size)
        yield unit, [runner.run_dir / rel for rel in row["outputs"]]
    stale = sweep_stale_temp(runner.run_dir)
    if stale:
        runner.console.print(f"[yellow]{stage}: removed {stale} partial file(s) left by Ray workers that died; their units were redone")

