"""The staged runner: resuming, sharding, progress and file layout; the stages themselves stay pure.

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

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from synthvlp import schema
from synthvlp.config import NOT_FINGERPRINTED, REAL_TEST, STAGES, SYNTHETIC_TEST, RunConfig
from synthvlp.errors import UserError
from synthvlp.executors import execute_units
from synthvlp.report import write_report
from synthvlp.runfolder import RunLayout
from synthvlp.seeding import sample_seed
from synthvlp.store import Ledger, atomic_open, read_shard, sweep_stale_temp, write_shard, write_text_atomic
from synthvlp.threads import Kind
from synthvlp.threads import apply as apply_threads

PER_UNIT_STAGES = ("plan", "reports", "images", "filter")

STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "plan": ("run", "plan"),
    "reports": ("run", "plan", "reports"),
    "images": ("run", "plan", "reports", "images", "filter"),  # the image checks drive regeneration
    "filter": ("run", "plan", "reports", "images", "filter"),
    "balance": ("run", "plan", "reports", "images", "filter", "balance"),
    "pretrain": ("run", "plan", "reports", "images", "filter", "balance", "pretrain"),
    "evaluate": ("run", "plan", "reports", "images", "filter", "balance", "pretrain", "evaluate"),
}
"""Config sections each stage's output depends on (its own and its upstream stages')."""



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


@dataclass(frozen=True)
class Unit:
    index: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"unit-{self.index:06d}"

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass
class Runner:
    """Runs the selected stages of one config in its run folder."""

    config: RunConfig
    run_dir: Path
    console: Console = field(default_factory=Console)
    shard: tuple[int, int] = (0, 1)
    primary: bool = True
    """False on the other processes of a torchrun pre-training: they train, but write no record, manifest or report."""

    @cached_property
    def ledger(self) -> Ledger:
        return Ledger(self.run_dir)

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
        plain = self.config.to_plain()
        for section, keys in NOT_FINGERPRINTED.items():
            plain[section] = {k: v for k, v in plain[section].items() if k not in keys}
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
        models = {"pretrain", "evaluate"}
        if self.config.reports.backend == "transformers":
            models.add("reports")
        if self.config.images.backend == "diffusers":
            models.add("images")
        return "compute" if stage in models else "small"

    def _run_per_unit(self, stage: str) -> None:
        fingerprint = self.fingerprint(stage)
        todo: list[Unit] = []
        for unit in self.my_units():
            done, why = self.ledger.check(stage, unit.name, fingerprint, self._inputs(stage, unit))
            if why:
                self.console.print(f"[yellow]{stage} {unit.name}: {why}; redoing it")
            if not done:
                todo.append(unit)
        skipped = len(self.my_units()) - len(todo)
        if not todo:
            self.console.print(f"{stage}: all {skipped} units already done")
            return
        for unit in todo:
            missing = [p for p in self._inputs(stage, unit) if not p.exists()]
            if missing:
                raise UserError(f"{stage} needs {missing[0]} (from an earlier stage); run the earlier stages first")
        with self._progress(stage, sum(u.size for u in todo)) as advance:
            for unit, outputs in execute_units(self, stage, todo, advance):
                self.ledger.commit(stage, unit.name, fingerprint, self._inputs(stage, unit), outputs)
        if skipped:
            self.console.print(f"{stage}: resumed, {skipped} units were already done")

    def _inputs(self, stage: str, unit: Unit) -> list[Path]:
        if stage == "plan":  # a labelled set's label tables: an edited label file re-plans
            spec = self.config.plan.labels
            if spec is None:
                return []
            return sorted(spec.path.glob("*.csv*")) if spec.path.is_dir() else [spec.path]
        if stage == "reports":
            return [self.layout.part("plan", unit.index)]
        if stage == "images":
            return [self.layout.part("plan", unit.index), self.layout.part("reports", unit.index)]
        return [*(self.layout.part(s, unit.index) for s in ("plan", "reports", "images")), self.layout.image_shard(unit.index)]

    @contextmanager
    def _progress(self, stage: str, total: int) -> Iterator[Callable[[int], None]]:
        columns = [TextColumn("{task.description:<9}"), BarColumn(), MofNCompleteColumn(), RateColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
        with Progress(*columns, console=self.console, transient=False) as progress:
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

    # ---- per-unit stages ----------------------------------------------------------------------------------
    def _write_part(self, table: pa.Table, path: Path) -> Path:
        with atomic_open(path, "wb") as handle:
            pq.write_table(table, handle, compression="zstd")
        return path

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

    def _plan_unit(self, unit: Unit, advance: Callable[[int], None]) -> list[Path]:
        table = self.run_plan.slice(unit.start, unit.size)
        advance(unit.size)
        return [self._write_part(table, self.layout.part("plan", unit.index))]

    @cached_property
    def report_writer(self):
        """One writer per process, so a local model is loaded once, not per unit."""
        from synthvlp.generation.writers import build_writer

        return build_writer(self.config)

    def _reports_unit(self, unit: Unit, advance: Callable[[int], None]) -> list[Path]:
        from synthvlp.generation.journal import Journal
        from synthvlp.generation.reports import write_reports

        # finished samples of an interrupted attempt at this unit, under these settings only
        journal = self.layout.journal(unit.index, self.fingerprint("reports"))
        plan = pq.read_table(self.layout.part("plan", unit.index))
        table = write_reports(self.config, plan, self.extractor, advance, journal=journal, writer=self.report_writer)
        part = self._write_part(table, self.layout.part("reports", unit.index))
        Journal(journal).remove()
        return [part]

    def _images_unit(self, unit: Unit, advance: Callable[[int], None]) -> list[Path]:
        from synthvlp.generation.images import render_images

        plan, reports = pq.read_table(self.layout.part("plan", unit.index)), pq.read_table(self.layout.part("reports", unit.index))
        batch = render_images(self.config, plan, reports, advance)
        attempts, rejections = self._regenerate(batch, plan, reports)
        shard = self.layout.image_shard(unit.index)
        write_shard(shard, batch.samples)
        columns = batch.columns.append_column("image_shard", pa.array([shard.name] * batch.columns.num_rows))
        columns = columns.append_column("image_attempts", pa.array(attempts, pa.int32()))
        columns = columns.append_column("image_rejections", pa.array(rejections, pa.string()))
        undrawable = self.layout.undrawable(unit.index)
        write_text_atomic(undrawable, json.dumps(batch.undrawable, sort_keys=True))
        outputs = [shard, undrawable, self._write_part(columns, self.layout.part("images", unit.index))]
        warnings = self.layout.image_warnings(unit.index)  # e.g. truncated prompts
        warnings.unlink(missing_ok=True)
        if batch.warnings:
            write_text_atomic(warnings, json.dumps(batch.warnings, sort_keys=True))
            outputs.append(warnings)
        return outputs

    def _regenerate(self, batch, plan: pa.Table, reports: pa.Table) -> tuple[list[int], list[str | None]]:
        """Re-render images that fail an image check, with a fresh per-sample seed, up to ``filter.regenerate``
        times; replace them in ``batch`` and return each sample's render count and rejected attempts' reasons.

        A sample that never passes keeps its last render; the filter stage rejects it and the report counts it."""
        from synthvlp.filtering.checks import failed_image_checks
        from synthvlp.generation.images import render_images

        cache = self.layout.cache
        impressions = reports.column("impression").to_pylist()
        failing = failed_image_checks(self.config, [s["png"] for s in batch.samples], cache, impressions)
        history = [[f"attempt 1: {', '.join(f)}"] if f else [] for f in failing]
        attempts = [1] * len(failing)
        todo = [i for i, f in enumerate(failing) if f]
        rows = batch.columns.to_pylist()
        for attempt in range(1, self.config.filter.regenerate + 1):
            if not todo:
                break
            redo = render_images(self.config, plan.take(todo), reports.take(todo), attempt=attempt)
            failing = failed_image_checks(self.config, [s["png"] for s in redo.samples], cache, [impressions[i] for i in todo])
            for position, i in enumerate(todo):
                batch.samples[i], rows[i], attempts[i] = redo.samples[position], redo.columns.slice(position, 1).to_pylist()[0], attempt + 1
                if failing[position]:
                    history[i].append(f"attempt {attempt + 1}: {', '.join(failing[position])}")
            todo = [i for position, i in enumerate(todo) if failing[position]]
        batch.columns = pa.Table.from_pylist(rows, schema=batch.columns.schema)
        return attempts, ["; ".join(h) if h else None for h in history]

    def _filter_unit(self, unit: Unit, advance: Callable[[int], None]) -> list[Path]:
        from synthvlp.filtering.checks import check_samples

        images = {str(s["__key__"]): s["png"] for s in read_shard(self.layout.image_shard(unit.index))}
        ids = pq.read_table(self.layout.part("images", unit.index), columns=["id"]).column("id").to_pylist()
        missing = [k for k in ids if k not in images]
        if missing:
            raise UserError(f"{self.layout.image_shard(unit.index)}: samples {missing[:3]} missing from the shard; delete it and rerun")
        rows = _append_columns(pq.read_table(self.layout.part("plan", unit.index)), pq.read_table(self.layout.part("reports", unit.index)), "reports").to_pylist()
        table, signatures = check_samples(self.config, rows, images, self.layout.cache, advance)
        signature_path = self.layout.signatures(unit.index)
        with atomic_open(signature_path, "wb") as handle:
            np.save(handle, signatures)
        return [signature_path, self._write_part(table, self.layout.part("filter", unit.index))]

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
            table = _append_columns(table, pa.concat_tables([pq.read_table(self.layout.part(stage, u.index)) for u in self.units()]), stage)
        selection = self.layout.selection
        if selection.exists() and self.ledger.is_recorded("balance", "global"):
            table = _append_columns(table, pq.read_table(selection), "balance")
        return table

    def write_manifest(self) -> None:
        table = self.joined_parts()
        if table is not None:
            schema.write_manifest(table, self.layout.manifest)

    # ---- global stages ------------------------------------------------------------------------------------
    def _run_global(self, stage: str) -> None:
        inputs = self._global_inputs(stage)
        done, why = self.ledger.check(stage, "global", self.fingerprint(stage), inputs)
        if done:
            self.console.print(f"{stage}: already done")
            return
        if why:
            self.console.print(f"[yellow]{stage}: {why}; redoing it")
        outputs = getattr(self, f"_{stage}_global")()
        if self.primary:
            self.ledger.commit(stage, "global", self.fingerprint(stage), self._global_inputs(stage), outputs)

    def _global_inputs(self, stage: str) -> list[Path]:
        if stage == "balance":
            if not self.stage_complete("filter"):
                raise UserError("balance needs every unit filtered; run the plan, reports, images and filter stages first")
            parts = [self.layout.part(s, u.index) for u in self.units() for s in PER_UNIT_STAGES]
            return parts + [self.layout.signatures(u.index) for u in self.units()] + [self.layout.image_shard(u.index) for u in self.units()]
        if stage == "pretrain":
            settings = self.config.pretrain
            real = [settings.real.csv] if settings.real is not None and settings.recipe != "synthetic" else []
            if settings.recipe == "real":
                return real
            shards = self.training_shards()
            if not shards:
                raise UserError("pretrain needs exported training shards; run the balance stage first")
            return shards + real
        checkpoint = self.layout.checkpoint
        if not checkpoint.exists():
            raise UserError(f"evaluate needs {checkpoint}; run the pretrain stage first")
        return [checkpoint, *self.dataset_shards("test")]

    def _balance_global(self) -> list[Path]:
        from synthvlp.filtering.selection import select_dataset

        joined = self.joined_parts()
        signatures = np.concatenate([np.load(self.layout.signatures(u.index)) for u in self.units()])
        selection, targets = select_dataset(self.config, joined.to_pylist(), signatures)
        chosen = {k for k, s in zip(selection.column("id").to_pylist(), selection.column("selected").to_pylist(), strict=True) if s}
        split_of = dict(zip(joined.column("id").to_pylist(), joined.column("split").to_pylist(), strict=True))
        shard_of: dict[str, str] = {}
        pending: dict[str, list[dict]] = {"train": [], "test": []}
        written: list[Path] = []
        counts = {"train": 0, "test": 0}

        def flush(split: str) -> None:
            name = f"{split}-{counts[split]:06d}.tar"
            write_shard(self.layout.dataset_shard(name), pending[split])
            for sample in pending[split]:
                shard_of[str(sample["__key__"])] = name
            written.append(self.layout.dataset_shard(name))
            counts[split] += 1
            pending[split] = []

        with self._progress("balance", len(chosen)) as advance:
            for unit in self.units():
                for sample in read_shard(self.layout.image_shard(unit.index)):
                    key = str(sample["__key__"])
                    if key in chosen:
                        split = split_of[key]
                        pending[split].append(sample)
                        advance(1)
                        if len(pending[split]) == self.config.run.shard_size:
                            flush(split)
            for split in ("train", "test"):
                if pending[split]:
                    flush(split)
        table = selection.append_column("shard", pa.array([shard_of.get(k) for k in selection.column("id").to_pylist()], pa.string()))
        path, targets_path = self.layout.selection, self.layout.balance_targets
        write_text_atomic(targets_path, json.dumps(targets, indent=1, sort_keys=True))
        return [*written, targets_path, self._write_part(table, path)]

    def _pretrain_global(self) -> list[Path]:
        from synthvlp.pretrain.engine import planned_samples, train

        settings = self.config.pretrain
        shards = self.training_shards()
        out = self.layout.pretrain
        planned = planned_samples(settings, shards, self.config.run.seed)
        steps = planned // settings.batch_size
        if settings.warmup_steps >= steps:
            self.console.print(f"[yellow]pretrain: warmup_steps ({settings.warmup_steps}) is not below the run's {steps} steps, so the learning rate "
                               f"never leaves warm-up (it peaks at {steps / max(settings.warmup_steps, 1):.0%} of pretrain.lr); lower pretrain.warmup_steps")
        with self._progress("pretrain", planned) as advance:
            result = train(settings, shards, out, seed=self.config.run.seed, advance=advance, say=self.console.print)
        metrics = self.layout.pretrain_metrics
        if self.primary:
            write_text_atomic(metrics, json.dumps(result.__dict__, indent=2))
        self.console.print(
            f"pretrain: {result.steps} steps, final loss {result.final_loss:.4f}, {result.samples_per_second:.1f} samples/s "
            f"on {result.world_size} process(es); {len(result.skipped_images)} unreadable image(s) skipped -> {self.layout.checkpoint}"
        )
        return [self.layout.checkpoint, self.layout.pretrain_log, metrics]

    def _held_out_real(self, classes: Sequence[str]):
        """The real corpus's held-out pairs (``pretrain.real.holdout_fraction``, whole patients) as a labelled set:
        labels are the findings the entity extractor reads in each held-out report, as the label-aware targets are."""
        from synthvlp.evaluation.benchmarks import LabelledSet
        from synthvlp.pretrain.data import CsvSource
        from synthvlp.pretrain.labels import FindingLabels

        held = CsvSource(self.config.pretrain.real, self.config.run.seed, held_out=True)
        reader = FindingLabels()
        columns = [reader.names.index(c) for c in classes if c in reader.names]
        kept = [c for c in classes if c in reader.names]
        labels = np.stack([reader(text).numpy()[columns] for text in held.texts]).astype(np.float32)
        return LabelledSet("real-heldout", list(held.paths), list(held.keys), kept, labels)

    def _evaluate_global(self) -> list[Path]:
        """Zero-shot tables on the synthetic test split and every configured benchmark, then ``results.md``."""
        import shutil

        from synthvlp.evaluation.benchmarks import load_benchmark
        from synthvlp.evaluation.harness import LoadedModel, evaluate_set, probe_set, write_results
        from synthvlp.models import load_clip_checkpoint

        settings = self.config.evaluate
        classes = settings.classes or self.config.plan.findings
        out = self.layout.evaluate
        checkpoint = self.layout.checkpoint
        loaded = LoadedModel(*load_clip_checkpoint(checkpoint))
        floor = LoadedModel(*load_clip_checkpoint(checkpoint, random_init_seed=self.config.run.seed)) if settings.floor else None
        test_shards = self.dataset_shards("test")
        holds_out = self.config.pretrain.real is not None and self.config.pretrain.recipe != "synthetic" and self.config.pretrain.real.holdout_fraction > 0
        if not test_shards and not settings.benchmarks and not holds_out:
            raise UserError("evaluate: the run has no test split and evaluate.benchmarks is empty; raise run.test_fraction "
                            "or list the held-out sets to score (e.g. the test split of the runs a mixed recipe trains on)")
        own = SYNTHETIC_TEST if self.config.plan.labels is None else REAL_TEST
        sets = [(own, None)] if test_shards else []  # (title, BenchmarkSpec or None for our own test split)
        skipped = [] if test_shards else ["the run's own test split: it has none (its training data comes from elsewhere)"]
        real = self.config.pretrain.real
        if real is not None and self.config.pretrain.recipe != "synthetic" and real.holdout_fraction > 0:
            sets.append(("real-heldout", None))
        for spec in settings.benchmarks:
            title = spec.folder_name  # a plain name (checked in the config), so results stay inside evaluate/
            if not spec.path.exists():
                if not spec.optional:
                    raise UserError(f"evaluate.benchmarks: {title}: {spec.path} not found")
                skipped.append(f"{title}: {spec.path} absent")
                continue
            sets.append((title, spec))
        for stale in {p.name for p in out.iterdir() if p.is_dir()} - {title for title, _ in sets} if out.is_dir() else ():
            shutil.rmtree(out / stale)  # a benchmark dropped from the config leaves no stale table behind
        written = []
        for title, spec in sets:
            if spec is not None:
                whole = load_benchmark(spec.name, spec.path, **spec.adapter_options())
            else:
                whole = self._held_out_real(classes) if title == "real-heldout" else load_benchmark("shards", test_shards, classes=classes)
            labelled = whole.only_split(spec.split) if spec is not None and spec.split is not None else whole
            with self._progress(f"evaluate {title}", len(labelled)) as advance:
                written += evaluate_set(loaded, labelled, classes, settings, out / title, seed=self.config.run.seed, advance=advance, floor=floor)
            if spec is not None and spec.linear_probe:
                self.console.print(f"evaluate {title}: linear probe at {settings.finetune_fractions} of the train split, seeds {settings.finetune_seeds}")
                written += probe_set(loaded, whole, classes, settings, out / title)
        write_text_atomic(self.layout.evaluate_skipped, json.dumps(skipped, indent=1))
        written.append(self.layout.evaluate_skipped)
        return [*written, write_results(out, f"Evaluation of {self.config.run.name}")]


def _append_columns(table: pa.Table, columns: pa.Table, stage: str) -> pa.Table:
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
