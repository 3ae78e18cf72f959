"""``synthvlp pretrain rasd``: exact resume (synthesiser buffer included), the saved backbone, the CLI."""

from __future__ import annotations

import pytest
import torch
import yaml

from synthvlp.pretrain.rasd_engine import load_backbone, state_key, train_rasd
from synthvlp.rasd import BackboneConfig, FieldsConfig, RaSDConfig, StreamConfig
from synthvlp.rasd.config import TrainConfig


class Interrupt(Exception):
    """Stands in for a kill: raised from the progress callback, after a step and before the next."""


def _config(out_dir, **train) -> RaSDConfig:
    values = dict(out_dir=str(out_dir), steps=7, checkpoint_every=2, threads=1, tensorboard=False, lr=1e-3, warmup_steps=1)
    values.update(train)
    return RaSDConfig(
        fields=FieldsConfig(num_labels=5),
        stream=StreamConfig(spatial_size=(32, 32), batch_size=4, refresh_fraction=0.5, seed=3),  # buffer reuse on
        backbone=BackboneConfig(name="unet", out_channels=8, channels=(8, 16)),
        train=TrainConfig(**values),
    )


def test_interrupted_rasd_run_resumes_to_the_uninterrupted_weights(tmp_path):
    full = train_rasd(_config(tmp_path / "full"), say=lambda s: None)
    calls = []

    def stop_after_step_5(n):  # step 4's state is on disk, step 5 ran and is lost
        calls.append(n)
        if len(calls) == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_rasd(_config(tmp_path / "cut"), advance=stop_after_step_5, say=lambda s: None)
    assert not (tmp_path / "cut" / "backbone.pt").exists()
    resumed = train_rasd(_config(tmp_path / "cut"), say=lambda s: None)
    assert resumed.resumed_from == 4 and resumed.steps == full.steps == 7
    a, _ = load_backbone(full.backbone)
    b, config = load_backbone(resumed.backbone)
    for (key, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), key
    assert config.backbone.name == "unet"
    rows = (tmp_path / "cut" / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss,pull,push") and len(rows) == 8
    assert [r.split(",")[:2] for r in rows] == [r.split(",")[:2] for r in (tmp_path / "full" / "log.csv").read_text().splitlines()]


def test_operational_settings_do_not_change_the_state_key(tmp_path):
    base = state_key(_config(tmp_path / "a"))
    assert state_key(_config(tmp_path / "b", checkpoint_every=5, threads=2, tensorboard=True)) == base
    assert state_key(_config(tmp_path / "a", lr=5e-4)) != base


def test_cli_trains_from_a_yaml_config(tmp_path):
    from typer.testing import CliRunner

    from synthvlp.cli import app

    config = _config(tmp_path / "run", steps=3).model_dump(mode="json")
    path = tmp_path / "rasd.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["pretrain", "rasd", str(path), "train.steps=2"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "backbone.pt").exists()
    assert len((tmp_path / "run" / "log.csv").read_text().splitlines()) == 3  # header + the overridden 2 steps


def test_cli_names_a_bad_key_in_the_rasd_config(tmp_path):
    from typer.testing import CliRunner

    from synthvlp.cli import app

    path = tmp_path / "rasd.yaml"
    path.write_text("train:\n  stepz: 3\n")
    result = CliRunner().invoke(app, ["pretrain", "rasd", str(path)])
    assert result.exit_code != 0 and "train.stepz: unknown key" in str(result.exception) + result.output


@pytest.mark.parametrize("model_name", ["synthvlp-tiny", "synthvlp-cnn-tiny"])
def test_clip_tower_pretrained_by_rasd_initialises_a_medvlp_model(tmp_path, model_name):
    """Both seeds in one model: RaSD trains an open_clip (or our CNN) image tower, pretrain.image_encoder loads it."""
    from synthvlp.config import PretrainSection
    from synthvlp.pretrain.engine import build_model

    config = RaSDConfig(
        fields=FieldsConfig(num_labels=5),
        stream=StreamConfig(spatial_size=(48, 48), batch_size=2, seed=1),
        backbone=BackboneConfig(name="clip", clip_model=model_name, out_channels=8),
        train=TrainConfig(out_dir=str(tmp_path / "rasd"), steps=2, checkpoint_every=2, threads=1, tensorboard=False, lr=1e-3),
    )
    result = train_rasd(config, say=lambda s: None)
    trained, _ = load_backbone(result.backbone)
    model, _, _ = build_model(PretrainSection(model=model_name, image_encoder=tmp_path / "rasd" / "encoder.pt"))
    tower = model.clip.visual.state_dict()
    for key, value in trained.visual.state_dict().items():
        assert torch.equal(tower[key], value), key


def test_clip_backbone_is_2d_only():
    from synthvlp.rasd import build_backbone

    with pytest.raises(ValueError, match="2D image tower"):
        build_backbone(BackboneConfig(name="clip"), spatial_dims=3)
