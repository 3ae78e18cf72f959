"""Grounding through a real open_clip ViT whose patch-text similarity is known by construction (an oracle).

The oracle's weights make every patch embedding ``[mean pixel value of the patch, c, 0, ...]`` and its text
embedding ``[1, 0, ...]``, so the cosine similarity of a patch is ``m / sqrt(m^2 + c^2)``: it rises with the
patch's brightness and nothing else (its dot product, the "contribution" map, is the brightness itself). Its map
must therefore peak on the brightest region, in original pixels,
after the real dense path (``dense_features``), the eval transform's resize and crop, and ``to_original``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from synthvlp.evaluation import grounding, inference
from synthvlp.evaluation.inference import ImageTextEngine
from synthvlp.evaluation.benchmarks import load_benchmark
from synthvlp.evaluation.benchmarks.base import LabelledSet
from synthvlp.models import build_clip
from tests.conftest import SHARED_DATA


class BrightnessOracle(nn.Module):
    """An open_clip ``VisionTransformer`` rewired to embed each patch as (mean intensity, constant), and a text
    tower that embeds every phrase as the first axis."""

    def __init__(self) -> None:
        super().__init__()
        clip, _, self.preprocess, self.tokenizer = build_clip("synthvlp-tiny")
        visual = clip.visual
        width, dim = visual.conv1.out_channels, visual.proj.shape[1]
        with torch.no_grad():
            visual.conv1.weight.zero_()
            visual.conv1.weight[0] = 1.0 / visual.conv1.weight[0].numel()  # channel 0: the patch's mean value
            visual.class_embedding.zero_()
            visual.positional_embedding.zero_()
            visual.positional_embedding[:, 1] = 3.0  # channel 1: a constant, so the norm keeps the brightness
            for block in visual.transformer.resblocks:  # every residual branch adds nothing: blocks are identities
                for linear in (block.attn.out_proj, block.mlp.c_proj):
                    linear.weight.zero_()
                    linear.bias.zero_()
            visual.proj.zero_()
            visual.proj[0, 0] = visual.proj[1, 1] = 1.0
        visual.ln_pre = nn.Identity()
        visual.ln_post = nn.Identity()
        self.visual = visual
        self.dim, self.width = dim, width

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        text = torch.zeros(len(tokens), self.dim)
        text[:, 0] = 1.0
        return text


@pytest.fixture(scope="module")
def oracle() -> BrightnessOracle:
    return BrightnessOracle().eval()


def test_oracle_patch_similarity_is_its_brightness(oracle):
    batch = torch.zeros(1, 3, 64, 64)
    batch[0, :, 8:16, 24:32] = 2.0
    batch[0, :, 40:48, 0:8] = 1.0
    with torch.no_grad():
        dense = inference.dense_features(oracle, batch)
    assert tuple(dense.shape) == (1, 8, 8, oracle.dim)
    torch.testing.assert_close(dense[0, 1, 3, :2], torch.tensor([2.0, 3.0]))
    torch.testing.assert_close(dense[0, 5, 0, :2], torch.tensor([1.0, 3.0]))
    torch.testing.assert_close(dense[0, 0, 0, :2], torch.tensor([0.0, 3.0]))


@pytest.mark.parametrize("kind", inference.MAP_KINDS)
def test_peak_lands_in_the_region_after_resize_and_crop(oracle, kind):
    # 100 wide x 140 high: Resize(64) -> 64x90, CenterCrop(64) drops 13 resized rows (~20 original) at each end.
    pixels = np.full((140, 100), 60, dtype=np.uint8)
    pixels[70:90, 15:35] = 200  # the region, inside the crop
    pixels[0:12, 40:80] = 255  # brighter, but cropped away: the model never sees it
    mask = np.zeros_like(pixels, dtype=bool)
    mask[70:90, 15:35] = True
    (heat,) = ImageTextEngine(oracle, oracle.preprocess, oracle.tokenizer).similarity_maps([Image.fromarray(pixels)], ["the region"], kind=kind)
    assert heat.shape == (140, 100)
    assert np.isnan(heat[:15]).all() and np.isnan(heat[-15:]).all()  # cut off by the crop: unseen, not scored
    score = grounding.score_region(heat, mask)
    assert score["pointing"] == 1.0
    assert score["chance"] == pytest.approx(mask.sum() / np.isfinite(heat).sum())
    assert score["cnr"] > 1.0


NIH_256 = SHARED_DATA / "nih-real-256"


@pytest.mark.skipif(not (NIH_256 / "boxes.csv").is_file(), reason=f"real data {NIH_256} is absent")
def test_real_benchmark_box_in_original_pixels(oracle, tmp_path):
    """A real NIH film and its expert box (256 px coordinates, read by the benchmark adapter): with the box made the
    film's brightest part, the map mapped back to 256 px must peak inside it."""
    boxed = load_benchmark("nih", NIH_256)
    region = boxed.regions[0]
    film = np.asarray(boxed.open(region.image).convert("L"), dtype=np.float32)
    x0, y0, x1, y1 = (int(round(v)) for v in region.box)
    edited = film * 0.5
    edited[y0:y1, x0:x1] = 255.0
    path = tmp_path / "film.png"
    Image.fromarray(edited.astype(np.uint8)).save(path)
    one = LabelledSet("nih-oracle", [path], ["film"], [region.label], np.ones((1, 1), np.float32),
                      [type(region)(0, region.label, region.box)])
    rows, summary = grounding.ground_set(ImageTextEngine(oracle, oracle.preprocess, oracle.tokenizer), one, bootstrap=0, kind="contribution")
    assert film.shape == (256, 256) and len(rows) == 1
    assert rows[0]["pointing"] == 1.0
    assert rows[0]["iou"] > 3 * rows[0]["chance"]  # far above a map that marks the whole film
