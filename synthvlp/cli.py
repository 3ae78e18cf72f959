"""The ``synthvlp`` command line.

User errors (bad config, missing files, a full disk) print one clear message and exit with status 2; a
traceback means a bug. Heavy libraries are imported inside commands so ``--help`` answers at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from synthvlp import __version__
from synthvlp.config import STAGES, dump_yaml, load_config
from synthvlp.errors import UserError

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
    """Run the pipeline stages of CONFIG in its run folder, resuming any finished work."""
    from synthvlp.runfolder import prepare_run_folder
    from synthvlp.runner import Runner

    resolved = load_config(config, overrides or [])
    run_dir = prepare_run_folder(resolved, force=force)
    wanted = [s.strip() for s in stages.split(",") if s.strip()]
    Runner(resolved, run_dir, console=console, shard=_parse_shard(shard)).run(wanted)


@app.command()
def status(run_dir: Annotated[Path, typer.Argument(help="A run folder (the config's run.out_dir).", show_default=False)]) -> None:
    """Show each stage of a run as done, partial or todo, with counts."""
    from synthvlp.runfolder import open_existing_run
    from synthvlp.runner import PER_UNIT_STAGES, Runner

    runner = Runner(open_existing_run(run_dir), run_dir, console=console)
    table = Table(title=f"{run_dir}")
    for column in ("stage", "state", "units done", "samples done"):
        table.add_column(column)
    units = runner.units()
    for stage in STAGES:
        names = [u.name for u in units] if stage in PER_UNIT_STAGES else ["global"]
        done = [runner.ledger.is_recorded(stage, n) for n in names]
        samples = sum(u.size for u, d in zip(units, done, strict=False) if d) if stage in PER_UNIT_STAGES else None
        state = "done" if all(done) else "partial" if any(done) else "todo"
        style = {"done": "green", "partial": "yellow", "todo": "dim"}[state]
        table.add_row(stage, f"[{style}]{state}", f"{sum(done)}/{len(names)}", "-" if samples is None else f"{samples}/{runner.config.run.n_samples}")
    Console().print(table)


@config_app.command("show")
def config_show(config: ConfigArg, overrides: Annotated[list[str] | None, typer.Argument(help="key.path=value overrides.", show_default=False)] = None) -> None:
    """Print the resolved config: CONFIG with defaults filled in and overrides applied."""
    typer.echo(dump_yaml(load_config(config, overrides or [])), nl=False)


@app.command()
def models() -> None:
    """List the model configs that pretrain.model accepts (ours and open_clip's)."""
    from synthvlp.models import MODEL_CONFIG_DIR, list_models

    ours = {p.stem for p in MODEL_CONFIG_DIR.glob("*.json")}
    for name in list_models():
        typer.echo(f"{name}{'  (synthvlp)' if name in ours else ''}")


@app.command()
def version() -> None:
    """Print the synthvlp version."""
    typer.echo(__version__)


def main() -> None:
    """Console-script entry point: run the app, turning user errors into one message and exit status 2."""
    try:
        app()
    except UserError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; finished work is kept, rerun the same command to resume")
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
