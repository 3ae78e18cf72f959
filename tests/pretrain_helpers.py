"""Tiny training data for the pre-training tests (random grey images with short captions, as shards or a CSV), and
the kill-and-resume check of `synthvlp render train`."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from synthvlp.store import write_shard

WORDS = ["cardiomegaly", "pleural effusion", "clear lungs", "pneumothorax", "normal heart size", "nodule"]


def png_bytes(rng: np.random.Generator, size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((rng.random((size, size)) * 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def caption(rng: np.random.Generator) -> str:
    return " ".join(rng.choice(WORDS, 2, replace=False))


def make_shards(folder: Path, n_shards: int = 2, per_shard: int = 24, seed: int = 0, corrupt: tuple[str, ...] = ()) -> list[Path]:
    """Shards of ``per_shard`` samples keyed ``t<shard><index>``; keys in ``corrupt`` get garbage PNG bytes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(n_shards):
        samples = []
        for i in range(per_shard):
            key = f"t{s}{i:04d}"
            image = b"\x89PNG not really" if key in corrupt else png_bytes(rng)
            samples.append({"__key__": key, "png": image, "txt": caption(rng).encode()})
        path = folder / f"train-{s:06d}.tar"
        write_shard(path, samples)
        paths.append(path)
    return paths


def make_csv(folder: Path, n: int = 20, seed: int = 1) -> Path:
    """A MIMIC-style CSV (image path relative to the CSV, report text, patient id) with its PNG files."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        (folder / "images" / f"{i}.png").write_bytes(png_bytes(rng))
        rows.append({"image": f"images/{i}.png", "text": caption(rng), "patient_id": f"p{i // 2}"})
    path = folder / "pairs.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


class Interrupt(Exception):
    """Stands in for a kill: raised from a training progress callback, after the step's state is written."""


def train_renderer_killed_and_resumed(config, steps_before_kill: int):
    """Run ``synthvlp render train`` on ``config``, stop it as if killed after ``steps_before_kill`` steps (their
    state is written before their progress call), run it again; returns the resumed run's result."""
    from synthvlp.pretrain.diffusion_engine import train_renderer

    seen = []

    def stop(n, loss):
        seen.append(n)
        if len(seen) == steps_before_kill:
            raise Interrupt

    try:
        train_renderer(config, progress=stop, say=lambda s: None)
    except Interrupt:
        return train_renderer(config, say=lambda s: None)
    raise AssertionError(f"training ended before step {steps_before_kill}")


def render_final_state(out_dir: Path) -> dict:
    """The newest training state a ``synthvlp render train`` run in ``out_dir`` wrote."""
    import torch

    [state] = sorted((out_dir / "state").glob("*/step-*.pt"))[-1:]
    return torch.load(state, weights_only=True)


def assert_same_render_run(a: Path, b: Path) -> tuple[dict, dict]:
    """Two render train runs ended with equal weights, EMA weights, optimiser slots and logged losses; their states."""
    import torch

    first, second = render_final_state(a), render_final_state(b)
    assert first["step"] == second["step"]
    for key, tensor in first["model"].items():
        assert torch.equal(tensor, second["model"][key]), key
    for x, y in zip(first["ema"]["shadow_params"], second["ema"]["shadow_params"], strict=True):
        assert torch.equal(x, y)
    assert first["optimizer"]["state"].keys() == second["optimizer"]["state"].keys()
    losses = [[row.split(",")[:2] for row in (folder / "log.csv").read_text().splitlines()] for folder in (a, b)]
    assert len(losses[0]) > 1 and losses[0] == losses[1]
    return first, second
