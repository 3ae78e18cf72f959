"""torchrun: 2 CPU processes (gloo) through `synthvlp pretrain` train the same model as 1 process."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pretrain_helpers import make_shards


def _config(tmp_path, name: str, shards) -> str:
    config = {
        "run": {"out_dir": str(tmp_path / name), "seed": 5},
        "pretrain": {
            "shards": [str(s) for s in shards], "epochs": 1, "batch_size": 8, "accumulate": 2, "threads": 1,
            "warmup_steps": 1, "checkpoint_every": 2, "tensorboard": False,
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.slow
def test_two_gloo_processes_match_one(tmp_path):
    shards = make_shards(tmp_path / "data", n_shards=1, per_shard=24)  # 3 steps
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = [sys.executable, "-m", "synthvlp.cli", "pretrain", _config(tmp_path, "one", shards)]
    double = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "synthvlp.cli", "pretrain", _config(tmp_path, "two", shards)]
    for command in (single, double):
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    assert "on 2 process(es)" in done.stderr
    one = torch.load(tmp_path / "one" / "pretrain" / "checkpoint.pt", weights_only=True)["state_dict"]
    two = torch.load(tmp_path / "two" / "pretrain" / "checkpoint.pt", weights_only=True)["state_dict"]
    # Gradients equal up to float summation order. Adam turns a ~0 gradient (e.g. of attention key biases, to
    # which softmax is invariant) into a +-lr step of either sign, so compare the losses and nearly all weights.
    losses = [pd.read_csv(tmp_path / name / "pretrain" / "log.csv")["loss"].to_numpy() for name in ("one", "two")]
    assert len(losses[0]) == 3 and np.allclose(losses[0], losses[1], rtol=1e-4)
    differences = torch.cat([(one[k] - two[k]).abs().flatten() for k in one])
    assert torch.quantile(differences[:1_000_000], 0.99) < 1e-5
