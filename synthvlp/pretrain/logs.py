"""Per-step training logs: a CSV that always matches the newest resumable state, and TensorBoard scalars.

The CSV is rewritten atomically with each training state, so after a kill it holds exactly the steps the
resumed run will not redo; TensorBoard's ``purge_step`` drops the events a killed run wrote past that state.
"""

from __future__ import annotations

import csv
from pathlib import Path

from synthvlp.runfolder import TRAIN_LOG_FILE
from synthvlp.store import atomic_open

COLUMNS = ("step", "epoch", "loss", "global_loss", "local_loss", "lr", "logit_scale", "samples_per_s", "data_wait_s")


class TrainLog:
    """One CSV row per step with ``columns``; all but the ``step`` and ``epoch`` counters also go to TensorBoard."""

    def __init__(self, out_dir: Path, start_step: int, tensorboard: bool, columns: tuple[str, ...] = COLUMNS) -> None:
        self.path = out_dir / TRAIN_LOG_FILE
        self.columns = columns
        self.rows: list[dict[str, str]] = []
        if self.path.exists() and start_step > 0:
            with open(self.path, newline="") as handle:
                self.rows = [r for r in csv.DictReader(handle) if int(r["step"]) < start_step]
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=start_step)

    def add(self, **values: float) -> None:
        self.rows.append({k: f"{values[k]:.6g}" if isinstance(values[k], float) else str(values[k]) for k in self.columns})
        if self.writer is not None:
            for name in (c for c in self.columns if c not in ("step", "epoch")):
                self.writer.add_scalar(f"train/{name}", values[name], values["step"])

    def flush(self) -> None:
        with atomic_open(self.path, "w") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(self.rows)
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        self.flush()
        if self.writer is not None:
            self.writer.close()
