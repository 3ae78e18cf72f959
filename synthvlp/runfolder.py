"""The run folder: where each of its files lives (``RunLayout``), its resolved config, provenance, the guard against
mixing two configs in one folder, and the lock that keeps two ``synthvlp run`` processes from working in one
folder at once."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from synthvlp import __version__
from synthvlp.config import RunConfig, dump_yaml, output_differences
from synthvlp.errors import RunFolderError, UserError
from synthvlp.store import process_alive, write_text_atomic


@dataclass(frozen=True)
class Unit:
    """Samples ``start`` to ``stop`` (exclusive): the ``index``-th block of ``run.shard_size``, done and committed
    as one piece of work by a per-unit stage."""

    index: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"unit-{self.index:06d}"

    @property
    def size(self) -> int:
        return self.stop - self.start


CHECKPOINT_FILE = "checkpoint.pt"
"""The trained model in a pretrain folder: ``synthvlp pretrain`` writes it into any folder, a run into pretrain/."""
TRAIN_LOG_FILE = "log.csv"
"""The training log beside it (one row per logged step)."""


@dataclass(frozen=True)
class RunLayout:
    """Every path in a run folder, so the runner, the report, the CLI and the preview cannot disagree on one.

    ``<unit>`` is a unit's index (``run.shard_size`` samples each), written with six digits::

        config.yaml run.json manifest.parquet report.md plots/ cache/ .locks/ .state/ (the ledger's records)
        parts/<stage>/part-<unit>.parquet      per-unit manifest columns (and, beside them, each stage's extras)
        images/shard-<unit>.tar                rendered samples (WebDataset)
        dataset/{train,test}-000000.tar        the selected samples, for training and evaluation
        pretrain/checkpoint.pt log.csv metrics.json      the model (CHECKPOINT_FILE and TRAIN_LOG_FILE, which the engine writes)
        evaluate/<benchmark>/ skipped.json results.md    zero-shot results
    """

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def provenance(self) -> Path:
        return self.root / "run.json"

    @property
    def locks(self) -> Path:
        return self.root / ".locks"

    @property
    def ledger(self) -> Path:
        """The ledger's done-records (``store.Ledger``), one folder per stage."""
        return self.root / ".state"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.parquet"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def cache(self) -> Path:
        """What the image checks compute once per image and reuse on a rerun."""
        return self.root / "cache"

    def parts(self, stage: str) -> Path:
        return self.root / "parts" / stage

    def part(self, stage: str, unit: int) -> Path:
        return self.parts(stage) / f"part-{unit:06d}.parquet"

    def journal(self, unit: int, fingerprint: str) -> Path:
        """Finished reports of an interrupted attempt at a unit, under one reports fingerprint."""
        return self.parts("reports") / f"journal-{unit:06d}-{fingerprint}.jsonl"

    def undrawable(self, unit: int) -> Path:
        return self.parts("images") / f"undrawable-{unit:06d}.json"

    def undrawable_files(self) -> list[Path]:
        return sorted(self.parts("images").glob("undrawable-*.json"))

    def image_warnings(self, unit: int) -> Path:
        return self.parts("images") / f"warnings-{unit:06d}.json"

    def image_warnings_files(self) -> list[Path]:
        return sorted(self.parts("images").glob("warnings-*.json"))

    def signatures(self, unit: int) -> Path:
        return self.parts("filter") / f"signatures-{unit:06d}.npy"

    @property
    def selection(self) -> Path:
        return self.parts("balance") / "selection.parquet"

    @property
    def balance_targets(self) -> Path:
        return self.parts("balance") / "targets.json"

    def image_shard(self, unit: int) -> Path:
        return self.root / "images" / f"shard-{unit:06d}.tar"

    def image_shards(self) -> list[Path]:
        """The image shards present, in sample order."""
        return sorted((self.root / "images").glob("shard-*.tar"))

    def dataset_shard(self, name: str) -> Path:
        return self.root / "dataset" / name

    @property
    def pretrain(self) -> Path:
        return self.root / "pretrain"

    @property
    def checkpoint(self) -> Path:
        return self.pretrain / CHECKPOINT_FILE

    @property
    def pretrain_log(self) -> Path:
        return self.pretrain / TRAIN_LOG_FILE

    @property
    def pretrain_metrics(self) -> Path:
        return self.pretrain / "metrics.json"

    @property
    def evaluate(self) -> Path:
        return self.root / "evaluate"

    @property
    def evaluate_skipped(self) -> Path:
        return self.evaluate / "skipped.json"


def git_revision(source: Path = Path(__file__).resolve().parent.parent) -> str:
    """The source tree's commit (with ``-dirty`` for local changes), or ``unknown`` outside a git checkout.

    Read-only: ``--no-optional-locks`` keeps ``git status`` from refreshing the index, which would take
    ``.git/index.lock`` and rewrite ``.git/index`` in the user's checkout (or fail on a read-only one).
    """
    git = ["git", "--no-optional-locks", "-C", str(source)]
    try:
        head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@contextlib.contextmanager
def run_folder_lock(run_dir: Path, shard: tuple[int, int] = (0, 1)) -> Iterator[None]:
    """Hold the run folder for one ``synthvlp run``; a second one is refused with the holder's PID and host.

    ``.locks/run.lock`` is taken exclusively by an unsharded run and shared by ``--shard i/n`` runs, which also
    take ``.locks/shard-i-of-n.lock`` exclusively: shards run side by side, the same shard never twice, and no
    unsharded run meanwhile. Locks are ``flock``s, so the kernel drops them when a holder dies, even by SIGKILL;
    the holder files beside them only say who holds what.
    """
    folder = RunLayout(Path(run_dir)).locks
    index, count = shard
    sharded = shard != (0, 1)
    names = ["run.lock"] + ([f"shard-{index}-of-{count}.lock"] if sharded else [])
    modes = [fcntl.LOCK_SH if sharded else fcntl.LOCK_EX] + ([fcntl.LOCK_EX] if sharded else [])
    handles = []
    try:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handles = [open(folder / name, "a+b") for name in names]  # noqa: SIM115 - held until the run ends
        except OSError as exc:
            raise RunFolderError(f"{run_dir}: run folder is not writable ({exc.strerror}); set run.out_dir to a writable folder") from None
        for handle, mode in zip(handles, modes, strict=True):
            try:
                fcntl.flock(handle, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunFolderError(f"{run_dir} is in use by {_describe_holders(folder)}; wait for it to finish, or use another run.out_dir") from None
            except OSError as exc:
                raise RunFolderError(f"{run_dir}: cannot lock the run folder ({exc.strerror}); put run.out_dir on a filesystem with flock support") from None
        _live_holders(folder)  # sweeps the records of holders that died (their flocks died with them)
        me = folder / f"holder-{socket.gethostname()}-{os.getpid()}-{index}-of-{count}.json"
        record = {"pid": os.getpid(), "host": socket.gethostname(), "shard": f"{index}/{count}", "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        write_text_atomic(me, json.dumps(record))
        try:
            yield
        finally:
            me.unlink(missing_ok=True)
    finally:
        for handle in handles:
            handle.close()  # closing drops the flock


def _live_holders(folder: Path) -> list[dict]:
    """The holder records of live processes; those of dead processes on this host are deleted."""
    found = []
    for path in sorted(folder.glob("holder-*.json")):
        try:
            record = json.loads(path.read_text())
            pid, host = int(record["pid"]), str(record["host"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if host == socket.gethostname() and not process_alive(pid):
            path.unlink(missing_ok=True)
        else:
            found.append(record)
    return found


def _describe_holders(folder: Path) -> str:
    described = [f"synthvlp run pid {r['pid']} on host {r['host']}, {'unsharded' if r.get('shard') == '0/1' else 'shard ' + str(r.get('shard'))}, "
                 f"since {r.get('since')}" for r in _live_holders(folder)]
    return "; ".join(described) or "a synthvlp run that has not yet recorded its PID"


def prepare_run_folder(config: RunConfig, force: bool = False) -> Path:
    """Create or reopen ``run.out_dir``; refuse a folder made by another config unless ``force``.

    Reopening with the same config resumes; with ``force`` the new config is recorded and every stage whose
    settings changed is redone (the ledger compares each stage's config fingerprint).
    """
    run_dir = Path(config.run.out_dir)
    layout = RunLayout(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RunFolderError(f"{run_dir}: run folder is not writable ({exc.strerror}); set run.out_dir to a writable folder") from None
    existing = layout.config
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
    write_text_atomic(layout.provenance, json.dumps(provenance, indent=2))
    return run_dir


def open_existing_run(run_dir: Path) -> RunConfig:
    """The config recorded in an existing run folder (for ``synthvlp status``)."""
    path = RunLayout(Path(run_dir)).config
    if not path.exists():
        raise UserError(f"{run_dir}: not a run folder (no {path.name}); pass the folder given as run.out_dir")
    return RunConfig.model_validate(yaml.safe_load(path.read_text()))
