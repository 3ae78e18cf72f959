"""``bench/lung_geometry.py``'s segmenter path: human masks read as ``lung_transfer``'s ``SegmentationSet`` (frontal
rows only, squared), trained by ``lung_transfer.train`` and read back as at most two lung fields a film."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from lung_geometry import NET_SIZE, human_masks, segment_films  # noqa: E402
from lung_transfer import render_lungs, train  # noqa: E402


def _write_set(folder: Path, count: int) -> None:
    """``count`` projection films 48 px wide and 64 px tall with their lung masks, an index.csv (one extra lateral
    row) and a labels.csv of the same films."""
    rows = []
    for i in range(count):
        film, mask = render_lungs("projection", [], 64, np.random.default_rng(i))
        Image.fromarray((film[:, 8:56] * 255).astype(np.uint8)).save(folder / f"film{i}.png")
        Image.fromarray(mask[:, 8:56].astype(np.uint8) * 255).save(folder / f"mask{i}.png")
        rows.append({"image": f"film{i}.png", "mask": f"mask{i}.png", "view": "PA", "path": f"film{i}.png"})
    rows.append({**rows[0], "view": "L"})
    for name, columns in (("index.csv", ["image", "mask", "view"]), ("labels.csv", ["path"])):
        with open(folder / name, "w", newline="") as handle:
            writer = csv.DictWriter(handle, columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows[:-1] if name == "labels.csv" else rows)


def test_human_masks_feed_lung_transfer_training_and_segment_films(tmp_path):
    _write_set(tmp_path, 4)
    human = human_masks(tmp_path / "index.csv", 32)
    assert human.images.shape == human.masks.shape == (4, 1, 32, 32)  # the lateral row is left out
    assert human.images.dtype.is_floating_point and 0.0 <= human.images.min() and human.images.max() <= 1.0
    assert set(human.masks.unique().tolist()) == {0, 1}
    assert not human.images[:, 0, :, :3].any() and not human.images[:, 0, :, -3:].any()  # padded, not stretched
    fields = segment_films(train(human, steps=2, seed=0), tmp_path)
    assert len(fields) == 4
    for field in fields:
        assert field.shape == (NET_SIZE, NET_SIZE) and field.dtype == bool
        assert ndimage.label(field)[1] <= 2
