"""Zero-shot grounding: transform inversion, the dense token path, metrics, a set run and the overlay plot."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from synthvlp.errors import UserError
from synthvlp.evaluation import grounding, inference
from synthvlp.evaluation.inference import ImageTextEngine
from synthvlp.evaluation.benchmarks.base import LabelledSet, Region
from synthvlp.models import build_clip


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model, _, preprocess, tokenizer = build_clip("synthvlp-tiny")
    return model.eval(), preprocess, tokenizer


def _hot(row: int, col: int, size: int = 8) -> np.ndarray:
    grid = np.zeros((size, size), dtype=np.float32)
    grid[row, col] = 1.0
    return grid


def _bounds(heat: np.ndarray) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1), exclusive ends, of the pixels above 0.5."""
    ys, xs = np.nonzero(heat > 0.5)
    return ys.min(), ys.max() + 1, xs.min(), xs.max() + 1


def test_shortest_resize_and_crop_map_back_to_original_pixels(tiny):
    # 100x60 (w x h) -> Resize(64): 106x64 -> CenterCrop(64): columns 21..85 of the resized image.
    _, preprocess, _ = tiny
    tensor, frame = inference.preprocess_with_frame(preprocess, Image.new("RGB", (100, 60)))
    assert tuple(tensor.shape) == (3, 64, 64) and frame.original == (60, 100)
    heat = inference.to_original(_hot(3, 5), frame)  # input rows 24..32, columns 40..48
    assert heat.shape == (60, 100)
    y0, y1, x0, x1 = _bounds(heat)
    assert abs(y0 - 24 * 60 / 64) <= 1 and abs(y1 - 32 * 60 / 64) <= 1
    assert abs(x0 - (40 + 21) * 100 / 106) <= 1 and abs(x1 - (48 + 21) * 100 / 106) <= 1
    # original columns whose centre falls outside the crop were never seen: NaN; every row was seen.
    nan_columns = np.isnan(heat).all(axis=0)
    assert nan_columns[:20].all() and nan_columns[80:].all() and not nan_columns[20:80].any()
    assert not np.isnan(heat).all(axis=1).any()


def test_longest_resize_and_pad_map_back_to_original_pixels():
    from open_clip.transform import image_transform

    # 100x60 -> ResizeKeepRatio(longest): 64x38 -> pad to 64: 13 rows above.
    preprocess = image_transform(64, is_train=False, resize_mode="longest")
    _, frame = inference.preprocess_with_frame(preprocess, Image.new("RGB", (100, 60)))
    heat = inference.to_original(_hot(3, 2), frame)  # input rows 24..32, columns 16..24
    y0, y1, x0, x1 = _bounds(heat)
    assert abs(y0 - (24 - 13) * 60 / 38) <= 1 and abs(y1 - (32 - 13) * 60 / 38) <= 1
    assert abs(x0 - 16 * 100 / 64) <= 1 and abs(x1 - 24 * 100 / 64) <= 1
    assert not np.isnan(heat).any()


def test_a_size_changing_step_that_cannot_be_undone_is_named():
    from torchvision.transforms import Compose, Pad

    with pytest.raises(UserError, match="Pad"):
        inference.preprocess_with_frame(Compose([Pad(4)]), Image.new("RGB", (10, 10)))


def test_vit_patch_tokens_pass_ln_post_and_proj_like_the_pooled_token(tiny):
    model, _, _ = tiny
    batch = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        dense = inference.dense_features(model, batch)
        assert tuple(dense.shape) == (2, 8, 8, 64)
        # with mean pooling, encode_image is the mean of ln_post(tokens) @ proj: our tokens must average to it
        model.visual.pool_type = "avg"
        try:
            pooled = model.encode_image(batch)
        finally:
            model.visual.pool_type = "tok"
    torch.testing.assert_close(dense.mean(dim=(1, 2)), pooled, rtol=1e-4, atol=1e-5)


def test_the_patch_matching_the_text_is_hottest_in_original_pixels(tiny, monkeypatch):
    model, preprocess, tokenizer = tiny
    with torch.no_grad():
        text = model.encode_text(tokenizer(["a finding"]), normalize=True)[0]
    features = torch.randn(1, 8, 8, 64)
    features -= (features @ text)[..., None] * text  # orthogonal to the text everywhere ...
    features[0, 3, 5] = text  # ... but in one patch
    monkeypatch.setattr(inference, "dense_features", lambda m, batch: features.expand(len(batch), -1, -1, -1))
    (heat,) = ImageTextEngine(model, preprocess, tokenizer).similarity_maps([Image.new("L", (100, 60))], ["a finding"], sigma=0)
    y, x = np.unravel_index(np.nanargmax(heat), heat.shape)
    assert 22 <= y < 30 and 57 <= x < 66
    assert model.training is False


def test_resnet_tower_gives_original_size_maps():
    torch.manual_seed(0)
    model, _, preprocess, tokenizer = build_clip("synthvlp-rn50")
    model.train()
    maps = ImageTextEngine(model, preprocess, tokenizer).similarity_maps([Image.new("RGB", (50, 40), (90, 90, 90))], ["x"])
    assert maps[0].shape == (40, 50) and maps[0].dtype == np.float32
    assert np.isfinite(maps[0][:, 10:40]).all()
    assert model.training  # restored


def test_unsupported_tower_is_named():
    with pytest.raises(UserError, match="Identity"):
        inference.dense_features(SimpleNamespace(visual=torch.nn.Identity()), torch.zeros(1, 3, 8, 8))


def test_metrics_on_binary_maps_have_exact_values():
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:6, 2:6] = True  # 16 pixels
    heat = np.zeros((10, 10))
    heat[2:6, 4:8] = 1.0  # 16 pixels, 8 of them in the mask
    scores = grounding.score_region(heat, mask)
    assert scores["pointing"] == 1.0
    assert scores["iou"] == pytest.approx(8 / 24) and scores["dice"] == pytest.approx(0.5)
    miss = np.zeros((10, 10))
    miss[8, 8] = 1.0
    assert grounding.score_region(miss, mask)["pointing"] == 0.0
    assert grounding.score_region(mask.astype(float), mask)["iou"] == 1.0
    # NaN (unseen) counts as the minimum: the maximum is still found, IoU unchanged
    unseen = heat.copy()
    unseen[:, 9] = np.nan
    assert grounding.score_region(unseen, mask)["iou"] == pytest.approx(8 / 24)


def test_cnr_matches_its_definition():
    mask = np.zeros((4, 4), dtype=bool)
    mask[:2] = True
    heat = np.where(mask, np.tile([1.0, 3.0], 8).reshape(4, 4), np.tile([-1.0, 1.0], 8).reshape(4, 4))
    # inside mean 2 var 1, outside mean 0 var 1: |2 - 0| / sqrt(2)
    assert grounding.score_region(heat, mask)["cnr"] == pytest.approx(math.sqrt(2))
    assert math.isnan(grounding.score_region(heat, np.ones((4, 4), dtype=bool))["cnr"])
    assert set(grounding.score_region(heat, mask)) == set(grounding.METRICS)
    with pytest.raises(ValueError, match="empty"):
        grounding.score_region(heat, np.zeros((4, 4), dtype=bool))


def _labelled(tmp_path) -> LabelledSet:
    paths = []
    for i, size in enumerate([(80, 64), (64, 96)]):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, size[::-1], dtype=np.uint8)).save(path)
        paths.append(path)
    regions = [Region(0, "effusion", box=(10, 10, 40, 30)), Region(1, "effusion", box=(0, 0, 0, 0)),
               Region(1, "nodule", mask=np.pad(np.ones((10, 10), dtype=bool), ((40, 46), (20, 34))), phrase="small nodule")]
    return LabelledSet("toy", paths, ["a", "b"], ["effusion", "nodule"], np.ones((2, 2), dtype=np.float32), regions)


def test_ground_set_scores_regions_skips_empty_masks_and_summarises(tiny, tmp_path):
    model, preprocess, tokenizer = tiny
    labelled = _labelled(tmp_path)
    rows, summary = grounding.ground_set(ImageTextEngine(model, preprocess, tokenizer), labelled, batch_size=2, bootstrap=20)
    assert [(r["image"], r["label"], r["text"]) for r in rows] == [("a", "effusion", "There is effusion."), ("b", "nodule", "small nodule")]
    by_label = {s["label"]: s for s in summary}
    assert by_label["effusion"]["regions"] == 1 and by_label["effusion"]["skipped_empty"] == 1
    assert by_label["all"]["regions"] == 2 and by_label["all"]["skipped_empty"] == 1
    for metric in grounding.METRICS:
        low, mean, high = (by_label["all"][k] for k in (f"{metric}_ci_low", metric, f"{metric}_ci_high"))
        assert low <= mean + 1e-9 and mean <= high + 1e-9


def test_plot_overlays_writes_a_png(tiny, tmp_path):
    model, preprocess, tokenizer = tiny
    labelled = _labelled(tmp_path)
    regions = [labelled.regions[0], labelled.regions[2]]
    images = [labelled.open(r.image) for r in regions]
    maps = ImageTextEngine(model, preprocess, tokenizer).similarity_maps(images, [grounding.region_text(r) for r in regions])
    path = tmp_path / "out" / "overlays.png"
    grounding.plot_overlays(labelled, maps, regions, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
