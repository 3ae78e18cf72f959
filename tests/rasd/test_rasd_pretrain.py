"""The RaSD transfer bench's loop (bench/rasd_transfer.py): pre-training and fine-tuning on CPU with tiny MONAI UNets."""

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthvlp.evaluation.segmentation_data import load_segmentation_csv
from synthvlp.rasd import BackboneConfig, FieldsConfig, RaSDConfig, StreamConfig

pytest.importorskip("monai")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from rasd_transfer import finetune_dice, pretrain  # noqa: E402  (bench/ is not a package)

TINY = BackboneConfig(name="unet", out_channels=8, channels=(8, 16))


def test_load_finetune_round_trip(tmp_path):
    rows = ["image,mask"]
    for i in range(6):
        image = (np.random.default_rng(i).random((40, 40)) * 255).astype(np.uint8)
        mask = np.zeros((40, 40), np.uint8)
        mask[10:30, 5 + i : 25 + i] = 255
        Image.fromarray(image).save(tmp_path / f"i{i}.png")
        Image.fromarray(mask).save(tmp_path / f"m{i}.png")
        rows.append(f"i{i}.png,m{i}.png")
    (tmp_path / "index.csv").write_text("\n".join(rows) + "\n")
    data = load_segmentation_csv(tmp_path / "index.csv", 32)
    assert data.images.shape == data.masks.shape == (6, 1, 32, 32) and set(data.masks.unique().tolist()) == {0, 1}
    config = RaSDConfig(
        fields=FieldsConfig(num_labels=3), stream=StreamConfig(spatial_size=(32, 32), batch_size=2), backbone=TINY
    )
    net, losses = pretrain(config, steps=2)
    train, test = data.subset(np.arange(4)), data.subset(np.arange(4, 6))
    dice = finetune_dice(TINY, net.state_dict(), train, test, steps=2, batch_size=2)
    assert 0.0 <= dice <= 1.0 and len(losses) == 2
    assert dice == finetune_dice(TINY, net.state_dict(), train, test, steps=2, batch_size=2)  # seeded


@pytest.mark.slow
def test_2d_pretraining_lowers_the_loss():
    config = RaSDConfig(
        fields=FieldsConfig(num_labels=8),
        stream=StreamConfig(spatial_size=(96, 96), batch_size=8, refresh_fraction=0.25, seed=0),
        backbone=BackboneConfig(name="unet", out_channels=32, channels=(16, 32, 64)),
    )
    _, losses = pretrain(config, steps=300)
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert all(np.isfinite(losses))
    assert last < 0.75 * first, (first, last)
