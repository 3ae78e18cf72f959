"""The staged runner: resuming, sharding, progress and file layout; the stages themselves stay pure.

Per-sample stages (plan, reports, images, filter) work in units of ``run.shard_size`` samples. A unit's outputs
are written atomically and then committed to the ledger; on rerun a committed unit whose outputs, inputs and
settings still check out is skipped, and anything else is redone with the reason printed. ``--shard i/n`` gives
a process the units ``u`` with ``u % n == i``, so several machines can share a run folder. Global stages
(balance, pretrain, evaluate) run only in an unsharded invocation.

Run folder layout::

    config.yaml run.json manifest.parquet report.md plots/
    parts/<stage>/part-000000.parquet      per-unit manifest columns
    images/shard-000000.tar                rendered samples (WebDataset)
    dataset/{train,test}-000000.tar        the selected samples, for training and evaluation
    pretrain/  evaluate/                   model checkpoint and results
    .state/<stage>/<unit>.json             ledger records
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from synthvlp import schema
from synthvlp.config import STAGES, RunConfig
from synthvlp.errors import UserError
from synthvlp.store import Ledger, atomic_open, read_shard, sweep_stale_temp, write_shard, write_text_atomic

PER_UNIT_STAGES = ("plan", "reports", "images", "filter")
GLOBAL_STAGES = ("balance", "pretrain", "evaluate")

STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "plan": ("run", "plan"),
    "reports": ("run", "plan", "reports"),
    "images": ("run", "plan", "reports", "images"),
    "filter": ("run", "plan", "reports", "images", "filter"),
    "balance": ("run", "plan", "reports", "images", "filter", "balance"),
    "pretrain": ("run", "plan", "reports", "images", "filter", "balance", "pretrain"),
    "evaluate": ("run", "plan", "reports", "images", "filter", "balance", "pretrain", "evaluate"),
}
"""Config sections each stage's output depends on (its own and its upstream stages')."""


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

    @cached_property
    def ledger(self) -> Ledger:
        return Ledger(self.run_dir)

    # ---- layout -------------------------------------------------------------------------------------------
    def units(self) -> list[Unit]:
        size, total = self.config.run.shard_size, self.config.run.n_samples
        return [Unit(i, i * size, min(total, (i + 1) * size)) for i in range(math.ceil(total / size))]

    def my_units(self) -> list[Unit]:
        index, count = self.shard
        return [u for u in self.units() if u.index % count == index]

    def part(self, stage: str, unit: Unit) -> Path:
        return self.run_dir / "parts" / stage / f"part-{unit.index:06d}.parquet"

    def image_shard(self, unit: Unit) -> Path:
        return self.run_dir / "images" / f"shard-{unit.index:06d}.tar"

    def dataset_shards(self, split: str) -> list[Path]:
        selection = self.run_dir / "parts" / "balance" / "selection.parquet"
        if not selection.exists():
            return []
        names = {s for s in pq.read_table(selection, columns=["shard"]).column("shard").to_pylist() if s and s.startswith(f"{split}-")}
        return [self.run_dir / "dataset" / name for name in sorted(names)]

    def fingerprint(self, stage: str) -> str:
        plain = self.config.to_plain()
        plain["run"] = {k: v for k, v in plain["run"].items() if k not in ("name", "out_dir")}
        chosen = {name: plain[name] for name in STAGE_SECTIONS[stage]}
        return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]

    # ---- running ------------------------------------------------------------------------------------------
    def run(self, stages: Sequence[str] = STAGES) -> None:
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise UserError(f"--stages: unknown stage(s) {unknown}; stages are {', '.join(STAGES)}")
        ordered = [s for s in STAGES if s in stages]
        stale = sweep_stale_temp(self.run_dir)
        if stale:
            self.console.print(f"[yellow]removed {stale} partial file(s) left by an interrupted run")
        sharded = self.shard != (0, 1)
        for stage in ordered:
            if stage in PER_UNIT_STAGES:
                self._run_per_unit(stage)
            elif sharded:
                self.console.print(f"[yellow]{stage}: skipped under --shard {self.shard[0]}/{self.shard[1]}; run without --shard once all shards finish")
            else:
                self._run_global(stage)
        if not sharded:
            self.write_manifest()
            from synthvlp.report import write_report

            write_report(self)
            self.console.print(f"[green]report: {self.run_dir / 'report.md'}")

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
        with self._progress(stage, sum(u.size for u in todo)) as advance:
            for unit in todo:
                missing = [p for p in self._inputs(stage, unit) if not p.exists()]
                if missing:
                    raise UserError(f"{stage} needs {missing[0]} (from an earlier stage); run the earlier stages first")
                outputs = getattr(self, f"_{stage}_unit")(unit, advance)
                self.ledger.commit(stage, unit.name, fingerprint, self._inputs(stage, unit), outputs)
        if skipped:
            self.console.print(f"{stage}: resumed, {skipped} units were already done")

    def _inputs(self, stage: str, unit: Unit) -> list[Path]:
        if stage == "plan":
            return []
        if stage == "reports":
            return [self.part("plan", unit)]
        if stage == "images":
            return [self.part("plan", unit), self.part("reports", unit)]
        return [self.part("reports", unit), self.part("images", unit), self.image_shard(unit)]

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

    def _plan_unit(self, unit: Unit, advance: Callable[[int], None]) -> list[Path]:
        from synthvlp.generation.plan import check_findings, plan_samples

        check_findings(self.config, self.vocabulary)
        table = plan_samples(self.config, self.vocabulary, range(unit.start, unit.stop))
        advance(unit.size)
        return [self._write_part(table, self.part("plan", unit))]

    def _reports_unit(self, unit: Unit, advance: Callable[[int], None]) -> list[Path]:
        from synthvlp.generation.reports import write_reports

        table = write_reports(self.config, pq.read_table(self.part("plan", unit)), self.extractor, advance)
        return [self._write_part(table, self.part("reports", unit))]

    def _images_unit(self, unit: Unit, advance: Callable[[int], None]) -> list[Path]:
        from synthvlp.generation.images import render_images

        batch = render_images(self.config, pq.read_table(self.part("plan", unit)), pq.read_table(self.part("reports", unit)), advance)
        shard = self.image_shard(unit)
        write_shard(shard, batch.samples)
        columns = batch.columns.append_column("image_shard", pa.array([shard.name] * batch.columns.num_rows))
        warnings = self.run_dir / "parts" / "images" / f"undrawable-{unit.index:06d}.json"
        write_text_atomic(warnings, json.dumps(batch.undrawable, sort_keys=True))
        return [shard, warnings, self._write_part(columns, self.part("images", unit))]

    def _filter_unit(self, unit: Unit, advance: Callable[[int], None]) -> list[Path]:
        from synthvlp.filtering.checks import check_samples

        images = {str(s["__key__"]): s["png"] for s in read_shard(self.image_shard(unit))}
        ids = pq.read_table(self.part("images", unit), columns=["id"]).column("id").to_pylist()
        missing = [k for k in ids if k not in images]
        if missing:
            raise UserError(f"{self.image_shard(unit)}: samples {missing[:3]} missing from the shard; delete it and rerun")
        table = check_samples(self.config.filter, ids, images, pq.read_table(self.part("reports", unit)), advance)
        return [self._write_part(table, self.part("filter", unit))]

    # ---- manifest -----------------------------------------------------------------------------------------
    def stage_complete(self, stage: str) -> bool:
        return all(self.ledger.is_recorded(stage, u.name) for u in self.units())

    def joined_parts(self) -> pa.Table | None:
        """All per-unit columns of the stages that finished every unit, side by side in sample order."""
        if not self.stage_complete("plan"):
            return None
        table = pa.concat_tables([pq.read_table(self.part("plan", u)) for u in self.units()])
        for stage in PER_UNIT_STAGES[1:]:
            if not self.stage_complete(stage):
                break
            table = _append_columns(table, pa.concat_tables([pq.read_table(self.part(stage, u)) for u in self.units()]), stage)
        selection = self.run_dir / "parts" / "balance" / "selection.parquet"
        if selection.exists() and self.ledger.is_recorded("balance", "global"):
            table = _append_columns(table, pq.read_table(selection), "balance")
        return table

    def write_manifest(self) -> None:
        table = self.joined_parts()
        if table is not None:
            schema.write_manifest(table, self.run_dir / "manifest.parquet")

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
        self.ledger.commit(stage, "global", self.fingerprint(stage), self._global_inputs(stage), outputs)

    def _global_inputs(self, stage: str) -> list[Path]:
        if stage == "balance":
            if not self.stage_complete("filter"):
                raise UserError("balance needs every unit filtered; run the plan, reports, images and filter stages first")
            return [self.part(s, u) for u in self.units() for s in PER_UNIT_STAGES] + [self.image_shard(u) for u in self.units()]
        if stage == "pretrain":
            shards = self.dataset_shards("train")
            if not shards:
                raise UserError("pretrain needs exported training shards; run the balance stage first")
            return shards
        checkpoint = self.run_dir / "pretrain" / "checkpoint.pt"
        if not checkpoint.exists():
            raise UserError(f"evaluate needs {checkpoint}; run the pretrain stage first")
        return [checkpoint, *self.dataset_shards("test")]

    def _balance_global(self) -> list[Path]:
        from synthvlp.filtering.balance import select_samples

        joined = self.joined_parts()
        selection = select_samples(self.config.balance, joined)
        chosen = {k for k, s in zip(selection.column("id").to_pylist(), selection.column("selected").to_pylist(), strict=True) if s}
        split_of = dict(zip(joined.column("id").to_pylist(), joined.column("split").to_pylist(), strict=True))
        shard_of: dict[str, str] = {}
        pending: dict[str, list[dict]] = {"train": [], "test": []}
        written: list[Path] = []
        counts = {"train": 0, "test": 0}

        def flush(split: str) -> None:
            name = f"{split}-{counts[split]:06d}.tar"
            write_shard(self.run_dir / "dataset" / name, pending[split])
            for sample in pending[split]:
                shard_of[str(sample["__key__"])] = name
            written.append(self.run_dir / "dataset" / name)
            counts[split] += 1
            pending[split] = []

        with self._progress("balance", len(chosen)) as advance:
            for unit in self.units():
                for sample in read_shard(self.image_shard(unit)):
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
        path = self.run_dir / "parts" / "balance" / "selection.parquet"
        return [*written, self._write_part(table, path)]

    def _pretrain_global(self) -> list[Path]:
        from synthvlp.pretrain.clip_trainer import train_clip

        shards = self.dataset_shards("train")
        out = self.run_dir / "pretrain"
        count = self._count_selected("train")
        batch = min(self.config.pretrain.batch_size, count)
        samples = self.config.pretrain.epochs * (count // batch) * batch  # the trainer drops each epoch's last partial batch
        with self._progress("pretrain", samples) as advance:
            result = train_clip(self.config.pretrain, shards, out, seed=self.config.run.seed, advance=advance)
        metrics = out / "metrics.json"
        write_text_atomic(metrics, json.dumps(result.__dict__, indent=2))
        return [out / "checkpoint.pt", out / "log.csv", metrics]

    def _count_selected(self, split: str) -> int:
        joined = self.joined_parts()
        rows = joined.select(["split", "selected"]).to_pylist()
        return sum(1 for r in rows if r["selected"] and r["split"] == split)

    def _evaluate_global(self) -> list[Path]:
        from synthvlp.evaluation.zeroshot import load_labelled_images, plot_roc, score_classes, zero_shot_probabilities
        from synthvlp.models import load_clip_checkpoint

        classes = self.config.evaluate.classes or self.config.plan.findings
        out = self.run_dir / "evaluate"
        model, preprocess, tokenizer = load_clip_checkpoint(self.run_dir / "pretrain" / "checkpoint.pt")
        images, labels = load_labelled_images(self.dataset_shards("test"), preprocess, classes)
        if images.shape[0] == 0:
            raise UserError("evaluate: the test split is empty; raise run.test_fraction or run.n_samples")
        probabilities = zero_shot_probabilities(model, tokenizer, images, classes)
        results = score_classes(probabilities, labels, classes, self.config.evaluate.bootstrap, seed=self.config.run.seed)
        table = pa.Table.from_pylist([r.__dict__ for r in results])
        csv_path = out / "zeroshot.csv"
        with atomic_open(csv_path, "wb") as handle:
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, handle)
        roc = out / "roc.png"
        plot_roc(probabilities, labels, classes, roc)
        return [csv_path, roc]


def _append_columns(table: pa.Table, columns: pa.Table, stage: str) -> pa.Table:
    """Add a stage's columns; every stage keeps the plan's sample order, which is checked, not assumed."""
    if not columns.column("id").equals(table.column("id")):
        raise UserError(f"parts/{stage}: sample ids do not line up with the plan; delete parts/{stage} and .state/{stage} and rerun")
    for name in columns.column_names:
        if name != "id":
            table = table.append_column(name, columns.column(name))
    return table
