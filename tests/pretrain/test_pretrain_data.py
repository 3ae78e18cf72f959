"""Training data: shard and CSV sources, corrupt images, the recipes' epoch orders and their split over ranks."""

from __future__ import annotations

import pytest
import torch

from conftest import SHARED_DATA
from pretrain_helpers import make_csv, make_shards
from synthvlp.config import PretrainSection, RealDataSection
from synthvlp.errors import UserError
from synthvlp.models import build_clip
from synthvlp.pretrain.data import CsvSource, Item, PairDataset, ShardSource
from synthvlp.pretrain.engine import build_dataset, train
from synthvlp.pretrain.sampling import Recipe, StepPlan

COVID_NOTES = SHARED_DATA / "covid-notes" / "pairs.csv"


@pytest.fixture(scope="module")
def tiny():
    _, transform, _, tokenizer = build_clip("synthvlp-tiny")
    return transform, tokenizer


def test_shards_are_indexed_and_read_by_offset(tmp_path, tiny):
    shards = make_shards(tmp_path, n_shards=2, per_shard=5)
    source = ShardSource(shards)
    assert len(source) == 10 and source.keys[5] == "t10000"
    image, text = source.load(7)
    assert image.size == (32, 32) and text
    dataset = PairDataset([source], *tiny, seed=0)
    pixels, tokens, key, skipped, labels = dataset[Item(7, epoch=0)]
    assert labels is None  # finding labels are read only for label-aware targets
    assert pixels.shape == (3, 64, 64) and tokens.shape == (77,) and key == "t10002" and skipped == []
    assert torch.equal(dataset[Item(7, 0)][0], pixels)  # augmentation is a function of (seed, epoch, sample)
    assert not torch.equal(dataset[Item(7, 1)][0], pixels)


def test_corrupt_image_is_skipped_counted_and_named(tmp_path, tiny):
    shards = make_shards(tmp_path / "data", n_shards=1, per_shard=16, corrupt=("t00003",))
    dataset = PairDataset([ShardSource(shards)], *tiny, seed=0)
    _, _, key, skipped, _ = dataset[Item(3, 0)]
    assert key == "t00004" and skipped == ["t00003"]
    messages = []
    settings = PretrainSection(epochs=1, batch_size=8, threads=1, warmup_steps=0, tensorboard=False)
    result = train(settings, shards, tmp_path / "run", seed=0, say=messages.append)
    assert result.skipped_images == ["t00003"]
    assert any("t00003" in m for m in messages)


def test_nan_loss_stops_with_step_and_keys(tmp_path):
    shards = make_shards(tmp_path / "data", n_shards=1, per_shard=16)
    settings = PretrainSection(epochs=3, batch_size=8, threads=1, warmup_steps=0, lr=1e20, tensorboard=False)
    with pytest.raises(UserError, match=r"loss is nan at step \d+; batch keys \['t0"):
        train(settings, shards, tmp_path / "run", seed=0, say=lambda s: None)


def test_csv_source_holds_out_whole_groups(tmp_path):
    csv = make_csv(tmp_path, n=40)
    kept = CsvSource(RealDataSection(csv=csv, holdout_fraction=0.5), seed=0)
    assert 0 < len(kept) < 40
    patients = {int(k.split("-")[1]) // 2 for k in kept.keys}
    assert all(f"real-{2 * p}" in kept.keys and f"real-{2 * p + 1}" in kept.keys for p in patients)
    with pytest.raises(UserError, match="columns \\['report'\\] not found"):
        CsvSource(RealDataSection(csv=csv, text_column="report"), seed=0)


def test_concat_visits_every_sample_once_per_epoch():
    recipe = Recipe((7, 5), "concat")
    order = recipe.order(seed=1, epoch=0)
    assert sorted(order.tolist()) == list(range(12))
    assert torch.equal(order, recipe.order(seed=1, epoch=0)) and not torch.equal(order, recipe.order(seed=1, epoch=1))


def test_ratio_draws_real_at_the_configured_rate():
    order = Recipe((300, 20), "ratio", real_fraction=0.25).order(seed=0, epoch=0)
    real = (order >= 300).float().mean().item()
    assert len(order) == 320 and abs(real - 0.25) < 0.06
    assert order[order >= 300].unique().numel() == 20  # the small real set cycles


def test_ranks_split_each_micro_batch_contiguously():
    recipe = Recipe((40,))
    one = list(StepPlan(recipe, 0, batch_size=8, accumulate=2, rank=0, world=1).micro_batches(0, 5))
    two = [list(StepPlan(recipe, 0, 8, 2, rank=r, world=2).micro_batches(0, 5)) for r in range(2)]
    assert len(one) == 10 and all(len(b) == 4 for b in one)
    assert [a + b for a, b in zip(*two, strict=True)] == one
    resumed = list(StepPlan(recipe, 0, 8, 2, 0, 1).micro_batches(3, 5))
    assert resumed == one[6:]


def test_mixed_recipe_reads_shards_and_csv(tmp_path, tiny):
    shards = make_shards(tmp_path / "data", n_shards=1, per_shard=6)
    settings = PretrainSection(recipe="mixed", real=RealDataSection(csv=make_csv(tmp_path / "real", n=4)))
    dataset, recipe = build_dataset(settings, shards, *tiny, seed=0)
    assert recipe.sizes == (6, 4) and dataset[Item(8, 0)][2] == "real-2"


def test_real_recipe_on_covid_notes(tmp_path):
    if not COVID_NOTES.exists():
        pytest.skip(f"real data not available: {COVID_NOTES} is absent")
    real = RealDataSection(csv=COVID_NOTES, holdout_fraction=0.2)
    settings = PretrainSection(recipe="real", real=real, epochs=1, max_steps=2, batch_size=8, threads=1, warmup_steps=0, tensorboard=False)
    result = train(settings, [], tmp_path / "run", seed=0, say=lambda s: None)
    assert result.steps == 2 and result.final_loss > 0 and (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.parametrize("recipe", ["synthetic", "real", "mixed"])
def test_recipe_configs_validate(recipe):
    from conftest import REPO
    from synthvlp.config import load_config

    config = load_config(REPO / "configs" / "recipes" / f"{recipe}.yaml")
    assert config.pretrain.recipe == recipe
