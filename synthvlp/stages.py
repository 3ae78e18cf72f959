"""The pipeline's stages as registered objects: each names the config sections its output depends on, its
inputs, and its work (``run_unit`` for a per-unit stage, ``run_global`` for a global one).

The runner is a loop over ``REGISTRY``: it owns resuming, sharding, progress and the ledger, and an executor
calls a per-unit stage's ``run_unit`` directly (grep follows a stage from the CLI to its code). A stage reads the
runner (``run``) for the config, the run folder's ``layout`` and what one process builds once (the run plan, the
report writer, the entity extractor). Adding a stage is a class here plus its line in ``REGISTRY`` and its name
in ``config.STAGES``.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from synthvlp.config import REAL_TEST, SYNTHETIC_TEST
from synthvlp.errors import UserError
from synthvlp.runfolder import Unit
from synthvlp.store import atomic_open, read_shard, write_shard, write_text_atomic

if TYPE_CHECKING:
    from synthvlp.config import BenchmarkSpec
    from synthvlp.evaluation.harness import EvaluationSet
    from synthvlp.runner import Runner

Advance = Callable[[int], None]


class UnitStage(ABC):
    """A stage done in units of ``run.shard_size`` samples, each committed on its own (and shardable)."""

    name: ClassVar[str]
    sections: ClassVar[tuple[str, ...]]
    """Config sections the stage's output depends on (its own and its upstream stages'): its fingerprint."""

    @abstractmethod
    def inputs(self, run: Runner, unit: Unit) -> list[Path]:
        """Files whose digests the ledger records: a changed input redoes the unit."""

    @abstractmethod
    def run_unit(self, run: Runner, unit: Unit, advance: Advance) -> list[Path]:
        """Write the unit's outputs atomically and return them; ``advance(n)`` reports n samples done."""


class GlobalStage(ABC):
    """A stage done once over the whole run, only in an unsharded invocation."""

    name: ClassVar[str]
    sections: ClassVar[tuple[str, ...]]

    @abstractmethod
    def inputs(self, run: Runner) -> list[Path]:
        """Files whose digests the ledger records; a UserError when an earlier stage has not made them."""

    @abstractmethod
    def run_global(self, run: Runner) -> list[Path]:
        """Do the stage's work and return the files it wrote."""


def write_part(table: pa.Table, path: Path) -> Path:
    """A unit's manifest columns, written atomically."""
    with atomic_open(path, "wb") as handle:
        pq.write_table(table, handle, compression="zstd")
    return path


class PlanStage(UnitStage):
    name = "plan"
    sections = ("run", "plan")

    def inputs(self, run: Runner, unit: Unit) -> list[Path]:
        """A labelled set's label tables: an edited label file re-plans."""
        spec = run.config.plan.labels
        if spec is None:
            return []
        return sorted(spec.path.glob("*.csv*")) if spec.path.is_dir() else [spec.path]

    def run_unit(self, run: Runner, unit: Unit, advance: Advance) -> list[Path]:
        """A slice of the run's plan, computed once per process (``Runner.run_plan``)."""
        table = run.run_plan.slice(unit.start, unit.size)
        advance(unit.size)
        return [write_part(table, run.layout.part("plan", unit.index))]


class ReportsStage(UnitStage):
    name = "reports"
    sections = ("run", "plan", "reports")

    def inputs(self, run: Runner, unit: Unit) -> list[Path]:
        return [run.layout.part("plan", unit.index)]

    def run_unit(self, run: Runner, unit: Unit, advance: Advance) -> list[Path]:
        from synthvlp.generation.journal import Journal
        from synthvlp.generation.reports import write_reports

        # finished samples of an interrupted attempt at this unit, under these settings only
        journal = run.layout.journal(unit.index, run.fingerprint("reports"))
        plan = pq.read_table(run.layout.part("plan", unit.index))
        table = write_reports(run.config, plan, run.extractor, advance, journal=journal, writer=run.report_writer)
        part = write_part(table, run.layout.part("reports", unit.index))
        Journal(journal).remove()
        return [part]


class ImagesStage(UnitStage):
    name = "images"
    sections = ("run", "plan", "reports", "images", "filter")  # the image checks drive regeneration

    def inputs(self, run: Runner, unit: Unit) -> list[Path]:
        return [run.layout.part("plan", unit.index), run.layout.part("reports", unit.index)]

    def run_unit(self, run: Runner, unit: Unit, advance: Advance) -> list[Path]:
        from synthvlp.generation.images import render_images

        plan, reports = pq.read_table(run.layout.part("plan", unit.index)), pq.read_table(run.layout.part("reports", unit.index))
        batch = render_images(run.config, plan, reports, advance)
        attempts, rejections = self._regenerate(run, batch, plan, reports)
        shard = run.layout.image_shard(unit.index)
        write_shard(shard, batch.samples)
        columns = batch.columns.append_column("image_shard", pa.array([shard.name] * batch.columns.num_rows))
        columns = columns.append_column("image_attempts", pa.array(attempts, pa.int32()))
        columns = columns.append_column("image_rejections", pa.array(rejections, pa.string()))
        undrawable = run.layout.undrawable(unit.index)
        write_text_atomic(undrawable, json.dumps(batch.undrawable, sort_keys=True))
        outputs = [shard, undrawable, write_part(columns, run.layout.part("images", unit.index))]
        warnings = run.layout.image_warnings(unit.index)  # e.g. truncated prompts
        warnings.unlink(missing_ok=True)
        if batch.warnings:
            write_text_atomic(warnings, json.dumps(batch.warnings, sort_keys=True))
            outputs.append(warnings)
        return outputs

    def _regenerate(self, run: Runner, batch, plan: pa.Table, reports: pa.Table) -> tuple[list[int], list[str | None]]:
        """Re-render images that fail an image check, with a fresh per-sample seed, up to ``filter.regenerate``
        times; replace them in ``batch`` and return each sample's render count and rejected attempts' reasons.

        A sample that never passes keeps its last render; the filter stage rejects it and the report counts it."""
        from synthvlp.filtering.checks import failed_image_checks
        from synthvlp.generation.images import render_images

        cache = run.layout.cache
        impressions = reports.column("impression").to_pylist()
        failing = failed_image_checks(run.config, [s["png"] for s in batch.samples], cache, impressions)
        history = [[f"attempt 1: {', '.join(f)}"] if f else [] for f in failing]
        attempts = [1] * len(failing)
        todo = [i for i, f in enumerate(failing) if f]
        rows = batch.columns.to_pylist()
        for attempt in range(1, run.config.filter.regenerate + 1):
            if not todo:
                break
            redo = render_images(run.config, plan.take(todo), reports.take(todo), attempt=attempt)
            failing = failed_image_checks(run.config, [s["png"] for s in redo.samples], cache, [impressions[i] for i in todo])
            for position, i in enumerate(todo):
                batch.samples[i], rows[i], attempts[i] = redo.samples[position], redo.columns.slice(position, 1).to_pylist()[0], attempt + 1
                if failing[position]:
                    history[i].append(f"attempt {attempt + 1}: {', '.join(failing[position])}")
            todo = [i for position, i in enumerate(todo) if failing[position]]
        batch.columns = pa.Table.from_pylist(rows, schema=batch.columns.schema)
        return attempts, ["; ".join(h) if h else None for h in history]


class FilterStage(UnitStage):
    name = "filter"
    sections = ("run", "plan", "reports", "images", "filter")

    def inputs(self, run: Runner, unit: Unit) -> list[Path]:
        return [*(run.layout.part(s, unit.index) for s in ("plan", "reports", "images")), run.layout.image_shard(unit.index)]

    def run_unit(self, run: Runner, unit: Unit, advance: Advance) -> list[Path]:
        from synthvlp.filtering.checks import check_samples

        images = {str(s["__key__"]): s["png"] for s in read_shard(run.layout.image_shard(unit.index))}
        ids = pq.read_table(run.layout.part("images", unit.index), columns=["id"]).column("id").to_pylist()
        missing = [k for k in ids if k not in images]
        if missing:
            raise UserError(f"{run.layout.image_shard(unit.index)}: samples {missing[:3]} missing from the shard; delete it and rerun")
        rows = append_columns(pq.read_table(run.layout.part("plan", unit.index)), pq.read_table(run.layout.part("reports", unit.index)), "reports").to_pylist()
        table, signatures = check_samples(run.config, rows, images, run.layout.cache, advance)
        signature_path = run.layout.signatures(unit.index)
        with atomic_open(signature_path, "wb") as handle:
            np.save(handle, signatures)
        return [signature_path, write_part(table, run.layout.part("filter", unit.index))]


class BalanceStage(GlobalStage):
    name = "balance"
    sections = ("run", "plan", "reports", "images", "filter", "balance")

    def inputs(self, run: Runner) -> list[Path]:
        if not run.stage_complete("filter"):
            raise UserError("balance needs every unit filtered; run the plan, reports, images and filter stages first")
        parts = [run.layout.part(s, u.index) for u in run.units() for s in per_unit_stages()]
        return parts + [run.layout.signatures(u.index) for u in run.units()] + [run.layout.image_shard(u.index) for u in run.units()]

    def run_global(self, run: Runner) -> list[Path]:
        """Select the dataset and export its samples into ``dataset/`` train and test shards."""
        from synthvlp.filtering.selection import select_dataset

        joined = run.joined_parts()
        signatures = np.concatenate([np.load(run.layout.signatures(u.index)) for u in run.units()])
        selection, targets = select_dataset(run.config, joined.to_pylist(), signatures)
        chosen = {k for k, s in zip(selection.column("id").to_pylist(), selection.column("selected").to_pylist(), strict=True) if s}
        split_of = dict(zip(joined.column("id").to_pylist(), joined.column("split").to_pylist(), strict=True))
        shard_of: dict[str, str] = {}
        pending: dict[str, list[dict]] = {"train": [], "test": []}
        written: list[Path] = []
        counts = {"train": 0, "test": 0}

        def flush(split: str) -> None:
            name = f"{split}-{counts[split]:06d}.tar"
            write_shard(run.layout.dataset_shard(name), pending[split])
            for sample in pending[split]:
                shard_of[str(sample["__key__"])] = name
            written.append(run.layout.dataset_shard(name))
            counts[split] += 1
            pending[split] = []

        with run.progress("balance", len(chosen)) as advance:
            for unit in run.units():
                for sample in read_shard(run.layout.image_shard(unit.index)):
                    key = str(sample["__key__"])
                    if key in chosen:
                        split = split_of[key]
                        pending[split].append(sample)
                        advance(1)
                        if len(pending[split]) == run.config.run.shard_size:
                            flush(split)
            for split in ("train", "test"):
                if pending[split]:
                    flush(split)
        table = selection.append_column("shard", pa.array([shard_of.get(k) for k in selection.column("id").to_pylist()], pa.string()))
        path, targets_path = run.layout.selection, run.layout.balance_targets
        write_text_atomic(targets_path, json.dumps(targets, indent=1, sort_keys=True))
        return [*written, targets_path, write_part(table, path)]


class PretrainStage(GlobalStage):
    name = "pretrain"
    sections = ("run", "plan", "reports", "images", "filter", "balance", "pretrain")

    def inputs(self, run: Runner) -> list[Path]:
        settings = run.config.pretrain
        real = [settings.real.csv] if settings.real is not None and settings.recipe != "synthetic" else []
        if settings.recipe == "real":
            return real
        shards = run.training_shards()
        if not shards:
            raise UserError("pretrain needs exported training shards; run the balance stage first")
        return shards + real

    def run_global(self, run: Runner) -> list[Path]:
        from synthvlp.pretrain.engine import planned_samples, train

        settings = run.config.pretrain
        shards = run.training_shards()
        out = run.layout.pretrain
        planned = planned_samples(settings, shards, run.config.run.seed)
        steps = planned // settings.batch_size
        if settings.warmup_steps >= steps:
            run.console.print(f"[yellow]pretrain: warmup_steps ({settings.warmup_steps}) is not below the run's {steps} steps, so the learning rate "
                               f"never leaves warm-up (it peaks at {steps / max(settings.warmup_steps, 1):.0%} of pretrain.lr); lower pretrain.warmup_steps")
        with run.progress("pretrain", planned) as advance:
            result = train(settings, shards, out, seed=run.config.run.seed, advance=advance, say=run.console.print)
        metrics = run.layout.pretrain_metrics
        if run.primary:
            write_text_atomic(metrics, json.dumps(result.__dict__, indent=2))
        run.console.print(
            f"pretrain: {result.steps} steps, final loss {result.final_loss:.4f}, {result.samples_per_second:.1f} samples/s "
            f"on {result.world_size} process(es); {len(result.skipped_images)} unreadable image(s) skipped -> {run.layout.checkpoint}"
        )
        return [run.layout.checkpoint, run.layout.pretrain_log, metrics]


class EvaluateStage(GlobalStage):
    name = "evaluate"
    sections = ("run", "plan", "reports", "images", "filter", "balance", "pretrain", "evaluate")

    def inputs(self, run: Runner) -> list[Path]:
        checkpoint = run.layout.checkpoint
        if not checkpoint.exists():
            raise UserError(f"evaluate needs {checkpoint}; run the pretrain stage first")
        return [checkpoint, *run.dataset_shards("test")]

    def _held_out_real(self, run: Runner, classes: Sequence[str]):
        """The real corpus's held-out pairs (``pretrain.real.holdout_fraction``, whole patients) as a labelled set:
        labels are the findings the entity extractor reads in each held-out report, as the label-aware targets are."""
        from synthvlp.evaluation.benchmarks import LabelledSet
        from synthvlp.pretrain.data import CsvSource
        from synthvlp.pretrain.labels import FindingLabels

        held = CsvSource(run.config.pretrain.real, run.config.run.seed, held_out=True)
        reader = FindingLabels()
        columns = [reader.names.index(c) for c in classes if c in reader.names]
        kept = [c for c in classes if c in reader.names]
        labels = np.stack([reader(text).numpy()[columns] for text in held.texts]).astype(np.float32)
        return LabelledSet("real-heldout", list(held.paths), list(held.keys), kept, labels)

    def _titles(self, run: Runner) -> tuple[list[tuple[str, BenchmarkSpec | None]], list[str]]:
        """The sets to score, as (title, benchmark or None for the run's own test split or the real held-out pairs),
        and the ones skipped, with why."""
        settings, real = run.config.evaluate, run.config.pretrain.real
        test_shards = run.dataset_shards("test")
        holds_out = real is not None and run.config.pretrain.recipe != "synthetic" and real.holdout_fraction > 0
        if not test_shards and not settings.benchmarks and not holds_out:
            raise UserError("evaluate: the run has no test split and evaluate.benchmarks is empty; raise run.test_fraction "
                            "or list the held-out sets to score (e.g. the test split of the runs a mixed recipe trains on)")
        own = SYNTHETIC_TEST if run.config.plan.labels is None else REAL_TEST
        titles: list[tuple[str, BenchmarkSpec | None]] = [(own, None)] if test_shards else []
        skipped = [] if test_shards else ["the run's own test split: it has none (its training data comes from elsewhere)"]
        if holds_out:
            titles.append(("real-heldout", None))
        for spec in settings.benchmarks:
            title = spec.folder_name  # a plain name (checked in the config), so results stay inside evaluate/
            if not spec.path.exists():
                if not spec.optional:
                    raise UserError(f"evaluate.benchmarks: {title}: {spec.path} not found")
                skipped.append(f"{title}: {spec.path} absent")
                continue
            titles.append((title, spec))
        return titles, skipped

    def _sets(self, run: Runner, titles: list[tuple[str, BenchmarkSpec | None]]) -> Iterator[EvaluationSet]:
        """Each set, read only when its turn comes (a benchmark's images stay on disk until then)."""
        from synthvlp.evaluation.benchmarks import load_benchmark
        from synthvlp.evaluation.harness import EvaluationSet

        classes = run.config.evaluate.classes or run.config.plan.findings
        for title, spec in titles:
            if spec is not None:
                yield EvaluationSet(title, load_benchmark(spec.name, spec.path, **spec.adapter_options()), classes, spec.split, spec.linear_probe)
            elif title == "real-heldout":
                yield EvaluationSet(title, self._held_out_real(run, classes), classes)
            else:
                yield EvaluationSet(title, load_benchmark("shards", run.dataset_shards("test"), classes=classes), classes)

    def run_global(self, run: Runner) -> list[Path]:
        """Zero-shot tables on the run's own test split, the real corpus's held-out pairs and every configured
        benchmark (``CheckpointEvaluation``, as ``synthvlp evaluate``), then ``results.md``."""
        import shutil

        from synthvlp.evaluation.harness import CheckpointEvaluation, write_results

        settings, out, seed = run.config.evaluate, run.layout.evaluate, run.config.run.seed
        evaluation = CheckpointEvaluation.load(run.layout.checkpoint, settings, seed, run.progress, run.console.print,
                                               floor_seed=seed if settings.floor else None)
        titles, skipped = self._titles(run)
        for stale in {p.name for p in out.iterdir() if p.is_dir()} - {title for title, _ in titles} if out.is_dir() else ():
            shutil.rmtree(out / stale)  # a benchmark dropped from the config leaves no stale table behind
        written = [path for target in self._sets(run, titles) for path in evaluation.score(target, out)]
        write_text_atomic(run.layout.evaluate_skipped, json.dumps(skipped, indent=1))
        return [*written, run.layout.evaluate_skipped, write_results(out, f"Evaluation of {run.config.run.name}")]


REGISTRY: dict[str, UnitStage | GlobalStage] = {
    stage.name: stage for stage in (PlanStage(), ReportsStage(), ImagesStage(), FilterStage(), BalanceStage(), PretrainStage(), EvaluateStage())
}
"""Every stage, in run order (the order of ``config.STAGES``)."""


def per_unit_stages() -> tuple[str, ...]:
    return tuple(name for name, stage in REGISTRY.items() if isinstance(stage, UnitStage))


def append_columns(table: pa.Table, columns: pa.Table, stage: str) -> pa.Table:
    """Add a stage's columns; one an earlier stage also wrote is replaced (balance's ``accepted`` counts the
    near-duplicates it rejects). Every stage keeps the plan's sample order, which is checked, not assumed."""
    if not columns.column("id").equals(table.column("id")):
        raise UserError(f"parts/{stage}: sample ids do not line up with the plan; delete parts/{stage} and .state/{stage} and rerun")
    for name in columns.column_names:
        if name in table.column_names and name != "id":
            table = table.set_column(table.column_names.index(name), name, columns.column(name))
        elif name != "id":
            table = table.append_column(name, columns.column(name))
    return table
