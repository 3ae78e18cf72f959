"""``bench/transfer_seeds.py``: the paired and floor statistics, and a run scored through ``synthvlp evaluate``
beside a floor of random-init models."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from transfer_seeds import Scores, above_floor, main, paired, report  # noqa: E402

from synthvlp.models import build_clip, save_clip_checkpoint  # noqa: E402


def test_paired_sign_flip_p_and_interval():
    six_up = paired([0.5] * 6, [0.6, 0.55, 0.52, 0.7, 0.51, 0.58])
    assert six_up["higher"] == 6 and six_up["p"] == pytest.approx(2 / 64) and six_up["low"] > 0
    assert six_up["mean"] == pytest.approx(np.mean([0.1, 0.05, 0.02, 0.2, 0.01, 0.08]))
    mixed = paired([0.5, 0.5, 0.5, 0.5], [0.6, 0.4, 0.6, 0.4])
    assert mixed["mean"] == pytest.approx(0.0) and mixed["p"] == 1.0 and mixed["higher"] == 2


def test_above_floor_is_welch():
    floor = list(np.random.default_rng(0).normal(0.52, 0.065, 40))
    inside = above_floor([0.53, 0.55, 0.51, 0.54], floor)  # within the floor's spread and near its mean
    clear = above_floor([0.70, 0.72, 0.71, 0.69], floor)
    assert inside["p"] > 0.05 and inside["low"] < 0 < inside["high"]
    assert clear["p"] < 1e-4 and clear["low"] > 0.1 and clear["mean"] == pytest.approx(0.705 - np.mean(floor))


def test_report_pairs_recipes_by_seed():
    def scores(seed: int, mean: float) -> Scores:
        return Scores(seed, {"nodule": mean, "mass": mean}, mean)

    floor = [scores(k, 0.5 + 0.01 * (k % 3 - 1)) for k in range(6)]
    text = report({"a": [scores(1, 0.6), scores(2, 0.7)], "b": [scores(2, 0.8), scores(1, 0.7), scores(9, 0.1)]}, {"m": floor}, {"a": "m", "b": "m"})
    assert "| nodule | 0.650 | 0.533 | 0.500 (0.490-0.510) |" in text and "random-init floor (6 seeds)" in text
    assert "| b | +0.100 (" in text and "| 2 of 2 | 0.500 |" in text  # seed 9 has no partner in a
    alone = report({"a": [scores(1, 0.6), scores(2, 0.7)], "one": [scores(0, 0.505)]}, {"m": floor}, {"a": "m", "one": "m"})
    assert "| one | 0.505 (one seed) | +0.005 (above 67% of the floor's seeds) | - |" in alone


def test_report_sets_each_recipe_against_its_own_models_floor():
    def scores(seed: int, mean: float) -> Scores:
        return Scores(seed, {"nodule": mean}, mean)

    floors = {"small": [scores(k, 0.50 + 0.01 * (k % 2)) for k in range(4)], "big": [scores(k, 0.60 + 0.01 * (k % 2)) for k in range(4)]}
    text = report({"a": [scores(1, 0.6), scores(2, 0.7)], "b": [scores(1, 0.6), scores(2, 0.7)]}, floors, {"a": "small", "b": "big"})
    assert "| random-init small (4 seeds) | random-init big (4 seeds) |" in text
    assert "| nodule | 0.650 | 0.650 | 0.505 (0.500-0.510) | 0.605 (0.600-0.610) |" in text
    assert "| a | 0.650 (0.015-1.285) | +0.145 (" in text and "| b | 0.650 (0.015-1.285) | +0.045 (" in text


def test_a_run_is_scored_beside_a_floor_and_cached(tmp_path):
    run = tmp_path / "s3-tiny"
    (run / "pretrain").mkdir(parents=True)
    save_clip_checkpoint(run / "pretrain" / "checkpoint.pt", "synthvlp-tiny", build_clip("synthvlp-tiny")[0], steps=0)
    config = {"run": {"seed": 3}, "pretrain": {"model": "synthvlp-tiny"}, "evaluate": {"min_positives": 2, "bootstrap": 0}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    real = tmp_path / "real"
    (real / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = ["path,Effusion"]
    for i in range(8):
        Image.fromarray((rng.random((64, 64)) * 255).astype(np.uint8)).save(real / "images" / f"{i}.png")
        lines.append(f"images/{i}.png,{i % 2}")
    (real / "labels.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    argv = ["--recipe", "tiny", str(run), "--real", str(real / "labels.csv"), "--benchmark", "generic", "--out", str(out), "--floor-seeds", "3"]
    assert main(argv) == 0
    text = (out / "transfer.md").read_text()
    assert "| pleural effusion |" in text and "| tiny | " in text and "random-init floor (3 seeds)" in text
    assert sorted(p.name for p in (out / "floors" / "synthvlp-tiny").iterdir()) == ["seed-0", "seed-1", "seed-2"]
    assert Image.open(out / "transfer.png").size[0] > 200  # the strip plot: one column for the run, one for the floor
    (run / "pretrain" / "checkpoint.pt").unlink()  # a rerun reads the cached scores, not the checkpoint
    assert main(argv) == 0 and (out / "transfer.md").read_text() == text
