"""Our CNN image tower: registered like open_clip's towers, mean of its location embeddings, stride 8, checkpoints,
grounding and GLoRIA region features."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from synthvlp.config import PretrainSection
from synthvlp.convtower import ConvTower
from synthvlp.errors import UserError
from synthvlp.evaluation.inference import ImageTextEngine, dense_features
from synthvlp.models import build_clip, describe_model, list_models, model_config, save_clip_checkpoint
from synthvlp.pretrain.engine import build_model

NAME = "synthvlp-cnn-tiny"


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    model, train, preprocess, tokenizer = build_clip(NAME)
    return model.eval(), preprocess, tokenizer


def test_registered_and_described():
    assert NAME in list_models()
    assert model_config(NAME)["vision_cfg"] == {"image_size": 64}
    assert "CNN" in describe_model(NAME) and "stride 8" in describe_model(NAME)


def test_survives_open_clip_rescanning_its_configs(tmp_path):
    """open_clip's add_model_config rescans every folder; our tower configs must stay registered."""
    open_clip.add_model_config(tmp_path)
    model, *_ = build_clip(NAME)
    assert isinstance(model.visual, ConvTower)


def test_image_embedding_is_the_mean_of_an_8x8_grid(cnn):
    model, _, _ = cnn
    batch = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        dense = model.visual.dense(batch)
        pooled = model.encode_image(batch)
    assert tuple(dense.shape) == (3, 8, 8, 64)
    torch.testing.assert_close(dense.mean(dim=(1, 2)), pooled, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dense_features(model, batch), dense)


def test_the_128_px_config_is_the_same_tower_on_a_16x16_grid(cnn):
    """``synthvlp-cnn-tiny-128`` differs from the quickstart's tower only in its input side: same weights' shapes,
    preprocessing to 128 px, and twice the grid on each side."""
    model, _, preprocess = build_clip("synthvlp-cnn-tiny-128")[:3]
    assert model_config("synthvlp-cnn-tiny-128")["vision_cfg"] == {"image_size": 128}
    small = {k: v.shape for k, v in cnn[0].state_dict().items()}
    assert {k: v.shape for k, v in model.state_dict().items()} == small
    assert preprocess(Image.new("L", (256, 256))).shape[-2:] == (128, 128)
    with torch.no_grad():
        assert tuple(model.eval().visual.dense(torch.randn(1, 3, 128, 128)).shape) == (1, 16, 16, 64)


def test_checkpoint_round_trip(cnn, tmp_path):
    model, _, _ = cnn
    save_clip_checkpoint(tmp_path / "c.pt", NAME, model, steps=1)
    loaded = ImageTextEngine.from_checkpoint(tmp_path / "c.pt").model
    batch = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(batch), model.encode_image(batch))
    floor = ImageTextEngine.from_checkpoint(tmp_path / "c.pt", random_init_seed=5).model
    with torch.no_grad():
        assert not torch.allclose(floor.encode_image(batch), model.encode_image(batch))


def test_grounding_maps_in_original_pixels(cnn):
    model, preprocess, tokenizer = cnn
    (heat,) = ImageTextEngine(model, preprocess, tokenizer).similarity_maps([Image.new("L", (80, 64), 90)], ["There is a nodule."])
    assert heat.shape == (64, 80) and np.isfinite(heat[:, 10:70]).all()


def test_gloria_takes_its_last_feature_map_as_regions():
    model, _, _ = build_model(PretrainSection(model=NAME, objective="gloria"))
    tokens = torch.ones(2, 77, dtype=torch.long)
    features = model(torch.randn(2, 3, 64, 64), tokens)
    assert tuple(features.regions.shape[:2]) == (2, 64)


def test_blocks_must_name_every_stage():
    with pytest.raises(ValueError, match="4 stage counts"):
        ConvTower(32, 64, blocks=(1, 1))


def test_unknown_tower_kind_is_named(monkeypatch):
    from synthvlp import models

    config = model_config(NAME)
    config["synthvlp_vision"]["tower"] = "transformer"
    with pytest.raises(UserError, match="'transformer' is unknown"):
        models._our_tower(config["synthvlp_vision"], config, build_clip(NAME)[0].visual)


@pytest.mark.parametrize("output_stride", [8, 4])
def test_a_location_is_centred_on_its_cell(output_stride):
    """Grounding draws location (i, j) over its cell's centre; the pixels it responds to must centre there too
    (a strided 3x3 convolution would shift them half a step per downsampling)."""
    torch.manual_seed(0)
    tower = ConvTower(8, 64, 16, output_stride=output_stride).eval()
    cell = 24 // output_stride
    response = torch.zeros(64, 64)
    for _ in range(10):
        images = torch.randn(1, 3, 64, 64, requires_grad=True)
        tower.dense(images)[0, cell, cell].sum().backward()
        response += images.grad.abs().sum(dim=(0, 1))
    rows, cols = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    centre = cell * output_stride + (output_stride - 1) / 2
    assert abs(float((response * rows).sum() / response.sum()) - centre) < 1.0
    assert abs(float((response * cols).sum() / response.sum()) - centre) < 1.0
