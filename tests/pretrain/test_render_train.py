"""``synthvlp render train`` on a tiny config: exact resume, the saved folder renders through the images stage,
and bad training data or pipeline folders give one named error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from pretrain_helpers import assert_same_render_run, make_shards, render_final_state, train_renderer_killed_and_resumed
from synthvlp.config import RenderTrainConfig, RunConfig, load_config
from synthvlp.errors import UserError
from synthvlp.generation.diffusion import check_folder
from synthvlp.captions import caption
from synthvlp.pretrain.diffusion_engine import TRAINING_FILMS, train_renderer

SIZE = 32


def _config(out_dir: Path, shards: list[Path] | None = None, real: dict | None = None, **train) -> RenderTrainConfig:
    data = {"shards": [str(s) for s in shards or []], **({"real": real} if real else {})}
    model = dict(size=SIZE, channels=[8, 16], attention=[False, True], head_dim=4, groups=4, text_width=16, text_layers=1, text_heads=2, max_tokens=12)
    settings = dict(out_dir=str(out_dir), steps=4, batch_size=4, warmup_steps=1, checkpoint_every=2, threads=1, sample_prompts=[], ema_decay=0.9)
    return RenderTrainConfig.model_validate({"data": data, "model": model, "train": settings | train})


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[Path]:
    return make_shards(tmp_path_factory.mktemp("pairs"), n_shards=1, per_shard=10)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shards) -> Path:
    out = tmp_path_factory.mktemp("renderer")
    train_renderer(_config(out, shards, sample_prompts=["nodule"], sample_steps=2), say=lambda s: None)
    return out


def test_interrupted_and_resumed_training_matches_uninterrupted(tmp_path, shards, trained):
    resumed = train_renderer_killed_and_resumed(_config(tmp_path, shards), 2)
    assert resumed.resumed_from == 2 and resumed.steps == 4
    full, _ = assert_same_render_run(trained, tmp_path)
    assert full["step"] == 4


def test_changed_settings_start_afresh(tmp_path, shards):
    train_renderer(_config(tmp_path, shards, steps=2), say=lambda s: None)
    again = train_renderer(_config(tmp_path, shards, steps=2, checkpoint_every=1), say=lambda s: None)  # operational: resumes
    changed = train_renderer(_config(tmp_path, shards, steps=2, lr=1e-3), say=lambda s: None)
    assert (again.resumed_from, changed.resumed_from) == (2, 0)
    assert len(list((tmp_path / "state").iterdir())) == 1


def test_saved_folder_renders_through_the_images_stage(trained):
    from synthvlp.generation.images import render_images

    pipeline = trained / "pipeline"
    assert json.loads((pipeline / "model_index.json").read_text())["_class_name"] == "PixelDiffusionPipeline"
    assert sorted(np.load(pipeline / TRAINING_FILMS)["films"].shape) == sorted((10, SIZE, SIZE))
    assert (trained / "samples" / "step-00000004.png").is_file()
    config = RunConfig.model_validate(
        {"images": {"backend": "diffusers", "size": SIZE, "diffusers": {"path": str(pipeline), "steps": 2, "batch_size": 2, "device": "cpu"}}}
    )
    plan = pa.table({"id": ["s00000000", "s00000001", "s00000002"], "split": ["train"] * 3, "planned_entities": [[], [], []]})
    reports = pa.table({"findings": ["x"] * 3, "impression": ["Cardiomegaly.", "Nodule.", "Cardiomegaly."]})
    batch = render_images(config, plan, reports)
    films = [np.asarray(Image.open(__import__("io").BytesIO(s["png"]))) for s in batch.samples]
    assert [f.shape for f in films] == [(SIZE, SIZE)] * 3
    assert batch.columns.column("image_generator").to_pylist() == [f"diffusers:{pipeline.name}"] * 3
    assert not np.array_equal(films[0], films[2])  # each sample's own seed, even for the same impression


@pytest.mark.parametrize("name", ["render-nih-64.yaml", "render-nih-256.yaml", "render-nih-sd.yaml", "render-tiny-sd.yaml"])
def test_shipped_render_configs_load(name):
    config = load_config(Path(__file__).resolve().parents[2] / "configs" / name, model=RenderTrainConfig)
    assert config.data.shards and config.train.out_dir.name == name.removesuffix(".yaml")


def test_captions_are_the_impression():
    assert caption("FINDINGS: Lungs clear.\nIMPRESSION:  No acute   process.", "impression") == "No acute process."
    assert caption("Cardiomegaly.", "impression") == "Cardiomegaly."
    assert caption("FINDINGS: a. IMPRESSION: b.", "report") == "FINDINGS: a. IMPRESSION: b."


def _csv(folder: Path, rows: list[tuple[str, str]]) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(folder / "a.png")
    lines = ["image,text,patient_id", *(f"{image},{text},p{i}" for i, (image, text) in enumerate(rows))]
    (folder / "pairs.csv").write_text("\n".join(lines) + "\n")
    return {"csv": str(folder / "pairs.csv")}


def test_missing_image_names_the_file_and_line(tmp_path):
    real = _csv(tmp_path / "data", [("a.png", "Nodule."), ("gone.png", "Cardiomegaly.")])
    with pytest.raises(UserError, match=r"pairs.csv line 3: image .*gone.png does not exist"):
        train_renderer(_config(tmp_path / "out", real=real), say=lambda s: None)


def test_empty_report_names_the_line_and_column(tmp_path):
    real = _csv(tmp_path / "data", [("a.png", "Nodule."), ("a.png", "")])
    with pytest.raises(UserError, match=r"pairs.csv line 3: empty report in column 'text'"):
        train_renderer(_config(tmp_path / "out", real=real), say=lambda s: None)


def test_empty_impression_in_a_shard_names_the_sample(tmp_path):
    from synthvlp.store import write_shard

    path = tmp_path / "train-000000.tar"
    png = (tmp_path / "a.png")
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(png)
    write_shard(path, [{"__key__": "s1", "png": png.read_bytes(), "txt": b"FINDINGS: clear. IMPRESSION: "}])
    with pytest.raises(UserError, match=r"sample s1 has an empty IMPRESSION"):
        train_renderer(_config(tmp_path / "out", [path]), say=lambda s: None)


def test_shard_pattern_matching_nothing_is_named(tmp_path):
    with pytest.raises(UserError, match=r"data.shards: '.*nothing-\*.tar' matches no file"):
        train_renderer(_config(tmp_path / "out", [tmp_path / "nothing-*.tar"]), say=lambda s: None)


def test_folder_without_a_unet_is_named(tmp_path, trained):
    import shutil

    copy = tmp_path / "no-unet"
    shutil.copytree(trained / "pipeline", copy)
    shutil.rmtree(copy / "unet")
    with pytest.raises(UserError, match=r"part 'unet' .* has no folder unet/"):
        check_folder(copy)
    index = json.loads((copy / "model_index.json").read_text())
    del index["unet"]
    (copy / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match=r"model_index.json lists no unet"):
        check_folder(copy)


def test_export_only_needs_a_state(tmp_path, shards):
    with pytest.raises(UserError, match="no training state to export"):
        train_renderer(_config(tmp_path, shards), say=lambda s: None, export_only=True)


def test_cli_prints_the_error_and_exits_2(tmp_path):
    import subprocess
    import sys

    import yaml

    path = tmp_path / "render.yaml"
    path.write_text(yaml.safe_dump({"data": {"shards": [str(tmp_path / "none-*.tar")]}, "train": {"out_dir": str(tmp_path / "out")}}))
    result = subprocess.run([sys.executable, "-m", "synthvlp.cli", "render", "train", str(path), "train.steps=2"], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "data.shards" in result.stderr and "matches no file" in result.stderr and "Traceback" not in result.stderr


def test_a_local_clip_text_encoder_folder_is_used_frozen(tmp_path, shards):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from tiny_sd import byte_alphabet

    chars = byte_alphabet()
    vocab = {t: i for i, t in enumerate(["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)])}
    folder = tmp_path / "clip"
    CLIPTokenizer(vocab=vocab, merges=[], model_max_length=24).save_pretrained(folder / "tokenizer")
    encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                           max_position_embeddings=24, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    encoder.save_pretrained(folder / "text_encoder")
    config = _config(tmp_path / "out", shards, steps=1)
    config.model.text_encoder, config.model.train_text_encoder = folder, False
    train_renderer(config, say=lambda s: None)
    state = render_final_state(tmp_path / "out")
    assert all(key.startswith("unet.") for key in state["model"])  # the frozen encoder is not trained or checkpointed
    saved = CLIPTextModel.from_pretrained(tmp_path / "out" / "pipeline" / "text_encoder")
    for key, tensor in encoder.state_dict().items():
        assert torch.equal(tensor, saved.state_dict()[key]), key
    config.model.text_encoder = tmp_path / "nothing"
    with pytest.raises(UserError, match=r"model.text_encoder = .*nothing: not a CLIP checkpoint file, and no config.json"):
        train_renderer(config, say=lambda s: None)


def test_bf16_autocast_trains_on_cpu(tmp_path, shards, trained):
    result = train_renderer(_config(tmp_path, shards, steps=4, precision="bf16", checkpoint_every=4), say=lambda s: None)
    assert np.isfinite(result.final_loss)
    state = render_final_state(tmp_path)
    assert {t.dtype for t in state["model"].values()} == {torch.float32}  # autocast computes in bf16, weights stay fp32
    fp32, bf16 = ([float(r.split(",")[1]) for r in (folder / "log.csv").read_text().splitlines()[1:]] for folder in (trained, tmp_path))
    assert fp32[0] != bf16[0] and abs(fp32[0] - bf16[0]) < 0.05 * fp32[0]  # the same batch, computed in bf16


def test_fp16_needs_a_gpu(tmp_path, shards):
    with pytest.raises(UserError, match="train.precision = fp16 needs a CUDA GPU"):
        train_renderer(_config(tmp_path, shards, precision="fp16"), say=lambda s: None)


def test_a_pixel_pipeline_it_wrote_fine_tunes_in_pixel_space(tmp_path, shards, trained):
    from safetensors.torch import load_file

    config = RenderTrainConfig.model_validate({"data": {"shards": [str(s) for s in shards]}, "model": {"size": SIZE, "init_from": str(trained / "pipeline")},
                                               "train": dict(out_dir=str(tmp_path), steps=2, batch_size=4, threads=1, sample_prompts=[], lr=1e-4)})
    train_renderer(config, say=lambda s: None)
    assert render_final_state(tmp_path)["model_name"] == "pixel-diffusion"
    assert json.loads((tmp_path / "pipeline" / "model_index.json").read_text())["_class_name"] == "PixelDiffusionPipeline"
    before, after = (load_file(folder / "unet" / "diffusion_pytorch_model.safetensors") for folder in (trained / "pipeline", tmp_path / "pipeline"))
    changes = [float((before[k] - after[k]).abs().max()) for k in before]
    assert 0 < max(changes) < 0.01  # trained on, from the folder's weights


def test_image_to_image_keeps_the_film_at_strength_0_and_ignores_it_at_1(trained):
    """SDEdit through the saved pixel pipeline: strength 0 returns the given film, 1 renders all but the film
    text-to-image gives, and in between the result stays nearer the given film than that one."""
    from synthvlp.pixel_diffusion import PixelDiffusionPipeline

    pipeline = PixelDiffusionPipeline.from_pretrained(trained / "pipeline")
    pipeline.set_progress_bar_config(disable=True)
    film = np.tile(np.linspace(0.1, 0.9, SIZE, dtype=np.float32), (SIZE, 1))[None]

    def render(**kwargs) -> np.ndarray:
        generator = torch.Generator("cpu").manual_seed(3)
        return pipeline(prompt="nodule", num_inference_steps=4, guidance_scale=1.0, generator=generator, **kwargs).images[..., 0]

    text_only = render()
    np.testing.assert_allclose(render(image=film, strength=0.0), film, atol=1e-6)
    np.testing.assert_allclose(render(image=film, strength=1.0), text_only, atol=1e-3)  # a trace at DDIM's first step
    halfway = render(image=film, strength=0.5)
    assert np.abs(halfway - film).mean() < np.abs(text_only - film).mean()
    with pytest.raises(ValueError, match="strength 1.5"):
        render(image=film, strength=1.5)


def test_refine_bench_seeds_each_film_by_its_index_alone(trained, shards):
    """``bench/refine_realism.py`` refines phantom films in batches; a film's result must not depend on the batch
    it fell in, or strengths and batch sizes could not be compared film by film."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from refine_realism import as_films, phantom_films, refine

    from synthvlp.pixel_diffusion import PixelDiffusionPipeline

    pipeline = PixelDiffusionPipeline.from_pretrained(trained / "pipeline")
    pipeline.set_progress_bar_config(disable=True)
    films, captions, keys = phantom_films(shards[0], 4)
    assert films.shape == (4, SIZE, SIZE) and len(captions) == len(keys) == 4
    one_batch = refine(pipeline, films, captions, 0.5, 4, 1.0, batch=4)
    np.testing.assert_allclose(refine(pipeline, films, captions, 0.5, 4, 1.0, batch=3), one_batch, atol=1e-5)
    assert not np.allclose(one_batch, films, atol=0.01)
    assert as_films(one_batch, keys, 64).images.shape == (4, 64, 64)
