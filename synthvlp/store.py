"""Atomic files, WebDataset tar shards and the per-unit ledger that makes every stage resumable.

Every file is written to a temporary name in the destination folder and renamed into place, so a reader sees
either the old file or the whole new one, with the permissions the umask gives a new file (a team can share a
run folder). A unit of work (one shard of samples, or one global stage) is done
only when its ledger record exists and every output it lists is present with the recorded size and SHA-256;
anything else is redone and reported. Disk-full and permission errors become ``UserError``s naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import socket
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from synthvlp.errors import UserError


TEMP_SUFFIX = ".tmp"
_OWNER = f"{socket.gethostname().replace('.', '-')}~{os.getpid()}"
"""Written into temp names, so a sweep can tell a dead writer's leftovers from a live writer's work."""


def sweep_stale_temp(folder: Path) -> int:
    """Delete temp files left by killed writers on this host; return how many were removed.

    Temps of live processes, or of other hosts sharing the folder (``--shard`` on several machines), are kept.
    """
    host = _OWNER.split("~")[0]
    removed = 0
    for temp in Path(folder).rglob(f".*{TEMP_SUFFIX}"):
        owner = temp.name.rsplit(".", 3)[-3] if temp.name.count(".") >= 3 else ""
        temp_host, _, pid = owner.partition("~")
        if temp_host == host and pid.isdigit() and not process_alive(int(pid)):
            temp.unlink(missing_ok=True)
            removed += 1
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process of this host has that PID (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def current_umask() -> int:
    """The process umask, read without changing it where Linux reports it (thread-safe); elsewhere set and restored."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{_OWNER}.", suffix=TEMP_SUFFIX, dir=path.parent)
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp's 0600 would keep a shared run folder's outputs private
    except OSError as exc:
        raise _as_user_error(exc, path) from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        cause = _os_error(exc)
        if cause is not None:
            raise _as_user_error(cause, path) from None
        raise


def save_png(figure: Any, path: Path, dpi: int = 110) -> None:
    """Write a matplotlib figure to ``path`` as PNG atomically, then close it (an open figure keeps its memory
    until pyplot lets go of it)."""
    import matplotlib.pyplot as plt

    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=dpi)
    plt.close(figure)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc``, if any: torch.save, for one, reports a full disk as a RuntimeError raised while
    handling the OSError, and that must read like every other full disk."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen and not isinstance(exc, UserError):
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ if exc.__cause__ is not None or exc.__suppress_context__ else exc.__context__
    return None


def _as_user_error(exc: OSError, path: Path) -> UserError:
    if exc.errno == errno.ENOSPC:
        return UserError(f"{path}: no space left on device; finished work is kept — free space and rerun to resume")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return UserError(f"{path}: cannot write here ({exc.strerror}); choose a writable run.out_dir")
    return UserError(f"{path}: write failed: {exc.strerror or exc}")


def file_digest(path: Path) -> str:
    """SHA-256 of a file, streamed."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def tar_bytes(members: Mapping[str, bytes]) -> bytes:
    """A deterministic POSIX tar (fixed mtime, owner and mode) of ``{name: content}``, in the given order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = 0
            info.mode = 0o644
            info.uname = info.gname = "synthvlp"
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def write_shard(path: Path, samples: list[dict[str, bytes]]) -> None:
    """Write one WebDataset shard: each sample is ``{"__key__": key, "png": ..., "txt": ..., "json": ...}``.

    Keys must not contain dots, since WebDataset splits a member name at its first dot into key and extension.
    """
    members: dict[str, bytes] = {}
    for sample in samples:
        key = sample["__key__"].decode() if isinstance(sample["__key__"], bytes) else str(sample["__key__"])
        if "." in key or "/" in key:
            raise ValueError(f"sample key {key!r} must not contain '.' or '/'")
        for ext, content in sample.items():
            if ext != "__key__":
                members[f"{key}.{ext}"] = content
    write_bytes_atomic(path, tar_bytes(members))


def read_shard(path: Path) -> Iterator[dict[str, bytes | str]]:
    """Yield samples of a shard grouped by key, as WebDataset does (``__key__`` plus one entry per extension)."""
    current: dict[str, bytes | str] = {}
    with tarfile.open(path, mode="r") as tar:
        for member in tar:
            key, _, ext = member.name.partition(".")
            if current and current["__key__"] != key:
                yield current
                current = {}
            extracted = tar.extractfile(member)
            current.setdefault("__key__", key)
            current[ext] = extracted.read() if extracted else b""
    if current:
        yield current


@dataclass(frozen=True)
class Ledger:
    """Done-records of one run, ``<records>/<stage>/<unit>.json`` (``RunLayout.ledger``: ``<run>/.state``).

    A record lists the outputs (path relative to the run folder, size, SHA-256), the config fingerprint of the
    stage and the digests of its inputs, so a changed setting or a redone upstream unit invalidates it.
    """

    run_dir: Path
    records: Path

    def record_path(self, stage: str, unit: str) -> Path:
        return self.records / stage / f"{unit}.json"

    def commit(self, stage: str, unit: str, fingerprint: str, inputs: list[Path], outputs: list[Path]) -> None:
        record = {
            "fingerprint": fingerprint,
            "inputs": {self._rel(p): file_digest(p) for p in inputs},
            "outputs": {self._rel(p): {"size": p.stat().st_size, "sha256": file_digest(p)} for p in outputs},
        }
        write_text_atomic(self.record_path(stage, unit), json.dumps(record, indent=1, sort_keys=True))

    def check(self, stage: str, unit: str, fingerprint: str, inputs: list[Path]) -> tuple[bool, str]:
        """(done, why not): ``why`` is empty for a unit never started, and says what is wrong otherwise."""
        path = self.record_path(stage, unit)
        if not path.exists():
            return False, ""
        try:
            record = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return False, f"{self._rel(path)} is corrupt"
        if record.get("fingerprint") != fingerprint:
            return False, "its settings changed"
        expected_inputs = record.get("inputs", {})
        if sorted(expected_inputs) != sorted(self._rel(p) for p in inputs):
            return False, "its inputs changed"
        for rel, digest in expected_inputs.items():
            source = self.run_dir / rel
            if not source.exists() or file_digest(source) != digest:
                return False, f"its input {rel} changed"
        for rel, meta in record.get("outputs", {}).items():
            output = self.run_dir / rel
            if not output.exists():
                return False, f"{rel} is missing"
            if output.stat().st_size != meta["size"]:
                return False, f"{rel} is truncated ({output.stat().st_size} of {meta['size']} bytes)"
            if file_digest(output) != meta["sha256"]:
                return False, f"{rel} is corrupt (checksum mismatch)"
        return True, ""

    def is_recorded(self, stage: str, unit: str) -> bool:
        return self.record_path(stage, unit).exists()

    def staleness(self, stage: str, unit: str, fingerprint: str) -> str:
        """Why a recorded unit no longer matches its settings or inputs ('' when it does, or is not recorded).

        A cheap version of ``check`` for ``synthvlp status`` and the report: outputs are not re-hashed, and an
        input is hashed only when it is newer than the record (a copied folder does not look stale)."""
        path = self.record_path(stage, unit)
        if not path.exists():
            return ""
        try:
            record = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return f"{self._rel(path)} is corrupt"
        if record.get("fingerprint") != fingerprint:
            return "its settings changed since it ran"
        recorded_at = path.stat().st_mtime
        for rel, digest in record.get("inputs", {}).items():
            source = self.run_dir / rel
            if not source.exists():
                return f"its input {rel} is gone"
            if source.stat().st_mtime > recorded_at and file_digest(source) != digest:
                return f"its input {rel} changed since it ran"
        return ""

    def _rel(self, path: Path) -> str:
        """Relative to the run folder (so a moved folder stays valid); absolute for inputs outside it, such as
        a real corpus CSV or a benchmark folder."""
        resolved, root = Path(path).resolve(), self.run_dir.resolve()
        return resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else resolved.as_posix()

