"""The staged runner: resuming, sharding, progress and the ledger, as a loop over the stage objects of
``synthvlp.stages`` (which do the work).

Per-sample stages (plan, reports, images, filter) work in units of ``run.shard_size`` samples. A unit's outputs
are written atomically and then committed to the ledger; on rerun a committed unit whose outputs, inputs and
settings still check out is skipped, and anything else is redone with the reason printed. ``--shard i/n`` gives
a process the units ``u`` with ``u % n == i``, so several machines can share a run folder. Global stages
(balance, pretrain, evaluate) run only in an unsharded invocation.

The run folder's layout is ``synthvlp.runfolder.RunLayout``; the ledger's records are ``.state/<stage>/<unit>.json``.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from synthvlp import schema
from synthvlp.config import RENDERERS, STAGES, RunConfig, fingerprinted
from synthvlp.errors import UserError
from synthvlp.executors import execute_units
from synthvlp.report import write_report
from synthvlp.runfolder import RunLayout, Unit
from synthvlp.seeding import sample_seed
from synthvlp.stages import REGISTRY, GlobalStage, UnitStage, append_columns, per_unit_stages
from synthvlp.store import Ledger, sweep_stale_temp
from synthvlp.threads import Kind
from synthvlp.threads import apply as apply_threads

PER_UNIT_STAGES = per_unit_stages()

STAGE_SECTIONS: dict[str, tuple[str, ...]] = {name: stage.sections for name, stage in REGISTRY.items()}
"""Config sections each stage's output depends on (its own and its upstream stages'), from the stage objects."""


def checked_stages(stages: Sequence[str]) -> list[str]:
    """``stages`` in run order; an unknown name, or none at all, is a ``UserError`` (checked before a run folder is
    created or claimed)."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise UserError(f"--stages: unknown stage(s) {unknown}; stages are {', '.join(STAGES)}")
    if not stages:
        raise UserError(f"--stages: no stage given; stages are {', '.join(STAGES)}")
    return [s for s in STAGES if s in stages]


class RateColumn(ProgressColumn):
    """Items per second, which rich's byte-oriented speed column does not show."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f}/s" if speed else "-/s", style="progress.data.speed")


def progress_columns(label: str, *extra: ProgressColumn) -> list[ProgressColumn]:
    """The columns of every synthvlp progress bar: ``label`` (a rich format string), bar, count, rate, ``extra``
    (a loss, say), elapsed time and time left."""
    return [TextColumn(label), BarColumn(), MofNCompleteColumn(), RateColumn(), *extra, TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]


@dataclass
class Runner:
    """Runs the selected stages of one config in its run folder."""

    config: RunConfig
    run_dir: Path
    console: Console = field(default_factory=Console)
    shard: tuple[int, int] = (0, 1)
    primary: bool = True
    """False on the other processes of a torchrun pre-training: they train, but write no record, manifest or report."""
    stages: ClassVar[dict[str, UnitStage | GlobalStage]] = REGISTRY
    """The stage objects by name; a subclass may swap one (the Ray kill test does)."""

    @cached_property
    def ledger(self) -> Ledger:
        return Ledger(self.run_dir, self.layout.ledger)

    @cached_property
    def layout(self) -> RunLayout:
        return RunLayout(self.run_dir)

    # ---- layout -------------------------------------------------------------------------------------------
    def units(self) -> list[Unit]:
        size, total = self.config.run.shard_size, self.config.run.n_samples
        return [Unit(i, i * size, min(total, (i + 1) * size)) for i in range(math.ceil(total / size))]

    def my_units(self) -> list[Unit]:
        index, count = self.shard
        return [u for u in self.units() if u.index % count == index]

    def training_shards(self) -> list[Path]:
        """``pretrain.shards`` with glob patterns expanded (other runs' shards, for mixed recipes), else this run's
        exported training shards. A pattern matching nothing is an error naming it."""
        patterns = self.config.pretrain.shards
        if not patterns:
            return self.dataset_shards("train")
        shards: list[Path] = []
        for pattern in patterns:
            if not any(c in str(pattern) for c in "*?["):
                shards.append(pattern)
                continue
            matched = sorted(Path(p) for p in glob.glob(str(pattern)))
            if not matched:
                raise UserError(f"pretrain.shards: {pattern} matches no file; make those shards first (their run's balance stage)")
            shards.extend(matched)
        return shards

    def dataset_shards(self, split: str) -> list[Path]:
        """This run's exported shards of ``split``, as the balance stage's selection names them."""
        selection = self.layout.selection
        if not selection.exists():
            return []
        names = {s for s in pq.read_table(selection, columns=["shard"]).column("shard").to_pylist() if s and s.startswith(f"{split}-")}
        return [self.layout.dataset_shard(name) for name in sorted(names)]

    def fingerprint(self, stage: str) -> str:
        """The hash of the settings ``stage``'s output depends on: its sections, without incidental settings."""
        plain = fingerprinted(self.config)
        chosen = {name: plain[name] for name in STAGE_SECTIONS[stage]}
        return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]

    # ---- running ------------------------------------------------------------------------------------------
    def run(self, stages: Sequence[str] = STAGES) -> None:
        ordered = checked_stages(stages)
        stale = sweep_stale_temp(self.run_dir) if self.primary else 0
        if stale:
            self.console.print(f"[yellow]removed {stale} partial file(s) left by an interrupted run")
        sharded = self.shard != (0, 1)
        for stage in ordered:
            apply_threads(self.work_kind(stage), self.config.pretrain.threads)
            if stage in PER_UNIT_STAGES:
                self._run_per_unit(stage)
            elif sharded:
                self.console.print(f"[yellow]{stage}: skipped under --shard {self.shard[0]}/{self.shard[1]}; run without --shard once all shards finish")
            else:
                self._run_global(stage)
        if not sharded and self.primary:
            self.write_manifest()
            write_report(self.layout, self.config, self.joined_parts(), self.stale("evaluate"), lambda: self.extractor)
            self.console.print(f"[green]report: {self.layout.report}")

    def work_kind(self, stage: str) -> Kind:
        """How the stage computes, for its thread pools: models ("compute") or many small array ops ("small")."""
        if stage == "images":
            return RENDERERS.load(self.config.images.backend).work_kind
        models = {"pretrain", "evaluate"}
        if self.config.reports.backend == "transformers":
            models.add("reports")
        return "compute" if stage in models else "small"

    def _run_per_unit(self, stage: str) -> None:
        fingerprint = self.fingerprint(stage)
        todo: list[Unit] = []
        for unit in self.my_units():
            done, why = self.ledger.check(stage, unit.name, fingerprint, self.stages[stage].inputs(self, unit))
            if why:
                self.console.print(f"[yellow]{stage} {unit.name}: {why}; redoing it")
            if not done:
                todo.append(unit)
        skipped = len(self.my_units()) - len(todo)
        if not todo:
            self.console.print(f"{stage}: all {skipped} units already done")
            return
        for unit in todo:
            missing = [p for p in self.stages[stage].inputs(self, unit) if not p.exists()]
            if missing:
                raise UserError(f"{stage} needs {missing[0]} (from an earlier stage); run the earlier stages first")
        with self.progress(stage, sum(u.size for u in todo)) as advance:
            for unit, outputs in execute_units(self, stage, todo, advance):
                self.ledger.commit(stage, unit.name, fingerprint, self.stages[stage].inputs(self, unit), outputs)
        if skipped:
            self.console.print(f"{stage}: resumed, {skipped} units were already done")

    @contextmanager
    def progress(self, stage: str, total: int) -> Iterator[Callable[[int], None]]:
        """A progress bar for ``total`` items; yields the function that advances it."""
        with Progress(*progress_columns("{task.description:<9}"), console=self.console, transient=False) as progress:
            task = progress.add_task(stage, total=total)
            yield lambda n: progress.advance(task, n)

    @cached_property
    def vocabulary(self):
        from synthvlp.entities import load_vocabulary

        return load_vocabulary()

    @cached_property
    def extractor(self):
        from synthvlp.entities import EntityExtractor

        return EntityExtractor(self.vocabulary)

    # ---- built once per process (or Ray actor), shared by the units it runs ------------------------------------
    @cached_property
    def run_plan(self) -> pa.Table:
        """The whole run's plan, computed once per process: frequency caps couple samples, so units slice one
        global pass instead of planning themselves (which keeps plans independent of sharding)."""
        from synthvlp.generation.planner import check_findings, plan_run

        check_findings(self.config, self.vocabulary)
        if self.config.plan.labels is not None:
            from synthvlp.generation.planner import plan_labelled

            return plan_labelled(self.config, self.vocabulary, self._labelled_films())
        return plan_run(self.config, self.vocabulary)

    def _labelled_films(self) -> list:
        """``run.n_samples`` films of ``plan.labels``' train and test splits, read by its adapter, in a seeded order
        (a subset is a random sample, not the set's first rows)."""
        from synthvlp.evaluation.benchmarks import load_benchmark
        from synthvlp.generation.planner import LabelledFilm

        spec = self.config.plan.labels
        labelled = load_benchmark(spec.benchmark, spec.path)
        if labelled.split is None:
            raise UserError(f"plan.labels: {spec.path} has no split column; the run's train and test splits come from it")
        split_of = {**{s: "train" for s in spec.train_splits}, **{s: "test" for s in spec.test_splits}}
        boxes: dict[int, list] = {}
        for region in labelled.regions:
            if region.box is not None:
                boxes.setdefault(region.image, []).append((region.label, *region.box))
        films = [
            LabelledFilm(str(labelled.images[i]), split_of[labelled.split[i]],
                         tuple(c for c, v in zip(labelled.classes, labelled.labels[i]) if v == 1),
                         tuple(c for c, v in zip(labelled.classes, labelled.labels[i]) if v == 0), tuple(boxes.get(i, ())))
            for i in range(len(labelled)) if labelled.split[i] in split_of
        ]
        if len(films) < self.config.run.n_samples:
            raise UserError(f"plan.labels: {spec.path} has {len(films)} films in splits {sorted(split_of)}; "
                            f"set run.n_samples to at most {len(films)}")
        films.sort(key=lambda film: sample_seed(self.config.run.seed, film.source, "plan-labels"))  # sets list films sorted by label
        return films[: self.config.run.n_samples]

    @cached_property
    def report_writer(self):
        """One writer per process, so a local model is loaded once, not per unit."""
        from synthvlp.generation.writers import build_writer

        return build_writer(self.config)

    # ---- manifest -----------------------------------------------------------------------------------------
    def stage_complete(self, stage: str) -> bool:
        return all(self.ledger.is_recorded(stage, u.name) for u in self.units())

    def stale(self, stage: str) -> str:
        """Why a stage's finished work no longer matches the config or its inputs ('' when it does): e.g. the
        evaluation of a model that a later ``synthvlp pretrain`` replaced."""
        names = [u.name for u in self.units()] if stage in PER_UNIT_STAGES else ["global"]
        fingerprint = self.fingerprint(stage)
        for name in names:
            why = self.ledger.staleness(stage, name, fingerprint)
            if why:
                return why if name == "global" else f"{name}: {why}"
        return ""

    def joined_parts(self) -> pa.Table | None:
        """All per-unit columns of the stages that finished every unit, side by side in sample order."""
        if not self.stage_complete("plan"):
            return None
        table = pa.concat_tables([pq.read_table(self.layout.part("plan", u.index)) for u in self.units()])
        for stage in PER_UNIT_STAGES[1:]:
            if not self.stage_complete(stage):
                break
            table = append_columns(table, pa.concat_tables([pq.read_table(self.layout.part(stage, u.index)) for u in self.units()]), stage)
        selection = self.layout.selection
        if selection.exists() and self.ledger.is_recorded("balance", "global"):
            table = append_columns(table, pq.read_table(selection), "balance")
        return table

    def write_manifest(self) -> None:
        table = self.joined_parts()
        if table is not None:
            schema.write_manifest(table, self.layout.manifest)

    # ---- global stages ------------------------------------------------------------------------------------
    def _run_global(self, stage: str) -> None:
        inputs = self.stages[stage].inputs(self)
        done, why = self.ledger.check(stage, "global", self.fingerprint(stage), inputs)
        if done:
            self.console.print(f"{stage}: already done")
            return
        if why:
            self.console.print(f"[yellow]{stage}: {why}; redoing it")
        outputs = self.stages[stage].run_global(self)
        if self.primary:
            self.ledger.commit(stage, "global", self.fingerprint(stage), self.stages[stage].inputs(self), outputs)
