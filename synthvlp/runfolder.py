"""The run folder: its resolved config, provenance, and the guard against mixing two configs in one folder."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import yaml

from synthvlp import __version__
from synthvlp.config import RunConfig, dump_yaml, output_differences
from synthvlp.errors import RunFolderError, UserError
from synthvlp.store import write_text_atomic

CONFIG_FILE = "config.yaml"
PROVENANCE_FILE = "run.json"


def git_revision() -> str:
    """The source tree's commit (with ``-dirty`` for local changes), or ``unknown`` outside a git checkout."""
    source = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def prepare_run_folder(config: RunConfig, force: bool = False) -> Path:
    """Create or reopen ``run.out_dir``; refuse a folder made by another config unless ``force``.

    Reopening with the same config resumes; with ``force`` the new config is recorded and every stage whose
    settings changed is redone (the ledger compares each stage's config fingerprint).
    """
    run_dir = Path(config.run.out_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RunFolderError(f"{run_dir}: run folder is not writable ({exc.strerror}); set run.out_dir to a writable folder") from None
    existing = run_dir / CONFIG_FILE
    if existing.exists():
        try:
            old = yaml.safe_load(existing.read_text())
        except yaml.YAMLError:
            raise RunFolderError(f"{existing}: unreadable; delete it or pass --force to overwrite") from None
        differences = output_differences(old or {}, config.to_plain())
        if differences and not force:
            shown = "\n  ".join(differences[:20])
            raise RunFolderError(
                f"{run_dir} was made by a different config:\n  {shown}\n"
                "Use another run.out_dir, or pass --force to reuse it (stages whose settings changed are redone)."
            )
    write_text_atomic(existing, dump_yaml(config))
    provenance = {
        "synthvlp_version": __version__,
        "git_revision": git_revision(),
        "python": platform.python_version(),
        "command": sys.argv,
    }
    write_text_atomic(run_dir / PROVENANCE_FILE, json.dumps(provenance, indent=2))
    return run_dir


def open_existing_run(run_dir: Path) -> RunConfig:
    """The config recorded in an existing run folder (for ``synthvlp status``)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise UserError(f"{run_dir}: not a run folder (no {CONFIG_FILE}); pass the folder given as run.out_dir")
    return RunConfig.model_validate(yaml.safe_load(path.read_text()))
