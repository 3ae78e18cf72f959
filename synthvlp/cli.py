"""The ``synthvlp`` command line.

User errors (bad config, missing files, a full disk) print one clear message and exit with status 2; a
traceback means a bug. Heavy libraries are imported inside commands so ``--help`` answers at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from synthvlp import __version__
from synthvlp.config import STAGES, dump_yaml, load_config
from synthvlp.errors import UserError

if TYPE_CHECKING:
    from synthvlp.serving.vllm_launcher import VllmSettings

app = typer.Typer(
    name="synthvlp",
    help=(
        "Build medical vision-language models from synthetic chest X-ray data.\n\n"
        "A run turns one YAML config into synthetic image-report pairs (plan -> reports -> images -> filter -> "
        "balance), a CLIP-style model (pretrain) and a zero-shot evaluation (evaluate), all in the folder "
        "run.out_dir. Reruns resume where a run stopped. Start with: synthvlp run configs/quickstart.yaml"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every subcommand
)
config_app = typer.Typer(help="Inspect run configs.", no_args_is_help=True)
app.add_typer(config_app, name="config")
console = Console(stderr=True)

ConfigArg = Annotated[Path, typer.Argument(help="Run config (YAML). See configs/quickstart.yaml.", show_default=False)]


def _parse_shard(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        raise UserError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if not sep or n < 1 or not 0 <= i < n:
        raise UserError(f"--shard {text!r}: expected i/n with 0 <= i < n, e.g. 0/4")
    return i, n


@app.command()
def run(
    config: ConfigArg,
    overrides: Annotated[list[str] | None, typer.Argument(help="key.path=value overrides, e.g. run.n_samples=500.", show_default=False)] = None,
    stages: Annotated[str, typer.Option(help=f"Comma-separated stages to run, in order: {','.join(STAGES)}.")] = ",".join(STAGES),
    shard: Annotated[str, typer.Option(help="Run only part i of n of the per-sample stages (e.g. 0/4), for several machines.")] = "0/1",
    force: Annotated[bool, typer.Option(help="Reuse a run folder made by a different config; stages whose settings changed are redone.")] = False,
) -> None:
    """Run the pipeline stages of CONFIG in its run folder, resuming any finished work.

    One run at a time per folder: a second is refused, naming the first's PID and host; --shard i/n runs share it.
    """
    from synthvlp.runfolder import prepare_run_folder, run_folder_lock
    from synthvlp.runner import Runner, checked_stages

    part = _parse_shard(shard)  # arguments first: a typo must not create or claim a run folder
    wanted = checked_stages([s.strip() for s in stages.split(",") if s.strip()])
    resolved = load_config(config, overrides or [])
    with run_folder_lock(resolved.run.out_dir, part):
        run_dir = prepare_run_folder(resolved, force=force)
        Runner(resolved, run_dir, console=console, shard=part).run(wanted)


@app.command()
def status(run_dir: Annotated[Path, typer.Argument(help="A run folder (the config's run.out_dir).", show_default=False)]) -> None:
    """Show each stage of a run as done, partial, stale (its settings or inputs changed since it ran) or todo, with counts."""
    from synthvlp.runfolder import open_existing_run
    from synthvlp.runner import PER_UNIT_STAGES, Runner

    runner = Runner(open_existing_run(run_dir), run_dir, console=console)
    table = Table(title=f"{run_dir}")
    for column in ("stage", "state", "units done", "samples done", "note"):
        table.add_column(column)
    units = runner.units()
    for stage in STAGES:
        names = [u.name for u in units] if stage in PER_UNIT_STAGES else ["global"]
        done = [runner.ledger.is_recorded(stage, n) for n in names]
        samples = sum(u.size for u, d in zip(units, done, strict=False) if d) if stage in PER_UNIT_STAGES else None
        stale = runner.stale(stage)
        state = "stale" if stale else "done" if all(done) else "partial" if any(done) else "todo"
        style = {"done": "green", "partial": "yellow", "stale": "red", "todo": "dim"}[state]
        table.add_row(stage, f"[{style}]{state}", f"{sum(done)}/{len(names)}", "-" if samples is None else f"{samples}/{runner.config.run.n_samples}",
                      f"{stale}; synthvlp run redoes it" if stale else "")
    Console().print(table)


@config_app.command("show")
def config_show(config: ConfigArg, overrides: Annotated[list[str] | None, typer.Argument(help="key.path=value overrides.", show_default=False)] = None) -> None:
    """Print the resolved config: CONFIG with defaults filled in and overrides applied."""
    typer.echo(dump_yaml(load_config(config, overrides or [])), nl=False)


models_app = typer.Typer(help="Model configs for pretrain.model (ours and open_clip's).")
app.add_typer(models_app, name="models")


@models_app.callback(invoke_without_command=True)
def models(ctx: typer.Context) -> None:
    """List model configs; `synthvlp models` alone is `synthvlp models list`."""
    if ctx.invoked_subcommand is None:
        models_list()


@models_app.command("list")
def models_list(ours: Annotated[bool, typer.Option("--ours", help="Only synthvlp's own configs, with their towers.")] = False) -> None:
    """List the model configs that pretrain.model accepts; ours are marked and described."""
    from synthvlp.models import MODEL_CONFIG_DIR, describe_model, list_models

    own = {p.stem for p in MODEL_CONFIG_DIR.glob("*.json")}
    for name in list_models():
        if name in own:
            typer.echo(f"{name}  (synthvlp)  {describe_model(name)}")
        elif not ours:
            typer.echo(name)


class _DefaultCommandGroup(TyperGroup):
    """A group whose first argument, when it names no subcommand, goes to a default one: ``synthvlp pretrain
    CONFIG`` trains the CLIP/GLoRIA model and ``synthvlp pretrain rasd RASD_CONFIG`` is a real subcommand."""

    default = "model"

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default, *args]
        return super().parse_args(ctx, args)

    def format_help(self, ctx: typer.Context, formatter) -> None:
        command = self.commands[self.default]
        command.format_help(type(ctx)(command, info_name=ctx.info_name, parent=ctx.parent), formatter)


pretrain_app = typer.Typer(
    cls=_DefaultCommandGroup, no_args_is_help=True,
    help="Pre-train a CLIP/ConVIRT or GLoRIA model on a run's data (synthvlp pretrain CONFIG), or an image encoder with RaSD (synthvlp pretrain rasd RASD_CONFIG).",
)
app.add_typer(pretrain_app, name="pretrain")


@pretrain_app.command(
    "model", hidden=True,
    epilog=(
        "One process: synthvlp pretrain CONFIG. Several (one per GPU, or CPU processes over gloo): "
        "torchrun --nproc_per_node 2 -m synthvlp.cli pretrain CONFIG. pretrain.batch_size is the global batch. "
        "RaSD: synthvlp pretrain rasd RASD_CONFIG \\[overrides] (see synthvlp pretrain rasd -h, configs/rasd-2d.yaml and docs/rasd.md)."
    ),
)
def pretrain(
    config: ConfigArg,
    overrides: Annotated[list[str] | None, typer.Argument(help="key.path=value overrides, e.g. pretrain.objective=gloria.", show_default=False)] = None,
    force: Annotated[bool, typer.Option(help="Retrain in a run folder made by a different config (e.g. another pretrain.objective); the new config is recorded and the evaluate stage becomes stale.")] = False,
) -> None:
    """Pre-train a CLIP/ConVIRT or GLoRIA model as CONFIG's pretrain section says, into run.out_dir/pretrain.

    This is the run's pretrain stage (synthvlp run CONFIG --stages pretrain): it is recorded in the run folder like any other stage, so synthvlp status shows the evaluation of an earlier model as stale and synthvlp run redoes it.

    Data: the run's exported shards (pretrain.recipe synthetic), a real CSV corpus (real) or both (mixed); see configs/recipes/.

    Resumable: rerun the same command after an interruption; it continues from the newest state in pretrain/state/ and ends with the weights an uninterrupted run would have.

    Writes checkpoint.pt (what the evaluate stage loads), log.csv, metrics.json and TensorBoard events.
    """
    import os

    from synthvlp.runfolder import prepare_run_folder, run_folder_lock
    from synthvlp.runner import Runner

    resolved = load_config(config, overrides or [])
    primary = os.environ.get("RANK", "0") == "0"  # under torchrun only the first process records; the others train
    if not primary:
        Runner(resolved, Path(resolved.run.out_dir), console=Console(stderr=True, quiet=True), primary=False).run(["pretrain"])
        return
    with run_folder_lock(resolved.run.out_dir):  # not beside a synthvlp run on this folder
        run_dir = prepare_run_folder(resolved, force=force)
        Runner(resolved, run_dir, console=console).run(["pretrain"])


@pretrain_app.command(
    "rasd", epilog="Several processes: torchrun --nproc_per_node 2 -m synthvlp.cli pretrain rasd RASD_CONFIG. See configs/rasd-2d.yaml and docs/rasd.md."
)
def pretrain_rasd(
    config: Annotated[Path, typer.Argument(help="RaSD config (YAML), e.g. configs/rasd-2d.yaml.", show_default=False)],
    overrides: Annotated[list[str] | None, typer.Argument(help="key.path=value overrides, e.g. train.steps=100.", show_default=False)] = None,
) -> None:
    """Pre-train a dense image encoder on randomized synthetic structures (RaSD), into the config's train.out_dir.

    Resumable like synthvlp pretrain; writes the encoder in the format pretrain.image_encoder and synthvlp finetune --protocol segmentation read.
    """
    import os

    from rich.progress import Progress

    from synthvlp.pretrain.rasd_engine import train_rasd
    from synthvlp.rasd import RaSDConfig
    from synthvlp.runner import progress_columns

    resolved = load_config(config, overrides or [], model=RaSDConfig)
    main_process = os.environ.get("RANK", "0") == "0"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    with Progress(*progress_columns("rasd"), console=console, disable=not main_process) as progress:
        task = progress.add_task("rasd", total=resolved.train.steps * resolved.stream.batch_size * world)
        result = train_rasd(resolved, advance=lambda n: progress.advance(task, n), say=console.print)
    if main_process:
        console.print(f"pretrain rasd: {result.steps} steps, final loss {result.final_loss:.4f}, {result.samples_per_second:.1f} samples/s "
                      f"on {result.world_size} process(es) -> {result.backbone}")


entities_app = typer.Typer(help="The CXR entity vocabulary and extractor.", no_args_is_help=True)
app.add_typer(entities_app, name="entities")


@entities_app.command("stats")
def entities_stats(
    corpus: Annotated[Path, typer.Argument(help="IU X-ray XML folder or .tgz, a CSV/Parquet with a text column, or a run's manifest.parquet.", show_default=False)],
    out: Annotated[Path, typer.Option(help="Folder for the count table (CSV, Parquet), plots and summary.json.")] = Path("entity-stats"),
    text_column: Annotated[str | None, typer.Option(help="Text column of a CSV/Parquet corpus (guessed when omitted).")] = None,
) -> None:
    """Count entities by category and assertion and measure how long-tailed the corpus is (Gini, entropy, ...)."""
    import json

    from synthvlp.entities.stats import run_stats

    summary = run_stats(corpus, out, text_column=text_column)
    typer.echo(json.dumps(summary, indent=2, default=str))


@entities_app.command("extract")
def entities_extract(
    texts: Annotated[list[str] | None, typer.Argument(help="Report texts to read (quote each one).", show_default=False)] = None,
    corpus: Annotated[Path | None, typer.Option(help="Instead of TEXTS: an IU X-ray XML folder or .tgz, a CSV/Parquet with a text column, or a run's manifest.parquet.")] = None,
    text_column: Annotated[str | None, typer.Option(help="Text column of a CSV/Parquet corpus (guessed when omitted).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write one row per mention to this .csv or .parquet instead of printing JSON lines.")] = None,
) -> None:
    """Extract CXR entities (category, assertion, laterality, character span) from report texts or a corpus.

    Prints one JSON line per text: {"id", "entities": [{"canonical", "category", "assertion", "laterality", "start", "end", "surface"}]}. Example: synthvlp entities extract "Small left pleural effusion. No pneumothorax."
    """
    import json

    from synthvlp.entities import EntityExtractor
    from synthvlp.entities.corpus import Report, read_corpus

    if bool(texts) == (corpus is not None):
        raise UserError("entities extract: give report TEXTS or --corpus PATH (one of the two)")
    if out is not None and out.suffix not in (".csv", ".parquet"):
        raise UserError(f"--out {out}: expected a .csv or .parquet file")
    reports = list(read_corpus(corpus, text_column)) if corpus is not None else [Report(str(i), t) for i, t in enumerate(texts or [])]
    fields = ("start", "end", "surface", "canonical", "category", "assertion", "laterality")
    found = EntityExtractor().extract([r.text for r in reports])
    if out is None:
        for report, mentions in zip(reports, found, strict=True):
            typer.echo(json.dumps({"id": report.id, "entities": [{k: getattr(m, k) for k in fields} for m in mentions]}))
        return
    import pandas as pd

    from synthvlp.store import atomic_open

    rows = [{"id": r.id, **{k: getattr(m, k) for k in fields}} for r, mentions in zip(reports, found, strict=True) for m in mentions]
    frame = pd.DataFrame(rows, columns=["id", *fields])
    with atomic_open(out, "wb") as handle:
        if out.suffix == ".parquet":
            frame.to_parquet(handle, index=False)
        else:
            handle.write(frame.to_csv(index=False).encode())
    console.print(f"{len(rows)} mentions in {len(reports)} reports -> {out}")


filter_app = typer.Typer(help="Quality filters outside a run.", no_args_is_help=True)
app.add_typer(filter_app, name="filter")


@filter_app.command("real")
def filter_real(
    csv: Annotated[Path, typer.Argument(help="CSV with an image-path column and a report column (MIMIC-CXR layout).", show_default=False)],
    out: Annotated[Path, typer.Option(help="Folder for verdicts.parquet and cleaned.csv.")],
    config: Annotated[Path | None, typer.Option(help="Run config whose filter section sets the thresholds (defaults if omitted).")] = None,
    image_column: Annotated[str, typer.Option(help="Column of image paths, relative to the CSV's folder or absolute.")] = "image",
    text_column: Annotated[str, typer.Option(help="Column of report text.")] = "text",
    size: Annotated[int, typer.Option(help="Images are checked after resizing to size x size.")] = 256,
) -> None:
    """Run the image and text checks on a real paired dataset and write a cleaned CSV for real or mixed recipes."""
    from rich.progress import Progress

    from synthvlp.filtering.real import filter_real_dataset

    settings = load_config(config).filter
    with Progress(console=console) as progress:
        task = progress.add_task("filter", total=None)
        counts = filter_real_dataset(csv, out, settings, image_column, text_column, size, advance=lambda n: progress.advance(task, n))
    for key, value in counts.items():
        typer.echo(f"{key}: {value}")
    typer.echo(f"cleaned split: {out / 'cleaned.csv'}")


render_app = typer.Typer(help="Look at rendered images, measure their realism, train a diffusion renderer.", no_args_is_help=True)
app.add_typer(render_app, name="render")


@render_app.command("preview")
def render_preview(
    run_dir: Annotated[Path, typer.Argument(help="A run folder whose images stage has run.", show_default=False)],
    out: Annotated[Path, typer.Option(help="Contact sheet PNG to write.")] = Path("preview.png"),
    n: Annotated[int, typer.Option(min=1, help="Samples to show (the first N of the run).")] = 16,
    columns: Annotated[int, typer.Option(min=1, help="Tiles per row.")] = 4,
    tile: Annotated[int, typer.Option(min=32, help="Tile side in pixels (images are scaled to it).")] = 256,
) -> None:
    """Write a contact sheet of N samples: mask outlines in colour, the IMPRESSION and mask legend below each."""
    from synthvlp.generation.preview import contact_sheet, read_samples
    from synthvlp.runfolder import RunLayout
    from synthvlp.store import atomic_open

    sheet = contact_sheet(read_samples(RunLayout(run_dir), n), tile=tile, columns=columns)
    with atomic_open(out, "wb") as handle:
        sheet.save(handle, format="PNG")
    typer.echo(f"wrote {out}")


@render_app.command("realism")
def render_realism(
    source: Annotated[Path, typer.Argument(help="A run folder whose images stage has run, a folder of shard-*.tar files, or one shard.", show_default=False)],
    real: Annotated[Path, typer.Option(help="Real films: a folder of PNG/JPG (its labels.csv, if any, gives paths and split) or a CSV with a 'path' column (and optionally 'split').", show_default=False)],
    out: Annotated[Path | None, typer.Option(help="Folder for realism.md, realism.json, sheet.png and blocks.png (default: SOURCE/realism, or ./realism for a shard file).")] = None,
    size: Annotated[int, typer.Option(min=32, help="Both sets are compared at size x size pixels.")] = 256,
    limit: Annotated[int, typer.Option(min=20, help="At most this many films of each set.")] = 2000,
    steps: Annotated[int, typer.Option(min=1, help="Discriminator training steps per seed.")] = 300,
    seeds: Annotated[int, typer.Option(min=1, help="Discriminator seeds (0 .. N-1).")] = 5,
    input_size: Annotated[int, typer.Option(min=16, help="Discriminator input side (films are area-downsampled to it).")] = 64,
) -> None:
    """Measure how real rendered films look: a real-vs-rendered discriminator's held-out AUC, two linear probes
    (layout alone, intensity alone) that say what gives the films away, distribution distances beside the same
    distance between two halves of the real set, an interleaved contact sheet and a map of where rendered films are
    brighter or darker than real ones (blocks.png)."""
    import json

    from synthvlp.generation.realism import Protocol, cell_map, interleaved_sheet, load_real, load_rendered, measure
    from synthvlp.store import atomic_open, save_png, write_text_atomic

    rendered_films = load_rendered(source, size, limit)
    real_films = load_real(real, size, limit)
    try:
        result = measure(real_films, rendered_films, Protocol(steps=steps, input_size=input_size, seeds=tuple(range(seeds))))
    except ValueError as exc:
        raise UserError(f"cannot compare {source} with {real}: {exc}") from exc
    folder = out if out is not None else (source / "realism" if source.is_dir() else Path("realism"))
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "realism.md", result.table())
    write_text_atomic(folder / "realism.json", json.dumps(result.as_dict(), indent=2) + "\n")
    with atomic_open(folder / "sheet.png", "wb") as handle:
        interleaved_sheet(real_films.images, rendered_films.images).save(handle, format="PNG")
    save_png(cell_map(result.probes.cell_auc), folder / "blocks.png", dpi=100)
    typer.echo(result.table())
    typer.echo(f"wrote {folder}/realism.md, realism.json, sheet.png and blocks.png")


@render_app.command("calibrate")
def render_calibrate(
    real: Annotated[Path, typer.Option(help="Real films: a folder of PNG/JPG (its labels.csv, if any, gives paths and split) or a CSV with a 'path' column; only training films are used when a split is given.", show_default=False)],
    out: Annotated[Path, typer.Option(help="Config fragment (YAML) to write; paste its images.appearance into a run config.")] = Path("appearance.yaml"),
    films: Annotated[int, typer.Option(min=20, help="Films rendered and compared per step (as many real ones are matched).")] = 160,
    size: Annotated[int, typer.Option(min=32, help="Films are compared at size x size pixels.")] = 256,
    iterations: Annotated[int, typer.Option(min=1, help="Search steps (each develops FILMS films).")] = 300,
    seed: Annotated[int, typer.Option(help="Seed of the rendered patients, the real-film split and the search.")] = 0,
    tone_levels: Annotated[int, typer.Option(min=0, help="Levels of the display look-up table fitted to the real films' histogram (0: none, ranges only).")] = 33,
) -> None:
    """Fit the phantom's exposure and display ranges (noise, blur, exposure, window) and a display look-up table
    (histogram matching) to real films and write them as a config fragment the renderer reads
    (images.appearance). Optional: the defaults need none."""
    import numpy as np
    from rich.progress import Progress

    from synthvlp.generation.realism import Films, load_real
    from synthvlp.generation.realism.calibrate import calibrate, fragment
    from synthvlp.store import write_text_atomic

    films_real = load_real(real, size)
    training = films_real.images[~films_real.held_out] if (~films_real.held_out).any() else films_real.images
    with Progress(console=console) as progress:
        task = progress.add_task("calibrate", total=iterations)
        try:
            fit = calibrate(Films(training, np.zeros(len(training), bool), []), films, size, iterations, seed,
                            progress=lambda step, best: progress.update(task, completed=step + 1, description=f"calibrate (objective {best:.2f})"),
                            tone_levels=tone_levels)
        except ValueError as exc:
            raise UserError(f"{real}: {exc}") from exc
    write_text_atomic(out, fragment(fit, str(real)))
    typer.echo(f"objective {fit.start:.2f} -> {fit.best:.2f} (3.0 = as close as real films are to each other)")
    typer.echo(f"wrote {out}; paste its images keys into a run config (they select images.phantom: projection)")


@render_app.command("train", epilog="See configs/render-nih-64.yaml and docs/rendering.md (Train your own renderer).")
def render_train(
    config: Annotated[Path, typer.Argument(help="Renderer training config (YAML), e.g. configs/render-nih-64.yaml.", show_default=False)],
    overrides: Annotated[list[str] | None, typer.Argument(help="key.path=value overrides, e.g. train.steps=100.", show_default=False)] = None,
    export_only: Annotated[bool, typer.Option(help="Write pipeline/ from the newest training state without training further.")] = False,
) -> None:
    """Train a text-to-image diffusion renderer on real image-report pairs into train.out_dir/pipeline, the folder
    images.diffusers.path renders from. Resumable: run it again after a stop and it continues. Under torchrun
    (torchrun --nproc_per_node N -m synthvlp.cli render train CONFIG) N processes share each global batch."""
    import os

    from rich.progress import Progress, TextColumn

    from synthvlp.config import RenderTrainConfig
    from synthvlp.pretrain.diffusion_engine import train_renderer
    from synthvlp.runner import progress_columns

    resolved = load_config(config, overrides or [], model=RenderTrainConfig)
    primary = os.environ.get("RANK", "0") == "0"  # under torchrun only the first process reports; the others train
    columns = progress_columns("render train", TextColumn("loss {task.fields[loss]:.4f}"))
    with Progress(*columns, console=console, disable=export_only or not primary) as progress:
        task = progress.add_task("render", total=resolved.train.steps * resolved.train.batch_size, loss=float("nan"))
        result = train_renderer(resolved, progress=lambda n, loss: progress.update(task, advance=n, loss=loss), say=console.print, export_only=export_only)
    if not primary:
        return
    if not export_only:
        console.print(f"render train: {result.steps} steps on {result.training_pairs} films on {result.world_size} process(es), "
                      f"final loss {result.final_loss:.4f}, {result.samples_per_second:.2f} samples/s")
    typer.echo(f"wrote {result.pipeline} (images.backend: diffusers, images.diffusers.path: {result.pipeline})")


@app.command()
def serve(
    model: Annotated[str, typer.Argument(help="transformers: a local HF model folder or .gguf file. vllm: a model folder or hub id vLLM can load.", show_default=False)],
    engine: Annotated[str, typer.Option(help="'transformers': built-in server, batched, CPU or GPU. 'vllm': start `vllm serve` from --vllm-python.")] = "transformers",
    host: Annotated[str, typer.Option(help="Address to bind; the default answers this machine only.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port; clients use http://HOST:PORT/v1 as reports.base_urls.")] = 8000,
    api_key_env: Annotated[str, typer.Option(help="If this environment variable is set, requests must send its value as a Bearer key.")] = "SYNTHVLP_API_KEY",
    served_model_name: Annotated[str | None, typer.Option(help="Name /v1/models lists (default: the folder or file name).")] = None,
    device: Annotated[str, typer.Option(help="transformers: torch device (cpu, cuda, cuda:1).")] = "cpu",
    threads: Annotated[int | None, typer.Option(min=1, help="transformers: torch CPU threads (default: torch's choice, one per core; on a busy machine 1 can be many times faster).")] = None,
    max_batch: Annotated[int, typer.Option(help="transformers: most requests generated together.")] = 8,
    max_body_bytes: Annotated[int, typer.Option(help="transformers: larger request bodies get 413.")] = 1 << 20,
    max_tokens_limit: Annotated[int, typer.Option(min=1, help="transformers: larger max_tokens get 400 (keeps one request within seconds).")] = 512,
    max_request_tokens: Annotated[int, typer.Option(min=2, help="transformers: prompt + max_tokens above this (or the model's context) get 400.")] = 4096,
    request_timeout: Annotated[float, typer.Option(min=0.1, help="transformers: seconds before a request is cut off and answered 504.")] = 60.0,
    grace_period: Annotated[float, typer.Option(min=0.0, help="transformers: on SIGTERM or Ctrl-C, seconds requests in flight get to finish.")] = 30.0,
    vllm_python: Annotated[Path | None, typer.Option(help="vllm: python of the venv where vLLM is installed (vLLM pins its own torch).")] = None,
    max_model_len: Annotated[int, typer.Option(help="vllm: context length to reserve KV cache for.")] = 4096,
    tensor_parallel_size: Annotated[int, typer.Option(help="vllm: GPUs to shard the model over.")] = 1,
    startup_timeout: Annotated[float, typer.Option(help="vllm: seconds to wait for /health (large models load slowly).")] = 900.0,
    vllm_arg: Annotated[list[str] | None, typer.Option(help="vllm: extra argument passed through, repeatable (e.g. --vllm-arg=--quantization=fp8).")] = None,
) -> None:
    """Serve a model over an OpenAI-compatible API for the `openai` report backend.

    Example: synthvlp serve ./SmolLM2-135M-Instruct.gguf --port 8000 --threads 1, then run with
    reports.backend=openai 'reports.base_urls=\\[http://127.0.0.1:8000/v1]'. Stops cleanly on Ctrl-C or SIGTERM, letting requests
    in flight finish within --grace-period.

    One request cannot stall the others (transformers): bad fields get that request a 400, prompts are tokenised and
    refused when prompt + max_tokens exceeds --max-request-tokens or the model's context, and a request still
    running after --request-timeout is cut off and answered 504. A request whose client disconnects (gave up or
    timed out) is cancelled, so retries do not pile up; set the client's reports.timeout_s above one batch's
    generation time (GET /stats: busy_s / batches).
    """
    import os

    key = os.environ.get(api_key_env) or None
    if engine == "transformers":
        _serve_transformers(model, device, threads, host=host, port=port, grace_period_s=grace_period, max_batch=max_batch,
                            api_key=key, max_body_bytes=max_body_bytes, max_tokens_limit=max_tokens_limit,
                            max_request_tokens=max_request_tokens, request_timeout_s=request_timeout, model_name=served_model_name)
    elif engine == "vllm":
        if vllm_python is None:
            raise UserError("--engine vllm needs --vllm-python, the python of a separate venv where vLLM is installed")
        from synthvlp.serving.vllm_launcher import VllmSettings

        _serve_vllm(VllmSettings(model=model, python=vllm_python, host=host, port=port, max_model_len=max_model_len, api_key=key,
                                 tensor_parallel_size=tensor_parallel_size, served_model_name=served_model_name,
                                 extra_args=vllm_arg or []), startup_timeout)
    else:
        raise UserError(f"--engine {engine!r}: use 'transformers' or 'vllm'")


def _serve_transformers(model: str, device: str, threads: int | None, host: str, port: int, model_name: str | None, **options) -> None:
    """Load ``model`` into the local LLM engine and run the built-in server (``options``: its limits) until stopped."""
    import torch

    from synthvlp.llm.engine import LocalModel, check_model_path
    from synthvlp.serving.openai_server import serve as run_server

    check_model_path(model)
    if threads is not None:
        torch.set_num_threads(threads)
    console.print(f"loading {model} on {device} ({torch.get_num_threads()} CPU threads) ...")
    local = LocalModel(model, device)
    console.print(f"serving {model_name or local.name} at http://{host}:{port}/v1 (Ctrl-C stops)")
    run_server(local, host=host, port=port, model_name=model_name, **options)


def _serve_vllm(settings: VllmSettings, startup_timeout: float) -> None:
    """Start ``vllm serve`` with ``settings`` and wait on it; Ctrl-C or SIGTERM stops it."""
    import signal

    from synthvlp.serving.vllm_launcher import VllmServer

    server = VllmServer(settings)

    def interrupt(signum: int, frame: object) -> None:  # SIGTERM stops vLLM as cleanly as Ctrl-C does
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        server.start(timeout_s=startup_timeout)
        console.print(f"vllm serving {settings.model} at {server.base_url} (Ctrl-C stops)")
        server.process.wait()
    finally:
        server.stop()


def _wanted_classes(option: str | None, available: list[str], benchmark: str) -> list[str]:
    """--classes as harmonised names; without it, every class the benchmark labels except 'no finding'.

    A benchmark's own spelling (NIH's Effusion) and the harmonised one (pleural effusion) both work; a name the
    benchmark does not label is an error listing the accepted ones (with the closest, for a typo)."""
    import difflib

    from synthvlp.evaluation.labels import harmonise, normalise

    if not option:
        return [c for c in available if c != "no finding"]
    wanted = []
    for raw in (c for c in option.split(",") if c.strip()):
        try:
            name = harmonise(raw, benchmark)
        except UserError:
            name = normalise(raw)
        if name not in available:
            close = difflib.get_close_matches(name, available, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"--classes: {raw.strip()!r} is not labelled in {benchmark}{hint}; accepted: {', '.join(available)}, "
                            "or the benchmark's own spellings of them (e.g. NIH's Effusion)")
        wanted.append(name)
    return list(dict.fromkeys(wanted))


def _adapter_options(benchmark: str, images: Path | None, options: list[str] | None) -> dict[str, object]:
    """--images and --option KEY=VALUE as keyword options of the benchmark's adapter (values parsed as YAML)."""
    import yaml

    from synthvlp.evaluation.benchmarks import adapter_options

    declared = adapter_options(benchmark)
    chosen: dict[str, object] = {}
    if images is not None:
        if "images" not in declared:
            raise UserError(f"--images: benchmark {benchmark!r} reads its images from --data itself; its options: {', '.join(declared) or 'none'}")
        if not images.is_dir():
            raise UserError(f"--images {images}: not a folder")
        chosen["images"] = images
    for text in options or []:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--option {text!r}: expected KEY=VALUE, e.g. --option split=test")
        if key.strip() in chosen:
            raise UserError(f"--option {key.strip()}: given twice")
        chosen[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return chosen


def _evaluate_settings(checkpoint: Path, config: Path | None, prompts: Path | None, bootstrap: int | None) -> tuple[object, Path | None]:
    """The evaluate section the command uses: defaults, else CONFIG's (or, for a checkpoint inside a run folder,
    the run's config.yaml), with --prompts and --bootstrap on top; and the config file it came from."""
    import yaml

    from synthvlp.config import EvaluateSection
    from synthvlp.runfolder import RunLayout

    run = RunLayout(checkpoint.parent.parent)  # the run folder, if the checkpoint is in one's pretrain/
    source = config or (run.config if checkpoint.parent == run.pretrain and run.config.is_file() else None)
    settings = load_config(source).evaluate if source is not None else EvaluateSection()
    changes: dict[str, object] = {}
    if prompts is not None:
        if not prompts.is_file():
            raise UserError(f"--prompts {prompts}: not found")
        try:
            loaded = yaml.safe_load(prompts.read_text())
        except yaml.YAMLError as exc:
            raise UserError(f"--prompts {prompts}: malformed YAML ({exc})") from None
        keys = {"positive_prompts", "negative_prompts"}
        if not isinstance(loaded, dict) or not set(loaded) <= keys or not loaded:
            raise UserError(f"--prompts {prompts}: expected a mapping with positive_prompts and/or negative_prompts lists ({{name}} is the class)")
        changes.update(loaded)
    if bootstrap is not None:
        changes["bootstrap"] = bootstrap
    try:
        return EvaluateSection.model_validate({**settings.model_dump(), **changes}), source
    except ValueError as exc:
        raise UserError(f"--prompts {prompts}: {exc}") from None


class _EvaluateCommand(TyperCommand):
    """The evaluate command, whose help lists each adapter's declared options, read from the adapters only when
    the help is shown (importing them takes seconds)."""

    @property
    def epilog(self) -> str:
        from synthvlp.evaluation.benchmarks import describe_options

        return self._epilog + " Benchmarks and the options each adapter declares (--images is its images option, --option KEY=VALUE the others): " + describe_options() + "."

    @epilog.setter
    def epilog(self, value: str | None) -> None:
        self._epilog = value or ""


@app.command(
    cls=_EvaluateCommand,
    epilog=(
        "Example: synthvlp evaluate runs/quickstart/pretrain/checkpoint.pt --benchmark nih --data ../shared/data/label-files/Data_Entry_2017_v2020.csv.gz "
        "--images ../shared/data/nih-dev-64/images --threads 2. See docs/evaluation.md for the files each benchmark expects."
    ),
)
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="checkpoint.pt written by the pretrain stage.", show_default=False)],
    benchmark: Annotated[str, typer.Option(help="Benchmark adapter name.", show_default=False)],
    data: Annotated[list[Path], typer.Option(help="The benchmark's label file or folder, as published (once).", show_default=False)],
    images: Annotated[Path | None, typer.Option(help="Folder of the benchmark's images, when they are not beside the label file.")] = None,
    option: Annotated[list[str] | None, typer.Option(help="Another adapter option as KEY=VALUE, repeatable (the list below).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder; default: evaluate-<benchmark> beside the checkpoint.")] = None,
    split: Annotated[str | None, typer.Option(help="Evaluate one split of the benchmark only (e.g. test).")] = None,
    classes: Annotated[str | None, typer.Option(help="Comma-separated classes, as the benchmark spells them (Effusion) or harmonised (pleural effusion); default: the config's evaluate.classes, else every class the benchmark labels except 'no finding'. A wrong name lists the accepted ones.")] = None,
    config: Annotated[Path | None, typer.Option(help="Run config whose evaluate section (prompts, bootstrap, grounding, overlays, classes) applies; default: the run's config.yaml when the checkpoint is <run>/pretrain/checkpoint.pt.")] = None,
    prompts: Annotated[Path | None, typer.Option(help="YAML with positive_prompts and/or negative_prompts lists ({name} is the class); overrides the config's.")] = None,
    bootstrap: Annotated[int | None, typer.Option(help="Bootstrap resamples for the 95% CIs (default: the config's, else 200).")] = None,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads (default: torch's choice; 1-2 on a busy machine).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 64,
    floor_seed: Annotated[int | None, typer.Option(help="Also score a randomly initialised model of the checkpoint's architecture, built with this seed: the random-init floor, in the table's 'random init AUC' column and zeroshot_floor.csv (a run's evaluate stage scores it with the run's seed).")] = None,
) -> None:
    """Zero-shot classification, and grounding where the benchmark has boxes or masks, of a checkpoint on a real benchmark: results.md, zeroshot.csv with 95% CIs, ROC curves, grounding.csv and overlays.

    Scores the images on disk of those the label file lists and says how many that is; none on disk is an error. Boxes in another resolution than the images are rescaled where the benchmark's image size is known (NIH) and warned about otherwise. A class without positive or negative images is NaN with a note.
    """
    from synthvlp.evaluation.benchmarks import load_benchmark
    from synthvlp.evaluation.harness import CheckpointEvaluation, EvaluationSet, write_results

    if len(data) != 1:
        raise UserError(f"--data given {len(data)} times ({', '.join(map(str, data))}); give the label file or folder once, and the images folder as --images")
    [path] = data
    if not path.exists():
        raise UserError(f"--data {path}: not found")
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    settings, source = _evaluate_settings(checkpoint, config, prompts, bootstrap)
    if source is not None:
        console.print(f"evaluate settings (prompts, bootstrap, grounding) from {source}")
    evaluation = CheckpointEvaluation.load(checkpoint, settings, seed, _evaluate_bar, console.print, floor_seed=floor_seed, batch_size=batch_size)
    labelled = load_benchmark(benchmark, path, **_adapter_options(benchmark, images, option))
    if split is not None:
        labelled = labelled.only_split(split)
    wanted = _wanted_classes(classes, labelled.classes, benchmark) if classes or not settings.classes else settings.classes
    title = labelled.name if benchmark == "generic" else benchmark  # a generic CSV's results are named after it
    out = out or checkpoint.parent / f"evaluate-{title}"
    evaluation.score(EvaluationSet(title, labelled, wanted), out)
    console.print(f"scored {len(labelled):,} images" + (f" present of {len(labelled) + len(labelled.missing):,} listed" if labelled.missing else ""))
    console.print(f"results: {write_results(out, f'Evaluation of {checkpoint}')}")


@contextmanager
def _evaluate_bar(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """The evaluate command's progress bar for ``total`` images; yields the function that advances it."""
    from rich.progress import Progress

    from synthvlp.runner import progress_columns

    with Progress(*progress_columns("evaluate"), console=console) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


def _numbers(text: str, kind: type) -> list:
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{text!r}: expected comma-separated numbers, e.g. 0.01,0.1,1") from None


def _segmentation_rows(checkpoint: Path, data: Path, test_fraction: float, fractions: list[float], seeds: list[int], epochs: int) -> list[dict]:
    """``finetune --protocol segmentation``: the image tower of ``checkpoint`` (a CLIP checkpoint or an image
    encoder) in a U-Net against scratch, on a fixed split (seed 0) of the image/mask CSV ``data``."""
    from synthvlp.checkpoints import ClipCheckpoint, ImageEncoderCheckpoint, load
    from synthvlp.evaluation.segmentation import finetune_segmentation, input_size
    from synthvlp.evaluation.segmentation_data import load_segmentation_csv
    from synthvlp.models import image_tower

    record = load(checkpoint, ClipCheckpoint, ImageEncoderCheckpoint)
    tower = image_tower(record)
    train, test = load_segmentation_csv(data, input_size(tower)[0]).holdout(test_fraction)
    return finetune_segmentation(tower, record.model_name, train, test, fractions, seeds, epochs=epochs, say=console.print)


@app.command(
    epilog=(
        "Examples: synthvlp finetune runs/quickstart/pretrain/checkpoint.pt --benchmark nih --data ../shared/data/nih-dev-64; "
        "synthvlp finetune runs/rasd-2d/encoder.pt --protocol segmentation --data ../shared/data/covid-lungs/index.csv --fractions 0.1,1"
    )
)
def finetune(
    checkpoint: Annotated[Path, typer.Argument(help="checkpoint.pt of the pretrain stage (or, for segmentation, an image-encoder .pt).", show_default=False)],
    data: Annotated[Path, typer.Option(help="The benchmark's folder or label file; for segmentation a CSV of image and mask paths.", show_default=False)],
    benchmark: Annotated[str, typer.Option(help="Benchmark adapter (classification protocols).")] = "generic",
    protocol: Annotated[str, typer.Option(help="linear-probe, full (the image tower fine-tuned end to end) or segmentation (U-Net on the image tower).")] = "linear-probe",
    fractions: Annotated[str, typer.Option(help="Comma-separated label fractions of the training split.")] = "0.01,0.1,1",
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds; tables give a 95% t-interval over them.")] = "0,1,2",
    classes: Annotated[str | None, typer.Option(help="Comma-separated classes; default: every class the benchmark labels except 'no finding'.")] = None,
    epochs: Annotated[int, typer.Option(help="Epochs of full or segmentation fine-tuning.")] = 3,
    test_fraction: Annotated[float, typer.Option(help="segmentation: share of the images held out for testing (fixed split, seed 0).")] = 0.3,
    out: Annotated[Path | None, typer.Option(help="Output folder; default: finetune-<protocol> beside the checkpoint.")] = None,
) -> None:
    """Label-efficiency protocols on real data: linear probe or full fine-tuning at 1/10/100% of the training labels (AUC), or segmentation with the image tower in a U-Net, pretrained vs from scratch (Dice).

    Classification uses the benchmark's train and test splits; patients are never split between subsets. Writes <out>/<benchmark>/finetune.csv or segmentation.csv and <out>/finetune.md.
    """
    from synthvlp.evaluation.harness import finetune_markdown, write_finetune
    from synthvlp.store import write_text_atomic

    fraction_list, seed_list = _numbers(fractions, float), _numbers(seeds, int)
    out = out or checkpoint.parent / f"finetune-{protocol}"
    if not data.exists():
        raise UserError(f"--data {data}: not found")
    if protocol == "segmentation":
        rows = _segmentation_rows(checkpoint, data, test_fraction, fraction_list, seed_list, epochs)
        folder, name = out / data.parent.name, "segmentation"
    elif protocol in ("linear-probe", "full"):
        from synthvlp.evaluation.benchmarks import load_benchmark
        from synthvlp.evaluation.finetune import full_finetune, linear_probe
        from synthvlp.evaluation.harness import readable_images, restrict_classes
        from synthvlp.evaluation.inference import ImageTextEngine

        engine = ImageTextEngine.from_checkpoint(checkpoint)
        labelled = readable_images(load_benchmark(benchmark, data))
        wanted = _wanted_classes(classes, labelled.classes, benchmark)
        labelled, _ = restrict_classes(labelled, wanted)
        if labelled.split is None or not {"train", "test"} <= set(labelled.split):
            raise UserError(f"{benchmark} at {data}: fine-tuning needs train and test splits, and this set has {sorted(set(labelled.split or []))}")
        train, test = labelled.only_split("train"), labelled.only_split("test")
        run = linear_probe if protocol == "linear-probe" else full_finetune
        extra = {} if protocol == "linear-probe" else {"epochs": epochs}
        rows = run(engine, train, test, fraction_list, seed_list, say=console.print, **extra)
        folder, name = out / benchmark, "finetune"
    else:
        raise UserError(f"--protocol {protocol!r}: use linear-probe, full or segmentation")
    write_finetune(rows, folder, name)
    path = out / "finetune.md"
    write_text_atomic(path, "\n".join([f"# Fine-tuning {checkpoint}", "", *finetune_markdown(folder)]) + "\n")
    console.print(f"results: {path}")


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (their evaluate/) or folders written by synthvlp evaluate.", show_default=False)],
    out: Annotated[Path | None, typer.Option(help="Also write the tables as Markdown to this file.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Also plot each run's mean AUC (zero-shot, linear probe, random-init floor) per benchmark to this PNG.")] = None,
) -> None:
    """Zero-shot AUC of several runs side by side, one table per benchmark (e.g. real vs synthetic vs mixed), with
    each run's mean, random-init floor and linear probe under the classes."""
    from synthvlp.evaluation.compare import compare_runs, plot_comparison, tables_markdown
    from synthvlp.store import write_text_atomic

    tables = compare_runs(runs)
    for benchmark, rows in tables.items():
        table = Table(title=f"{benchmark}: zero-shot AUC (95% CI)")
        for column in rows[0]:
            table.add_column(column)
        for row in rows[1:]:
            table.add_row(*row)
        Console().print(table)
    if out is not None:
        write_text_atomic(out, tables_markdown(tables))
        console.print(f"written {out}")
    if plot is not None:
        plot_comparison(runs, plot)
        console.print(f"written {plot}")


@app.command(
    epilog=(
        "Then, with open_clip alone: model, _, preprocess = open_clip.create_model_and_transforms('local-dir:OUT'); "
        "tokenizer = open_clip.get_tokenizer('local-dir:OUT'). To train with open_clip_train on a run's shards: "
        "python -m synthvlp.interop --dataset-type webdataset --train-data 'RUN/dataset/train-{000000..000004}.tar' ... (docs/pretrain.md)."
    )
)
def export(
    checkpoint: Annotated[Path, typer.Argument(help="checkpoint.pt written by the pretrain stage.", show_default=False)],
    out: Annotated[Path, typer.Argument(help="Folder to write open_clip_config.json and open_clip_model.safetensors into.", show_default=False)],
) -> None:
    """Export a checkpoint in open_clip's own layout (open_clip_config.json + safetensors), loadable without synthvlp."""
    from synthvlp.interop import export_open_clip

    console.print(f"open_clip model: local-dir:{export_open_clip(checkpoint, out)}")


@app.command()
def version() -> None:
    """Print the synthvlp version."""
    typer.echo(__version__)


def main() -> None:
    """Console-script entry point: run the app, turning user errors into one message and exit status 2."""
    try:
        app()
    except UserError as exc:
        from rich.markup import escape

        # escaped: a message quotes user input, which is not markup; soft-wrapped: paths are not cut at 80 columns
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; finished work is kept, rerun the same command to resume")
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
