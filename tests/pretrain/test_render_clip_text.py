"""``model.text_encoder`` = a synthvlp CLIP checkpoint: its open_clip text tower and tokenizer, converted to a
transformers CLIPTextModel and CLIPTokenizer, condition the renderer frozen, and the saved folder renders through
the images stage."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
import torch

from pretrain_helpers import make_shards
from synthvlp.clip_text import load_clip_text
from synthvlp.config import RenderTrainConfig, RunConfig
from synthvlp.errors import UserError
from synthvlp.models import build_clip, save_clip_checkpoint
from synthvlp.pretrain.diffusion_engine import train_renderer

REPORTS = ["FINDINGS: Small left pleural effusion. IMPRESSION: No acute cardiopulmonary process.",
           "Cardiomegaly; 3 cm nodule at the right base & mild edema!", ""]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, torch.nn.Module, object]:
    """A tiny CLIP checkpoint as `synthvlp pretrain` writes it, its LayerNorms perturbed so a swapped weight shows."""
    torch.manual_seed(0)
    model, _, _, tokenizer = build_clip("synthvlp-tiny")
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "ln" in name:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    path = tmp_path_factory.mktemp("clip") / "checkpoint.pt"
    save_clip_checkpoint(path, "synthvlp-tiny", model, steps=0)
    return path, model.eval(), tokenizer


def _open_clip_hidden_states(model, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip's text tower up to its final LayerNorm (what encode_text pools the end token from)."""
    x = model.token_embedding(tokens) + model.positional_embedding
    return model.ln_final(model.transformer(x, attn_mask=model.attn_mask))


def test_the_converted_tower_reads_reports_as_open_clip_does(clip):
    path, model, tokenizer = clip
    hf_tokenizer, encoder = load_clip_text(path)
    ours = tokenizer(REPORTS)
    theirs = hf_tokenizer(REPORTS, padding="max_length", max_length=hf_tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    assert torch.equal(ours, theirs)  # same ids, padding with 0, '!' in a report read as text
    with torch.no_grad():
        assert torch.allclose(_open_clip_hidden_states(model, ours), encoder(theirs).last_hidden_state, atol=1e-5)


def test_a_clip_text_tower_conditions_the_renderer_frozen_and_renders_through_the_images_stage(tmp_path, clip):
    from synthvlp.generation.images import render_images

    path, model, _ = clip
    shards = make_shards(tmp_path / "data", n_shards=1, per_shard=6)
    settings = dict(size=16, channels=[8, 16], attention=[False, True], head_dim=4, groups=4, text_encoder=str(path))
    train = dict(out_dir=str(tmp_path / "out"), steps=1, batch_size=2, warmup_steps=0, threads=1, sample_prompts=[])
    train_renderer(RenderTrainConfig.model_validate({"data": {"shards": [str(s) for s in shards]}, "model": settings, "train": train}), say=lambda s: None)
    [state] = (tmp_path / "out" / "state").glob("*/step-*.pt")
    assert all(key.startswith("unet.") for key in torch.load(state, weights_only=True)["model"])  # frozen: not trained or checkpointed
    pipeline = tmp_path / "out" / "pipeline"
    index = json.loads((pipeline / "model_index.json").read_text())
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"] and index["tokenizer"] == ["transformers", "CLIPTokenizer"]
    _, converted = load_clip_text(path)
    from transformers import CLIPTextModel

    saved = CLIPTextModel.from_pretrained(pipeline / "text_encoder").state_dict()
    assert all(torch.equal(tensor, saved[key]) for key, tensor in converted.state_dict().items())
    config = RunConfig.model_validate({"images": {"backend": "diffusers", "size": 16, "diffusers": {"path": str(pipeline), "steps": 1, "batch_size": 2, "device": "cpu"}}})
    plan = pa.table({"id": ["a", "b"], "split": ["train"] * 2, "planned_entities": [[], []]})
    batch = render_images(config, plan, pa.table({"findings": ["x", "y"], "impression": ["Cardiomegaly.", "No acute process."]}))
    assert len(batch.samples) == 2


def test_a_file_that_is_no_clip_checkpoint_is_named(tmp_path, clip):
    bad = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(UserError, match="weights.pt"):
        load_clip_text(bad)
