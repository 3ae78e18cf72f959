"""synthvlp's outputs in open_clip's own tools: an exported checkpoint loads with open_clip alone, and
open_clip_train trains on a run's shards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pretrain_helpers import make_shards
from typer.testing import CliRunner

from synthvlp.cli import app
from synthvlp.evaluation.inference import ImageTextEngine
from synthvlp.models import build_clip, save_clip_checkpoint

LOAD_WITH_OPEN_CLIP_ONLY = """
import sys, torch, open_clip
assert not any(name.startswith("synthvlp") for name in sys.modules)
model, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + sys.argv[1])
tokenizer = open_clip.get_tokenizer("local-dir:" + sys.argv[1])
model.eval()
with torch.no_grad():
    image = model.encode_image(torch.load(sys.argv[2]), normalize=True)
    text = model.encode_text(tokenizer(["There is pleural effusion."]), normalize=True)
torch.save({"image": image, "text": text, "size": preprocess.transforms[1].size}, sys.argv[3])
"""


def test_export_loads_with_open_clip_alone_and_gives_the_same_embeddings(tmp_path):
    torch.manual_seed(0)
    checkpoint = tmp_path / "pretrain" / "checkpoint.pt"
    save_clip_checkpoint(checkpoint, "synthvlp-tiny", build_clip("synthvlp-tiny")[0], steps=0)
    result = CliRunner().invoke(app, ["export", str(checkpoint), str(tmp_path / "export")])
    assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "export").iterdir()} == {"open_clip_config.json", "open_clip_model.safetensors"}
    images = torch.rand(2, 3, 64, 64)
    torch.save(images, tmp_path / "images.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # open_clip alone: synthvlp is not importable
    done = subprocess.run([sys.executable, "-c", LOAD_WITH_OPEN_CLIP_ONLY, str(tmp_path / "export"), str(tmp_path / "images.pt"), str(tmp_path / "out.pt")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = torch.load(tmp_path / "out.pt", weights_only=True)
    engine = ImageTextEngine.from_checkpoint(checkpoint)
    model, tokenizer = engine.model, engine.tokenizer
    with torch.no_grad():
        ours_image = model.encode_image(images, normalize=True)
        ours_text = model.encode_text(tokenizer(["There is pleural effusion."]), normalize=True)
    assert torch.allclose(theirs["image"], ours_image, atol=1e-5) and torch.allclose(theirs["text"], ours_text, atol=1e-5)
    assert tuple(theirs["size"]) == (64, 64)


@pytest.mark.slow
def test_open_clip_train_runs_on_our_shards(tmp_path):
    """`python -m synthvlp.interop` is open_clip_train.main with our model configs and its webdataset reader
    fixed for webdataset >= 0.2.96; 2 shards of 24 samples, batch 8: 6 steps and a checkpoint."""
    make_shards(tmp_path / "data", n_shards=2, per_shard=24)
    argv = ["--train-data", str(tmp_path / "data" / "train-{000000..000001}.tar"), "--dataset-type", "webdataset",
            "--train-num-samples", "48", "--model", "synthvlp-tiny", "--batch-size", "8", "--epochs", "1", "--lr", "1e-3",
            "--warmup", "1", "--precision", "fp32", "--workers", "0", "--logs", str(tmp_path / "logs"), "--name", "t",
            "--save-frequency", "1", "--seed", "0", "--report-to", "", "--log-every-n-steps", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-m", "synthvlp.interop", *argv], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    log = (tmp_path / "logs" / "t" / "out.log").read_text()
    assert log.count("Train Epoch: 0") == 6 and "KeyError" not in log
    state = torch.load(tmp_path / "logs" / "t" / "checkpoints" / "epoch_1.pt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 1 and "logit_scale" in state["state_dict"]
