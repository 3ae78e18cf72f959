"""Model configs and checkpoints: our JSON towers build, an HF text tower loads from a local folder, and image
encoders (e.g. RaSD-pretrained) load into the image tower or are refused naming the mismatched keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from synthvlp.config import PretrainSection
from synthvlp.errors import UserError
from synthvlp.models import build_clip, list_models, save_image_encoder
from synthvlp.pretrain.engine import build_model


def test_our_configs_are_registered():
    names = set(list_models())
    assert {"synthvlp-tiny", "synthvlp-rn50", "synthvlp-vit-b-16", "synthvlp-vit-b-16-bert"} <= names


def test_hf_tower_needs_its_local_folder(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="hf_model_name 'models/Bio_ClinicalBERT' is not a local folder"):
        build_clip("synthvlp-vit-b-16-bert")


@pytest.fixture
def tiny_bert_model(tmp_path):
    """A 2-layer BERT saved with a 30-word vocabulary, and a model config whose text tower points at it."""
    import open_clip
    from transformers import BertConfig, BertModel

    folder = tmp_path / "tiny-bert"
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "no", "pleural", "effusion", "cardiomegaly", "clear", "lungs", "heart", "size", "normal", "."]
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    BertModel(BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)).save_pretrained(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True}))
    config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 8},
        "text_cfg": {"hf_model_name": str(folder), "hf_tokenizer_name": str(folder), "hf_proj_type": "linear", "hf_pooler_type": "cls_pooler", "context_length": 16},
    }
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "test-tiny-bert.json").write_text(json.dumps(config))
    open_clip.add_model_config(configs)
    return "test-tiny-bert"


@pytest.mark.parametrize("objective", ["clip", "gloria"])
def test_hf_text_tower_trains_both_objectives(tiny_bert_model, objective):
    from synthvlp.pretrain.distributed import World
    from synthvlp.config import OBJECTIVES

    model, transform, tokenizer = build_model(PretrainSection(model=tiny_bert_model, objective=objective, gloria={"local_dim": 8}))
    tokens = tokenizer(["no pleural effusion.", "cardiomegaly"])
    features = model(torch.randn(2, 3, 32, 32), tokens)
    losses = OBJECTIVES.load(objective)(PretrainSection(objective=objective), [], Path("unused"), seed=0)
    losses.world = World(0, 1, 0, torch.device("cpu"))  # what the skeleton's build() sets
    global_loss, local_loss = losses.global_loss(features, None), losses.local_loss(features)
    (global_loss + local_loss).backward()
    assert torch.isfinite(global_loss + local_loss)
    if objective == "gloria":
        assert features.words.shape[:2] == tokens.shape and features.word_mask.sum(1).tolist() == [6, 3]  # [CLS] words [SEP]


def test_image_encoder_initialises_the_image_tower(tmp_path):
    donor = build_clip("synthvlp-tiny")[0]
    path = tmp_path / "encoder.pt"
    save_image_encoder(path, "synthvlp-tiny", donor.visual, source="rasd")
    model, _, _ = build_model(PretrainSection(image_encoder=path))
    for key, value in donor.visual.state_dict().items():
        assert torch.equal(model.clip.visual.state_dict()[key], value)


def test_image_encoder_of_another_model_config_is_refused(tmp_path):
    donor = build_clip("synthvlp-tiny")[0]
    path = tmp_path / "encoder.pt"
    save_image_encoder(path, "synthvlp-tiny", donor.visual, source="rasd")
    with pytest.raises(UserError, match=r"encoder.pt: image encoder for model 'synthvlp-tiny' does not match the model: missing keys \['attnpool"):
        build_model(PretrainSection(model="synthvlp-rn50", image_encoder=path))


def test_resnet_tower_gives_gloria_regions(tmp_path):
    import open_clip

    config = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "patch_size": None},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    (tmp_path / "test-tiny-rn.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path)
    model, _, tokenizer = build_model(PretrainSection(model="test-tiny-rn", objective="gloria", gloria={"local_dim": 8}))
    features = model(torch.randn(2, 3, 64, 64), tokenizer(["a", "b"]))
    assert features.regions.shape == (2, 4, 8)  # 64 px / 32 = a 2x2 feature map


def test_cli_lists_our_models_and_explains_pretrain():
    from typer.testing import CliRunner

    from synthvlp.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["models", "list", "--ours"])
    assert listed.exit_code == 0 and "synthvlp-rn50  (synthvlp)  embed 512; image: ResNet" in listed.output
    assert "coca" not in listed.output
    helped = runner.invoke(app, ["pretrain", "--help"])
    assert helped.exit_code == 0 and "torchrun" in helped.output and "Resumable" in helped.output
