"""``synthvlp render train`` in a VAE's latent space on a tiny Stable Diffusion folder (``tests/tiny_sd.py``):
fine-tuning it (``model.init_from``, RoentGen's recipe) resumes exactly and saves a ``StableDiffusionPipeline``
the images stage renders from; a UNet built from scratch trains on a local VAE's latents (``model.vae``); a
folder without a UNet or a VAE, and settings that do not fit, are named."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from pretrain_helpers import assert_same_render_run, make_shards, render_final_state, train_renderer_killed_and_resumed
from synthvlp.config import DiffusersSection, RenderTrainConfig, RunConfig
from synthvlp.errors import UserError
from synthvlp.pretrain.diffusion_engine import train_renderer
from tiny_sd import SIZE, build_tiny_sd


def _config(out_dir: Path, shards: list[Path], model: dict, data: dict | None = None, **train) -> RenderTrainConfig:
    settings = dict(out_dir=str(out_dir), steps=4, batch_size=4, warmup_steps=1, checkpoint_every=2, threads=1, sample_prompts=[], ema_decay=0.9)
    return RenderTrainConfig.model_validate({"data": {"shards": [str(s) for s in shards], **(data or {})}, "model": {"size": SIZE, **model},
                                             "train": settings | train})


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    [path] = folder.glob("*.safetensors")
    return load_file(path)


@pytest.fixture(scope="module")
def sd(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[Path]:
    return make_shards(tmp_path_factory.mktemp("pairs"), n_shards=1, per_shard=8)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, sd, shards) -> Path:
    out = tmp_path_factory.mktemp("tuned")
    train_renderer(_config(out, shards, {"init_from": str(sd)}, sample_prompts=["nodule"], sample_steps=2), say=lambda s: None)
    return out


def test_interrupted_fine_tune_resumes_to_the_uninterrupted_weights(tmp_path, sd, shards, tuned):
    resumed = train_renderer_killed_and_resumed(_config(tmp_path, shards, {"init_from": str(sd)}), 2)
    assert resumed.resumed_from == 2 and resumed.steps == 4
    full, _ = assert_same_render_run(tuned, tmp_path)
    assert full["model_name"] == "latent-diffusion" and full["step"] == 4
    assert {k.split(".")[0] for k in full["model"]} == {"unet", "text_encoder"}  # the VAE is frozen and not checkpointed


def test_fine_tuned_folder_is_a_stable_diffusion_pipeline_the_images_stage_renders(sd, tuned):
    from diffusers import StableDiffusionPipeline

    from synthvlp.generation.images import render_images

    pipeline = tuned / "pipeline"
    index = json.loads((pipeline / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline" and "caption_text" not in index  # prompts are the IMPRESSION, as for any SD folder
    assert (tuned / "samples" / "step-00000004.png").is_file()
    for part, trained in (("vae", False), ("unet", True), ("text_encoder", True)):
        before, after = _weights(sd / part), _weights(pipeline / part)
        assert before.keys() == after.keys()
        assert any(not torch.equal(before[k], after[k]) for k in before) == trained, part
        assert max(float((before[k] - after[k]).abs().max()) for k in before) < 0.01, part  # fine-tuned from the folder's weights, not re-initialised
    StableDiffusionPipeline.from_pretrained(pipeline, local_files_only=True)  # plain diffusers loads it, no code of ours
    config = RunConfig.model_validate(
        {"images": {"backend": "diffusers", "size": SIZE, "diffusers": {"path": str(pipeline), "steps": 2, "batch_size": 2, "device": "cpu"}}}
    )
    plan = pa.table({"id": ["s00000000", "s00000001", "s00000002"], "split": ["train"] * 3, "planned_entities": [[], [], []]})
    reports = pa.table({"findings": ["x"] * 3, "impression": ["Cardiomegaly.", "Nodule.", "Cardiomegaly."]})
    batch = render_images(config, plan, reports)
    films = [np.asarray(Image.open(io.BytesIO(s["png"]))) for s in batch.samples]
    assert [f.shape for f in films] == [(SIZE, SIZE)] * 3
    assert batch.columns.column("image_generator").to_pylist() == [f"diffusers:{pipeline.name}"] * 3
    assert not np.array_equal(films[0], films[2])


def test_a_unet_built_from_scratch_trains_on_a_local_vae(tmp_path, sd, shards):
    from synthvlp.generation.diffusion import DiffusionRenderer

    model = dict(vae=str(sd / "vae"), channels=[8, 16], attention=[False, True], head_dim=4, groups=4, text_width=16, text_layers=1, text_heads=2,
                 max_tokens=12, train_text_encoder=False)
    train_renderer(_config(tmp_path, shards, model, {"text": "report"}, steps=2), say=lambda s: None)
    pipeline = tmp_path / "pipeline"
    unet = json.loads((pipeline / "unet" / "config.json").read_text())
    assert (unet["in_channels"], unet["sample_size"]) == (4, SIZE // 2)  # the tiny VAE's 4 latent channels at half the side
    index = json.loads((pipeline / "model_index.json").read_text())
    assert (index["_class_name"], index["caption_text"], index["caption_plan"]) == ("StableDiffusionPipeline", "report", False)
    renderer = DiffusionRenderer(DiffusersSection(path=pipeline, steps=2, guidance_scale=2.0, device="cpu"))
    assert renderer.prompt("FINDINGS: Clear. IMPRESSION: Nodule.", "Nodule.", []) == "FINDINGS: Clear. IMPRESSION: Nodule."  # trained on the report
    [film] = renderer.render(["nodule"], [3], SIZE).images
    assert film.shape == (SIZE, SIZE) and film.std() > 0


def test_a_frozen_text_encoder_is_neither_trained_nor_checkpointed(tmp_path, sd, shards):
    train_renderer(_config(tmp_path, shards, {"init_from": str(sd), "train_text_encoder": False}, steps=1), say=lambda s: None)
    assert all(key.startswith("unet.") for key in render_final_state(tmp_path)["model"])
    before, after = _weights(sd / "text_encoder"), _weights(tmp_path / "pipeline" / "text_encoder")
    assert all(torch.equal(before[k], after[k]) for k in before)


def _broken_copy(sd: Path, folder: Path, part: str, unlist: bool) -> Path:
    shutil.copytree(sd, folder)
    shutil.rmtree(folder / part)
    if unlist:
        index = json.loads((folder / "model_index.json").read_text())
        del index[part]
        (folder / "model_index.json").write_text(json.dumps(index))
    return folder


@pytest.mark.parametrize(("part", "unlist", "message"), [
    ("unet", False, r"model.init_from = .*no-unet: no unet/ \(with config.json, listed in model_index.json\)"),
    ("unet", True, r"model.init_from = .*no-unet: no unet/"),
    ("vae", False, r"model.init_from = .*no-vae: no vae/config.json .*set model.vae to a local AutoencoderKL folder"),
    ("vae", True, r"model.init_from = .*no-vae: the UNet takes 4 input channels but gets one grayscale channel \(it lists no vae\)"),
])  # fmt: skip
def test_a_folder_without_its_unet_or_vae_is_named(tmp_path, sd, shards, part, unlist, message):
    folder = _broken_copy(sd, tmp_path / f"no-{part}", part, unlist)
    with pytest.raises(UserError, match=message):
        train_renderer(_config(tmp_path / "out", shards, {"init_from": str(folder)}), say=lambda s: None)


def test_a_missing_vae_folder_is_named(tmp_path, shards):
    with pytest.raises(UserError, match=r"model.vae = .*nothing: no vae/config.json"):
        train_renderer(_config(tmp_path / "out", shards, {"vae": str(tmp_path / "nothing")}), say=lambda s: None)
    with pytest.raises(UserError, match=r"model.init_from = .*nothing: no model_index.json"):
        train_renderer(_config(tmp_path / "out", shards, {"init_from": str(tmp_path / "nothing")}), say=lambda s: None)


def test_settings_that_do_not_fit_the_folder_are_named(tmp_path, sd, shards):
    with pytest.raises(ValueError, match=r"init_from takes the UNet, text encoder and noise schedule from .*; leave channels, prediction unset"):
        _config(tmp_path, shards, {"init_from": str(sd), "channels": [8, 16, 32], "prediction": "epsilon"})
    model = dict(size=36, vae=str(sd), channels=[8, 16, 16], attention=[False, False, True], head_dim=4, groups=4, text_width=16, text_heads=2)
    with pytest.raises(UserError, match=r"model.size 36: the UNet sees 18 px latents, not divisible by its downsampling 4"):
        train_renderer(_config(tmp_path / "out", shards, model), say=lambda s: None)
    inside = tmp_path / "run" / "pipeline"
    shutil.copytree(sd, inside)
    with pytest.raises(UserError, match=r"model.init_from = .* is inside train.out_dir"):
        train_renderer(_config(tmp_path / "run", shards, {"init_from": str(inside)}), say=lambda s: None)
