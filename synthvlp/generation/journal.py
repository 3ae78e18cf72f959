"""An append-only record of finished reports, keyed by sample id, so a killed run redoes only what is missing.

A unit of the reports stage can take hours against a remote model; the runner's ledger only knows whole units.
Each finished sample is appended as one JSON line and flushed to disk before the next is started, so after a
crash at any instant the journal holds every finished sample once, plus at most one torn last line, which is
cut off on reopening. Reading keeps the first record of an id, so nothing is ever counted twice. A line that is
not a record (a disk error, a hand edit) is reported with the file and line number and dropped from the file; its
sample is simply written again.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import IO

from synthvlp.store import write_bytes_atomic

log = logging.getLogger(__name__)


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[str] | None = None

    def read(self) -> dict[str, dict]:
        """Finished records by id (first wins); a torn last line and corrupt lines are dropped from the file."""
        if not self.path.exists():
            return {}
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(end)
        records: dict[str, dict] = {}
        kept: list[bytes] = []
        lines = data[:end].splitlines()
        for number, line in enumerate(lines, start=1):
            try:
                record = json.loads(line)
                key = record["id"]
                if not isinstance(key, str):
                    raise TypeError(key)
            except (ValueError, KeyError, TypeError):  # undecodable, not JSON, not an object, or without a string id
                log.warning("%s line %d: corrupt journal record skipped; that sample's report is written again", self.path, number)
                continue
            kept.append(line)
            records.setdefault(key, record)
        if len(kept) != len(lines):
            write_bytes_atomic(self.path, b"".join(k + b"\n" for k in kept))
        return records

    def append(self, record: dict) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")
        self._handle.write(json.dumps(record, sort_keys=True) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
