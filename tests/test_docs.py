"""The guides' fenced `synthvlp` commands still match the CLI (fast), and the quickstart and evaluation journeys
run as written on a tiny config (slow)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import yaml

from synthvlp.cli import app

REPO = Path(__file__).resolve().parent.parent
GUIDES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def documented_commands() -> list[tuple[str, list[str]]]:
    """(guide, argv after `synthvlp`) for every command line in a fenced block of README.md and docs/*.md."""
    found = []
    for guide in GUIDES:
        for block in re.findall(r"```[a-z]*\n(.*?)```", guide.read_text(), re.S):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                words = shlex.split(line.split(" #")[0].rstrip(" &"), comments=True) if "synthvlp" in line else []
                for i, word in enumerate(words):
                    if word in ("synthvlp", ".venv/bin/synthvlp") or (word == "synthvlp.cli" and words[i - 1] == "-m"):
                        found.append((guide.name, words[i + 1 :]))
                        break
    return found


def _command(argv: list[str]):
    """The (click) command an argv reaches (the pretrain group's default included) and the rest of the argv."""
    command = typer.main.get_command(app)
    rest = list(argv)
    while hasattr(command, "commands"):
        name = rest[0] if rest and rest[0] in command.commands else getattr(command, "default", None)
        assert name is not None, f"no subcommand {rest[:1]} of {command.name}"
        command = command.commands[name]
        rest = rest[1:] if rest and rest[0] == name else rest
    return command, rest


COMMANDS = documented_commands()


def test_the_guides_document_commands():
    guides = {guide for guide, _ in COMMANDS}
    assert len(COMMANDS) > 30 and {"README.md", "quickstart.md", "evaluation.md", "pretrain.md", "rasd.md"} <= guides


@pytest.mark.parametrize(("guide", "argv"), COMMANDS, ids=[f"{g}:{' '.join(a)[:60]}" for g, a in COMMANDS])
def test_documented_command_exists_with_its_options(guide, argv):
    command, rest = _command(argv)
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    used = {word.split("=")[0] for word in rest if word.startswith("--")}
    assert used <= known, f"{guide}: synthvlp {' '.join(argv)}: {sorted(used - known)} not options of {command.name}"
    for word in rest:
        if word.startswith("configs/") and word.endswith(".yaml"):
            assert (REPO / word).is_file(), f"{guide}: {word} does not exist"


JOURNEY = [
    ("README.md", "config show configs/quickstart.yaml run.n_samples=500 plan.max_findings=1"),
    ("quickstart.md", "run configs/quickstart.yaml --stages plan"),
    ("quickstart.md", "run configs/quickstart.yaml --stages reports"),
    ("quickstart.md", "run configs/quickstart.yaml --stages images"),
    ("quickstart.md", "run configs/quickstart.yaml --stages filter,balance"),
    ("quickstart.md", "run configs/quickstart.yaml --stages pretrain,evaluate"),
    ("quickstart.md", "status runs/quickstart"),
    ("quickstart.md", "run configs/quickstart.yaml"),
    ("evaluation.md", "evaluate runs/quickstart/pretrain/checkpoint.pt --benchmark nih --data ../shared/data/nih-dev-64"),
    ("evaluation.md", "evaluate runs/quickstart/pretrain/checkpoint.pt --benchmark nih --data ../shared/data/label-files/Data_Entry_2017_v2020.csv.gz "
                      "--images ../shared/data/nih-dev-64/images --classes Effusion,Cardiomegaly --threads 2 --out runs/quickstart/eval-nih-official"),
    ("rendering.md", "render preview runs/quickstart --n 16 --out preview.png"),
    ("pretrain.md", "export runs/qs/pretrain/checkpoint.pt runs/qs/open_clip"),
]
"""Documented commands run in order, each as written (checked against the guides), in a folder whose
configs/quickstart.yaml is the quickstart made tiny; the export reads the quickstart's run as runs/qs."""


@pytest.mark.slow
def test_quickstart_and_evaluation_journeys_run_as_documented(tmp_path):
    shared = REPO.parent / "shared" / "data"
    if not (shared / "nih-dev-64").is_dir() or not (shared / "label-files").is_dir():
        pytest.skip("the shared NIH data is not beside this checkout")
    documented = {(g, " ".join(a)) for g, a in COMMANDS}
    work = tmp_path / "work"
    shutil.copytree(REPO / "configs", work / "configs")
    (tmp_path / "shared").symlink_to(REPO.parent / "shared")
    config = yaml.safe_load((work / "configs" / "quickstart.yaml").read_text())
    config["run"].update(n_samples=60, shard_size=20)
    config["pretrain"].update(epochs=1, batch_size=16, warmup_steps=1, threads=1)
    config["evaluate"].update(bootstrap=10)
    config["evaluate"]["benchmarks"][0]["linear_probe"] = False
    (work / "configs" / "quickstart.yaml").write_text(yaml.safe_dump(config))
    for guide, line in JOURNEY:
        assert (guide, line) in documented, f"{guide} no longer documents `synthvlp {line}`; update JOURNEY"
        if line.startswith("export"):
            (work / "runs" / "qs").symlink_to(work / "runs" / "quickstart")
        done = subprocess.run([sys.executable, "-m", "synthvlp.cli", *shlex.split(line)], cwd=work, capture_output=True, text=True,
                              timeout=900, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)})
        assert done.returncode == 0, f"{guide}: synthvlp {line}\n{done.stderr[-3000:]}"
    assert "Scored the" in (work / "runs" / "quickstart" / "eval-nih-official" / "results.md").read_text()
    assert (work / "runs" / "qs" / "open_clip" / "open_clip_config.json").is_file()


def python_examples(guide: Path) -> list[tuple[str, str]]:
    """(the section heading, code) of every fenced ```python block in ``guide``."""
    found = []
    for heading, body in re.findall(r"^## (.+?)\n(.*?)(?=^## |\Z)", guide.read_text(), re.S | re.M):
        found += [(heading, code) for code in re.findall(r"```python\n(.*?)```", body, re.S)]
    return found


EXAMPLES = python_examples(REPO / "docs" / "extending.md")


def test_extending_shows_a_benchmark_a_renderer_a_stage_and_a_loss():
    assert {"Add a benchmark", "Add a renderer", "Add a stage", "Add a loss"} <= {heading for heading, _ in EXAMPLES}
    text = (REPO / "docs" / "extending.md").read_text()
    assert "docs/extending.md" in (REPO / "README.md").read_text() and "extending.md" in (REPO / "docs" / "architecture.md").read_text()
    assert "RENDERERS" in text and "BENCHMARKS" in text and "REGISTRY" in text and "OBJECTIVES" in text


@pytest.mark.parametrize(("heading", "code"), EXAMPLES, ids=[heading for heading, _ in EXAMPLES])
def test_extending_example_runs_as_written(heading, code, tmp_path):
    """Each example runs in its own process from the repository root (its configs/ paths), as a reader would."""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)})
    assert done.returncode == 0, f"docs/extending.md, {heading}:\n{done.stderr[-3000:]}"
