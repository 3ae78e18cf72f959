"""torchrun: 2 CPU processes (gloo) through `synthvlp render train` train the renderer 1 process trains on the
same global batch, write one output folder from rank 0, and resume a 2-process state exactly: in pixel space, and
fine-tuning a tiny Stable Diffusion folder in its VAE's latent space (each rank encodes its own slice of films)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pretrain_helpers import make_shards
from synthvlp.config import RenderTrainConfig
from synthvlp.pretrain.diffusion_engine import train_renderer
from tiny_sd import build_tiny_sd

PIXEL = dict(channels=[8, 16], attention=[False, True], head_dim=4, groups=4, text_width=16, text_layers=1, text_heads=2, max_tokens=12)


def _config(out_dir: Path, shards: list[Path], model: dict) -> RenderTrainConfig:
    model = dict(size=16, **model)
    train = dict(out_dir=str(out_dir), steps=4, batch_size=4, warmup_steps=1, checkpoint_every=2, threads=1, sample_prompts=[], ema_decay=0.9)
    return RenderTrainConfig.model_validate({"data": {"shards": [str(s) for s in shards]}, "model": model, "train": train})


def _torchrun(config: RenderTrainConfig, path: Path) -> subprocess.CompletedProcess:
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "synthvlp.cli", "render", "train", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _state(out_dir: Path, step: int) -> dict:
    [path] = (out_dir / "state").glob(f"*/step-{step:08d}.pt")
    return torch.load(path, weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("space", ["pixel", "latent"])
def test_two_gloo_processes_train_what_one_trains_and_resume_exactly(tmp_path, space):
    shards = make_shards(tmp_path / "data", n_shards=1, per_shard=8)
    model = PIXEL if space == "pixel" else {"init_from": str(build_tiny_sd(tmp_path / "sd"))}
    train_renderer(_config(tmp_path / "one", shards, model), say=lambda s: None)
    done = _torchrun(_config(tmp_path / "two", shards, model), tmp_path / "two.yaml")
    assert "on 2 process(es)" in done.stdout + done.stderr
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["log.csv", "pipeline", "state"]  # rank 0 alone writes
    losses = [pd.read_csv(tmp_path / name / "log.csv")["loss"].to_numpy() for name in ("one", "two")]
    assert len(losses[1]) == 4 and np.allclose(losses[0], losses[1], rtol=1e-4)
    # Not bitwise: each rank's convolution sums over 2 films and gloo adds the two halves, where one process sums
    # 4 in one kernel. Adam turns a ~0 gradient into a +-lr step of either sign, so compare nearly all weights.
    one, two = _state(tmp_path / "one", 4), _state(tmp_path / "two", 4)
    differences = torch.cat([(one["model"][k] - two["model"][k]).abs().flatten() for k in one["model"]])
    assert torch.quantile(differences, 0.99) < 1e-5
    shadow = torch.cat([(a - b).abs().flatten() for a, b in zip(one["ema"]["shadow_params"], two["ema"]["shadow_params"], strict=True)])
    assert torch.quantile(shadow, 0.99) < 1e-5

    for path in (tmp_path / "two" / "state").glob("*/step-00000004.pt"):  # as if killed after step 2's state
        path.unlink()
    shutil.rmtree(tmp_path / "two" / "pipeline")
    again = _torchrun(_config(tmp_path / "two", shards, model), tmp_path / "two.yaml")
    said = " ".join((again.stdout + again.stderr).split())  # the console wraps long lines
    assert "render train: resuming from" in said and "(step 2 of 4)" in said
    resumed = _state(tmp_path / "two", 4)
    for key, tensor in two["model"].items():
        assert torch.equal(tensor, resumed["model"][key]), key
    for a, b in zip(two["ema"]["shadow_params"], resumed["ema"]["shadow_params"], strict=True):
        assert torch.equal(a, b)
    assert (tmp_path / "two" / "pipeline" / "model_index.json").is_file()
