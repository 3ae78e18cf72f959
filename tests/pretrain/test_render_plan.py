"""``data.plan``: the renderer conditions on the entity plan besides the IMPRESSION, and the images stage builds
the prompt it was trained on from each sample's plan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from pretrain_helpers import png_bytes
from synthvlp.captions import caption, conditioning, plan_phrase
from synthvlp.config import RenderDataSection, RenderTrainConfig, RunConfig
from synthvlp.errors import UserError
from synthvlp.generation.images import caption as report_text
from synthvlp.pretrain.diffusion_engine import train_renderer, training_pairs
from synthvlp.store import write_shard

SIZE = 16
EFFUSION = {"name": "pleural effusion", "category": "ABNORMALITY", "assertion": "present", "laterality": "left"}
CARDIOMEGALY = {"name": "cardiomegaly", "category": "ABNORMALITY", "assertion": "present", "laterality": None}
PNEUMONIA = {"name": "pneumonia", "category": "DISEASE", "assertion": "uncertain", "laterality": None}
NO_EDEMA = {"name": "pulmonary edema", "category": "ABNORMALITY", "assertion": "absent", "laterality": None}
CLEAR = {"name": "clear lungs", "category": "NON-ABNORMALITY", "assertion": "present", "laterality": None}
PLANS = [[EFFUSION, CARDIOMEGALY], [PNEUMONIA, NO_EDEMA], [CLEAR], []]


def _shards(folder: Path, with_json: bool = True) -> list[Path]:
    """Shards laid out as the images stage writes them: txt is the whole report, json holds the planned entities."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(8):
        plan = PLANS[i % len(PLANS)]
        meta = {"id": f"s{i}", "split": "train", "findings": "Lungs seen.", "impression": f"Finding {i % len(PLANS)}.", "entities": plan}
        sample = {"__key__": f"s{i}", "png": png_bytes(rng), "txt": report_text(meta["findings"], meta["impression"]).encode()}
        samples.append(sample | ({"json": json.dumps(meta).encode()} if with_json else {}))
    folder.mkdir(parents=True, exist_ok=True)
    write_shard(folder / "train-000000.tar", samples)
    return [folder / "train-000000.tar"]


def test_plan_phrase_names_present_and_uncertain_findings_in_a_fixed_order():
    assert plan_phrase([EFFUSION, CARDIOMEGALY]) == plan_phrase([CARDIOMEGALY, EFFUSION]) == "PLAN: cardiomegaly; left pleural effusion."
    assert plan_phrase([PNEUMONIA, NO_EDEMA]) == "PLAN: possible pneumonia."
    assert plan_phrase([CLEAR]) == plan_phrase([]) == "PLAN: no finding."
    assert conditioning("FINDINGS: a. IMPRESSION:  Effusion. ", "impression", [EFFUSION]) == "PLAN: left pleural effusion. Effusion."
    assert conditioning("FINDINGS: a. IMPRESSION: b.", "report", None) == caption("FINDINGS: a. IMPRESSION: b.", "report")


def test_shard_plans_become_captions(tmp_path):
    _, keys, captions = training_pairs(RenderDataSection(shards=[str(p) for p in _shards(tmp_path)], plan=True), seed=0)
    assert dict(zip(keys, captions, strict=True))["s0"] == "PLAN: cardiomegaly; left pleural effusion. Finding 0."
    assert dict(zip(keys, captions, strict=True))["s3"] == "PLAN: no finding. Finding 3."
    _, _, plain = training_pairs(RenderDataSection(shards=[str(p) for p in _shards(tmp_path)]), seed=0)
    assert sorted(plain)[0] == "Finding 0."


def test_a_shard_without_its_plan_is_named(tmp_path):
    data = RenderDataSection(shards=[str(p) for p in _shards(tmp_path, with_json=False)], plan=True)
    with pytest.raises(UserError, match=r"sample s0 has no s0.json; data.plan needs shards a synthvlp run exported"):
        training_pairs(data, seed=0)


def test_a_csv_plan_is_what_the_extractor_reads(tmp_path):
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "pairs.csv").write_text("image,text,patient_id\na.png,FINDINGS: Small left pleural effusion. IMPRESSION: Effusion.,p1\n")
    _, _, captions = training_pairs(RenderDataSection.model_validate({"real": {"csv": str(tmp_path / "pairs.csv")}, "plan": True}), seed=0)
    assert captions == ["PLAN: left pleural effusion. Effusion."]


def test_the_images_stage_prompts_a_plan_trained_renderer_with_its_training_caption(tmp_path):
    from synthvlp.generation.diffusion import load_renderer
    from synthvlp.generation.images import render_images

    shards = _shards(tmp_path / "data")
    model = dict(size=SIZE, channels=[8, 16], attention=[False, True], head_dim=4, groups=4, text_width=16, text_layers=1, text_heads=2, max_tokens=16)
    train = dict(out_dir=str(tmp_path / "out"), steps=1, batch_size=4, warmup_steps=0, threads=1, sample_prompts=[])
    train_renderer(RenderTrainConfig.model_validate({"data": {"shards": [str(s) for s in shards], "plan": True}, "model": model, "train": train}), say=lambda s: None)
    pipeline = tmp_path / "out" / "pipeline"
    assert json.loads((pipeline / "model_index.json").read_text())["caption_plan"] is True
    config = RunConfig.model_validate({"images": {"backend": "diffusers", "size": SIZE, "diffusers": {"path": str(pipeline), "steps": 1, "batch_size": 2, "device": "cpu"}}})
    renderer = load_renderer(config.images.diffusers)
    _, keys, captions = training_pairs(RenderDataSection(shards=[str(s) for s in shards], plan=True), seed=0)
    trained_on = dict(zip(keys, captions, strict=True))
    for i, plan in enumerate(PLANS):  # what the images stage prompts with == what that sample was trained on
        assert renderer.prompt(report_text("Lungs seen.", f"Finding {i}."), f"Finding {i}.", plan) == trained_on[f"s{i}"]
    plan_table = pa.table({"id": ["a", "b"], "split": ["train"] * 2, "planned_entities": pa.array([[EFFUSION], []], pa.list_(pa.struct(
        [("name", pa.string()), ("category", pa.string()), ("assertion", pa.string()), ("laterality", pa.string())])))})
    batch = render_images(config, plan_table, pa.table({"findings": ["x", "y"], "impression": ["Effusion.", "Normal."]}))
    assert len(batch.samples) == 2


def test_a_finding_named_with_and_without_a_side_is_named_once_per_side():
    unsided = EFFUSION | {"laterality": None}
    right = EFFUSION | {"laterality": "right", "assertion": "uncertain"}
    assert plan_phrase([unsided, EFFUSION]) == "PLAN: left pleural effusion."
    assert plan_phrase([right, unsided, EFFUSION]) == "PLAN: left pleural effusion; right pleural effusion."  # stated once: not 'possible'
    assert plan_phrase([PNEUMONIA, PNEUMONIA | {"assertion": "present"}]) == "PLAN: pneumonia."
