"""Fine-tuning protocols: label-fraction splits, linear probe, full fine-tuning and U-Net segmentation transfer."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from synthvlp.errors import UserError
from synthvlp.evaluation.benchmarks.base import LabelledSet
from synthvlp.evaluation.finetune import full_finetune, label_fraction_split, linear_probe, mean_auc, train_classifier
from synthvlp.evaluation.inference import ImageTextEngine
from synthvlp.checkpoints import ClipCheckpoint, ImageEncoderCheckpoint, load
from synthvlp.evaluation.segmentation import build_unet, dice_scores, finetune_segmentation, input_size, train_segmentation
from synthvlp.models import build_clip, image_tower, save_clip_checkpoint, save_image_encoder
from synthvlp.evaluation.segmentation_data import SegmentationSet, dice_per_image, load_segmentation_csv

from conftest import SHARED_DATA

torch.set_num_threads(1)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def brightness_set(n: int, seed: int, name: str = "toy") -> LabelledSet:
    """Noisy grey images; class 'bright' is 1 when the image is bright, class 'coin' is a fair coin (unlearnable)."""
    rng = np.random.default_rng(seed)
    bright = rng.random(n) < 0.5
    images = [_png(np.clip(rng.normal(170 if b else 80, 30, (48, 48)), 0, 255).astype(np.uint8)) for b in bright]
    labels = np.stack([bright, rng.random(n) < 0.5], axis=1).astype(np.float32)
    return LabelledSet(name, images, [f"{name}{i}" for i in range(n)], ["bright", "coin"], labels,
                       group=[f"p{i // 2}" for i in range(n)])


def tiny_engine(seed: int = 0) -> ImageTextEngine:
    torch.manual_seed(seed)
    model, _, preprocess, tokenizer = build_clip("synthvlp-tiny")
    return ImageTextEngine(model.eval(), preprocess, tokenizer)


def test_fraction_split_is_deterministic_whole_patient_and_keeps_positives():
    n = 200
    labels = np.zeros((n, 2), dtype=np.float32)
    labels[[17, 101, 150], 0] = 1  # a rare class
    labels[::2, 1] = 1
    labels[5:9, 1] = np.nan
    group = [f"p{i // 4}" for i in range(n)]
    labelled = LabelledSet("split", [b""] * n, [str(i) for i in range(n)], ["rare", "common"], labels, group=group)
    for fraction in (0.01, 0.1):
        first = label_fraction_split(labelled, fraction, seed=3)
        assert np.array_equal(first, label_fraction_split(labelled, fraction, seed=3))
        assert len({tuple(label_fraction_split(labelled, fraction, seed)) for seed in range(5)}) > 1  # seeds differ
        assert math.ceil(fraction * n) <= len(first) <= math.ceil(fraction * n) + 4 * 3  # at most a patient per class over
        taken = {group[i] for i in first}
        assert sorted(first) == [i for i in range(n) if group[i] in taken]  # whole patients only
        assert (labels[first] == 1).any(axis=0).all()  # a positive of each class, even the rare one
    assert np.array_equal(label_fraction_split(labelled, 1.0, seed=0), np.arange(n))
    with pytest.raises(UserError):
        label_fraction_split(labelled, 0.0, seed=0)


def test_linear_probe_separates_brightness_and_skips_nan_labels():
    engine = tiny_engine()
    train, test = brightness_set(80, seed=1), brightness_set(80, seed=2, name="test")
    train.labels[:10, 0] = np.nan  # unknown, not negative: must not count as training rows
    rows = linear_probe(engine, train, test, fractions=(1.0,), seeds=(0,))
    by_class = {r["class"]: r for r in rows}
    assert by_class["bright"]["auc"] > 0.9
    assert abs(by_class["coin"]["auc"] - 0.5) < 0.2  # a random label: chance level
    assert by_class["bright"]["n_train"] == 70
    assert by_class["bright"]["n_train_pos"] == int(np.nansum(train.labels[:, 0]))
    assert by_class["bright"]["n_test"] == 80
    # Control: shuffled labels on both sides carry no image information, so no probe can beat chance.
    shuffled_train, shuffled_test = train.select(range(len(train))), test.select(range(len(test)))
    for labelled, seed in ((shuffled_train, 0), (shuffled_test, 1)):
        labelled.labels[:, 0] = np.random.default_rng(seed).permutation(labelled.labels[:, 0])
    control = linear_probe(engine, shuffled_train, shuffled_test, fractions=(1.0,))
    assert abs(control[0]["auc"] - 0.5) < 0.2
    (summary,) = mean_auc(rows)
    assert summary["mean_auc"] == pytest.approx((by_class["bright"]["auc"] + by_class["coin"]["auc"]) / 2)


def test_full_finetune_lowers_training_loss_and_leaves_the_callers_model_alone():
    engine = tiny_engine()
    before = {k: v.clone() for k, v in engine.model.state_dict().items()}
    train = brightness_set(32, seed=1)
    _, losses = train_classifier(engine, train, epochs=4, batch_size=16, lr=1e-3, head_lr=1e-2, seed=0)
    assert losses[-1] < losses[0]
    rows = full_finetune(engine, train, brightness_set(16, seed=2, name="test"), fractions=(0.5,), epochs=1)
    assert [r["class"] for r in rows] == ["bright", "coin"] and {r["protocol"] for r in rows} == {"full_finetune"}
    assert all(torch.equal(before[k], v) for k, v in engine.model.state_dict().items())


def disc_set(n: int, size: int, seed: int) -> SegmentationSet:
    """Bright discs of random centre and radius on a dark noisy background; the disc is the foreground."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, masks = [], []
    for _ in range(n):
        cy, cx, r = rng.uniform(0.3, 0.7) * size, rng.uniform(0.3, 0.7) * size, rng.uniform(0.15, 0.3) * size
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        images.append(np.clip(0.2 + 0.6 * mask + rng.normal(0, 0.05, mask.shape), 0, 1))
        masks.append(mask)
    return SegmentationSet(torch.tensor(np.stack(images), dtype=torch.float32).unsqueeze(1),
                           torch.tensor(np.stack(masks)).long().unsqueeze(1))


def test_vit_unet_keeps_the_input_size_and_learns_discs():
    visual = tiny_engine().visual
    size = input_size(visual)
    torch.manual_seed(0)
    net = build_unet(visual)
    train, test = disc_set(16, size[0], seed=0), disc_set(8, size[0], seed=1)
    assert net(torch.zeros(2, 3, *size)).shape == (2, 2, *size)
    before = dice_scores(net, visual, test).mean()
    losses = train_segmentation(net, visual, train, epochs=6, batch_size=8, lr=3e-3, encoder_lr=1e-4, seed=0)
    assert losses[-1] < losses[0]
    assert dice_scores(net, visual, test).mean() > max(before + 0.1, 0.6)


def test_resnet_unet_keeps_the_input_size():
    model = build_clip("synthvlp-rn50")[0].eval()
    net = build_unet(model.visual).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 3, *input_size(model.visual))).shape == (1, 2, *input_size(model.visual))


def test_segmentation_loads_the_pretrained_encoder_and_compares_with_scratch(tmp_path):
    model = tiny_engine(seed=5).model
    path = tmp_path / "encoder.pt"
    save_image_encoder(path, "synthvlp-tiny", model.visual, source="test")
    record = load(path, ClipCheckpoint, ImageEncoderCheckpoint)
    tower = image_tower(record)
    assert isinstance(record, ImageEncoderCheckpoint) and torch.equal(tower.conv1.weight, model.visual.conv1.weight)
    save_clip_checkpoint(tmp_path / "clip.pt", "synthvlp-tiny", model, steps=1)
    from_clip = load(tmp_path / "clip.pt", ClipCheckpoint, ImageEncoderCheckpoint)
    assert from_clip.model_name == "synthvlp-tiny" and torch.equal(image_tower(from_clip).conv1.weight, model.visual.conv1.weight)
    data = disc_set(10, 64, seed=0)
    rows = finetune_segmentation(tower, record.model_name, data, disc_set(4, 64, seed=1), fractions=(0.5,), seeds=(0,), epochs=1, bootstrap=50)
    assert [(r["init"], r["n_train"]) for r in rows] == [("pretrained", 5), ("scratch", 5)]
    assert all(r["dice_ci_low"] <= r["dice_mean"] <= r["dice_ci_high"] for r in rows)
    assert torch.equal(tower.conv1.weight, model.visual.conv1.weight)  # the tower is copied, not trained
    with pytest.raises(UserError, match="needs some at"):
        finetune_segmentation(tower, record.model_name, disc_set(2, 32, seed=0), data, epochs=1)


def test_holdout_keeps_every_image_once_and_at_least_one_for_testing():
    data = disc_set(10, 16, seed=0)
    train, test = data.holdout(0.3)
    assert (len(train.images), len(test.images)) == (7, 3)
    rows = {tuple(image.flatten()[:8].tolist()) for image in torch.cat([train.images, test.images])}
    assert len(rows) == 10  # no image twice, none lost
    again_train, _ = data.holdout(0.3)
    assert torch.equal(train.images, again_train.images)
    assert len(data.holdout(0.01)[1].images) == 1


COVID = SHARED_DATA / "covid-lungs" / "index.csv"


def covid_split(rows: list[dict[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) rows, about 80/20; images of one source (DOI, else URL) stay on one side, as patients are unknown."""
    source = [row["doi"] or row["source_url"] or row["image"] for row in rows]
    test: list[int] = []
    for name in np.random.default_rng(0).permutation(sorted(set(source))):
        members = [i for i, s in enumerate(source) if s == name]
        if len(test) + len(members) <= len(rows) // 5:
            test += members
    return np.array(sorted(set(range(len(rows))) - set(test))), np.array(sorted(test))


@pytest.mark.slow
@pytest.mark.skipif(not COVID.exists(), reason=f"{COVID} not present")
def test_covid_lungs_segmentation_at_ten_percent():
    with open(COVID, newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: row["image"])  # load_segmentation_csv's order
    data = load_segmentation_csv(COVID, 64)
    train_rows, test_rows = covid_split(rows)
    visual = tiny_engine(seed=1).visual  # a stand-in "pretrained" tower, other than the scratch init (seed 0)
    results = finetune_segmentation(visual, "synthvlp-tiny", data.subset(train_rows), data.subset(test_rows),
                                    fractions=(0.1,), seeds=(0,), epochs=30, say=print)
    assert {r["init"] for r in results} == {"pretrained", "scratch"}
    assert all(r["dice_mean"] > 0.3 for r in results)


def test_dice_hand_cases():
    masks = torch.tensor([[[[1, 1, 0, 0]]], [[[0, 0, 0, 0]]], [[[1, 0, 0, 0]]]])
    predicted = torch.tensor([[[[1, 0, 0, 0]]], [[[0, 0, 0, 0]]], [[[0, 1, 0, 0]]]])
    logits = torch.nn.functional.one_hot(predicted[:, 0], 2).permute(0, 3, 1, 2).float()
    assert dice_per_image(logits, masks).tolist() == pytest.approx([2 / 3, 1.0, 0.0])
