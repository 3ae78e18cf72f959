"""Resumable training state: model, optimiser, schedule, RNG states and data position, written atomically.

A state is one ``torch.save`` dict of tensors and plain values (``checkpoints.TrainState``), so
``torch.load(weights_only=True)`` reads it (no pickled code). The data position is the step count (``sampling.py`` derives the rest). States live in
``pretrain/state/step-NNNNNNNN.pt``; the newest readable one is resumed, older ones beyond ``keep`` are pruned.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthvlp.checkpoints import TrainState, load, save
from synthvlp.errors import UserError
from synthvlp.models import load_weights


def rng_state() -> dict[str, Any]:
    """Every RNG a training step could touch, as tensors and plain values."""
    bit_generator = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy_key": torch.from_numpy(bit_generator["state"]["key"].astype(np.int64)),
        "numpy_pos": int(bit_generator["state"]["pos"]),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    key = state["numpy_key"].numpy().astype(np.uint32)
    np.random.set_state({"bit_generator": "MT19937", "state": {"key": key, "pos": state["numpy_pos"]}, "has_gauss": 0, "gauss": 0.0})


def state_key(value: Any) -> str:
    """Fingerprint of ``value`` (JSON-able; other objects by ``str``): the name of the folder a training run's
    states live in, so changed settings start afresh instead of resuming a different run."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def drop_other_states(state_dir: Path) -> None:
    """Remove the states of other settings beside ``state_dir`` (only the current settings can be resumed)."""
    if state_dir.parent.is_dir():
        for stale in state_dir.parent.iterdir():
            if stale != state_dir:
                shutil.rmtree(stale, ignore_errors=True)


def state_path(folder: Path, step: int) -> Path:
    return folder / f"step-{step:08d}.pt"


def save_state(folder: Path, step: int, model_name: str, model, optimizer, scheduler, extra: dict[str, Any], keep: int) -> Path:
    """Write the state after ``step`` optimiser steps, then prune all but the ``keep`` newest."""
    payload = {
        "model_name": model_name,
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        **extra,
    }
    path = state_path(folder, step)
    save(path, TrainState, payload)
    for old in sorted(folder.glob("step-*.pt"))[:-keep]:
        old.unlink(missing_ok=True)
    return path


def latest_state(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest state that loads, or None; an unreadable file (cut short outside our atomic writes) is skipped."""
    for path in sorted(folder.glob("step-*.pt"), reverse=True):
        try:
            return path, load(path, TrainState).payload
        except UserError:
            continue
    return None


def restore(path: Path, state: dict[str, Any], model_name: str, model, optimizer, scheduler) -> int:
    """Put ``state`` back into the live objects; returns the step to continue from."""
    if state["model_name"] != model_name:
        raise UserError(f"{path}: training state of model {state['model_name']!r}, but pretrain.model is {model_name!r}; use another run.out_dir or delete {path.parent}")
    load_weights(model, state["model"], path, f"training state of model {state['model_name']!r}")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return int(state["step"])
