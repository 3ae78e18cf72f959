"""The diffusers backend on a tiny Stable Diffusion pipeline built from configs, saved and loaded back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from synthvlp.config import DiffusersSection, RunConfig
from synthvlp.errors import UserError
from synthvlp.generation.diffusion import DiffusionRenderer, check_folder
from tiny_sd import MAX_TOKENS, SIZE, build_tiny_sd


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("tiny-roentgen"))


def _settings(folder: Path, **extra) -> DiffusersSection:
    return DiffusersSection(path=folder, steps=2, guidance_scale=3.0, negative_prompt="blurry", device="cpu", **extra)


@pytest.mark.slow
def test_batching_never_changes_an_image(pipeline_dir):
    renderer = DiffusionRenderer(_settings(pipeline_dir))
    prompts = ["Left pleural effusion.", "Cardiomegaly."]
    together = renderer.render(prompts, [11, 12], SIZE).images
    alone = [renderer.render([p], [s], SIZE).images[0] for p, s in zip(prompts, [11, 12], strict=True)]
    assert all(image.shape == (SIZE, SIZE) and image.dtype == np.uint8 for image in together)
    for a, b in zip(together, alone, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # batched matmuls may round differently
    assert not np.array_equal(together[0], together[1])


@pytest.mark.slow
def test_long_impressions_are_truncated_and_counted(pipeline_dir):
    renderer = DiffusionRenderer(_settings(pipeline_dir))
    text, cut = renderer.fit_prompt("Large left pleural effusion with adjacent compressive atelectasis.")
    assert cut and len(renderer.pipeline.tokenizer(text)["input_ids"]) <= MAX_TOKENS
    assert renderer.fit_prompt("Edema.") == ("Edema.", False)
    result = renderer.render(["Large left pleural effusion with adjacent atelectasis.", "Edema."], [1, 2], SIZE)
    assert result.truncated == 1


@pytest.mark.slow
def test_images_stage_renders_the_impression(pipeline_dir):
    from synthvlp.generation.images import render_images

    config = RunConfig.model_validate(
        {"images": {"backend": "diffusers", "size": SIZE, "diffusers": {"path": str(pipeline_dir), "steps": 2, "batch_size": 2, "device": "cpu"}}}
    )
    entity = {"name": "nodule", "category": "ABNORMALITY", "assertion": "present", "laterality": "left"}
    plan = pa.table({"id": ["s00000000", "s00000001", "s00000002"], "split": ["train"] * 3, "planned_entities": [[entity], [], []]})
    reports = pa.table({"findings": ["A left nodule."] * 3, "impression": ["Left lung nodule.", "Normal.", "Normal chest radiograph, no acute cardiopulmonary process identified today."]})
    batch = render_images(config, plan, reports)
    assert [s["__key__"] for s in batch.samples] == plan.column("id").to_pylist()
    assert all("seg.png" not in s for s in batch.samples)
    assert batch.columns.column("image_generator").to_pylist() == [f"diffusers:{pipeline_dir.name}"] * 3
    assert batch.columns.column("finding_boxes").to_pylist() == [None] * 3
    assert batch.warnings == {"impression truncated to the tokenizer's max length": 1}


def _folder_layout(folder: Path) -> Path:
    """A pipeline folder's layout without weights: enough for the folder check, which runs before any loading."""
    parts = {"unet": "config.json", "vae": "config.json", "text_encoder": "config.json", "tokenizer": "tokenizer_config.json", "scheduler": "scheduler_config.json"}
    index = {"_class_name": "StableDiffusionPipeline", "safety_checker": [None, None]}
    for part, config in parts.items():
        (folder / part).mkdir(parents=True)
        (folder / part / config).write_text("{}")
        index[part] = ["diffusers", part]
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


@pytest.mark.parametrize("part", ["unet", "tokenizer", "model_index.json"])
def test_broken_folder_names_the_missing_part(tmp_path, part):
    broken = _folder_layout(tmp_path / "broken")
    check_folder(broken)
    target = broken / part
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(UserError, match=part.split(".")[0]):
        check_folder(broken)
    with pytest.raises(UserError, match=part.split(".")[0]):
        DiffusionRenderer(_settings(broken))


def test_half_precision_needs_cuda(tmp_path):
    with pytest.raises(UserError, match="float16 needs cuda"):
        DiffusionRenderer(_settings(_folder_layout(tmp_path / "pipe"), dtype="float16"))


def test_config_requires_a_folder_and_a_size_divisible_by_8():
    from synthvlp.config import load_config
    from synthvlp.errors import ConfigError

    with pytest.raises(ConfigError, match="images.diffusers.path"):
        load_config(None, ["images.backend=diffusers"])
    with pytest.raises(ConfigError, match="divisible by 8"):
        load_config(None, ["images.backend=diffusers", "images.diffusers.path=/x", "images.size=60"])


def test_run_report_shows_the_stage_warnings(tmp_path):
    import json

    from synthvlp.report import _images_section
    from synthvlp.runfolder import RunLayout

    folder = tmp_path / "parts" / "images"
    folder.mkdir(parents=True)
    (folder / "warnings-000000.json").write_text(json.dumps({"impression truncated to the tokenizer's max length": 2}))
    (folder / "warnings-000001.json").write_text(json.dumps({"impression truncated to the tokenizer's max length": 3}))
    rows = [{"image_generator": "diffusers:tiny", "image_shard": "shard-000000.tar"}]
    text = "\n".join(_images_section(rows, RunLayout(tmp_path), SIZE))
    assert "Warning: impression truncated to the tokenizer's max length (5 images)." in text
