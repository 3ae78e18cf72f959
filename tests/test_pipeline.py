"""The whole pipeline on a tiny config, pre-training and evaluation included."""

from __future__ import annotations

import csv

import pytest
from rich.console import Console

from synthvlp.config import load_config
from synthvlp.errors import UserError
from synthvlp.evaluation.inference import ImageTextEngine
from synthvlp.models import save_clip_checkpoint
from synthvlp.runfolder import prepare_run_folder
from synthvlp.runner import Runner


def test_tiny_run_end_to_end(write_config):
    config = load_config(write_config(run={"n_samples": 120, "shard_size": 60}))
    runner = Runner(config, prepare_run_folder(config), console=Console(record=True, width=200))
    runner.run()
    run_dir = runner.run_dir
    with open(run_dir / "pretrain" / "log.csv") as handle:
        log = list(csv.DictReader(handle))
    assert len(log) >= 5 and all(float(row["loss"]) > 0 for row in log)
    with open(run_dir / "evaluate" / "synthetic-test" / "zeroshot.csv") as handle:
        results = {row["name"]: row for row in csv.DictReader(handle)}
    assert set(results) == set(config.plan.findings)
    scored = [float(r["auc"]) for r in results.values() if r["note"] == ""]
    assert scored and all(0.0 <= auc <= 1.0 for auc in scored)
    report = (run_dir / "report.md").read_text()
    for heading in ("## Plan", "## Reports", "## Images", "## Filter", "## Balance", "## Pre-training", "## Evaluation", "### Zero-shot classification: synthetic-test"):
        assert heading in report
    for picture in ("plots/entities.png", "plots/loss.png", "evaluate/synthetic-test/roc.png", "evaluate/results.md"):
        assert (run_dir / picture).stat().st_size > 1000
    meta = (run_dir / "run.json").read_text()
    assert "git_revision" in meta and "synthvlp_version" in meta


def test_checkpoint_of_another_model_is_refused(tmp_path):
    import torch

    from synthvlp.models import build_clip

    model = build_clip("synthvlp-tiny")[0]
    path = tmp_path / "checkpoint.pt"
    save_clip_checkpoint(path, "synthvlp-tiny", model, steps=0)
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["surplus.weight"] = torch.zeros(1)
    del payload["state_dict"]["logit_scale"]
    torch.save(payload, path)
    with pytest.raises(UserError, match=r"missing keys \['logit_scale'\], unexpected keys \['surplus.weight'\]"):
        ImageTextEngine.from_checkpoint(path)


def test_mixed_recipe_through_synthvlp_run(write_config, tmp_path):
    """`synthvlp run` with pretrain.recipe=mixed trains on the run's synthetic shards plus a real CSV corpus."""
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from pretrain_helpers import make_csv

    real = make_csv(tmp_path / "real", n=10)
    config = load_config(write_config(pretrain={"recipe": "mixed", "mix": "concat", "real": {"csv": str(real)}}))
    runner = Runner(config, prepare_run_folder(config), console=Console(record=True, width=200))
    runner.run(["plan", "reports", "images", "filter", "balance", "pretrain"])
    metrics = json.loads((runner.run_dir / "pretrain" / "metrics.json").read_text())
    synthetic = int(runner.joined_parts().to_pandas().query("selected and split == 'train'").shape[0])
    # one epoch of concat sees every synthetic and every real pair once, in full batches of 16
    assert metrics["samples"] == (synthetic + 10) // 16 * 16 > synthetic // 16 * 16
