"""One checkpoint reader: every kind synthvlp writes round-trips through ``checkpoints.load`` as its typed record,
old untagged CLIP checkpoints still load, and anything else is one error naming the file and the accepted formats."""

from __future__ import annotations

import pytest
import torch

from synthvlp.checkpoints import KINDS, BackboneCheckpoint, ClipCheckpoint, ImageEncoderCheckpoint, TrainState, load
from synthvlp.errors import UserError
from synthvlp.models import build_clip, clip_from_checkpoint, load_image_encoder, model_config, save_clip_checkpoint, save_image_encoder

NAME = "synthvlp-tiny"


@pytest.fixture(scope="module")
def clip():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_clip(NAME)[0]


def _same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_clip_round_trip_is_tagged_and_rebuilds_the_same_weights(clip, tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_clip_checkpoint(path, NAME, clip, steps=3)
    assert torch.load(path, weights_only=True)["format"] == "synthvlp.clip/1"
    record = load(path)
    assert type(record) is ClipCheckpoint and record.version == 1 and record.model_name == NAME and record.payload["steps"] == 3
    model, preprocess, tokenizer = clip_from_checkpoint(record)
    assert _same_tensors(model.state_dict(), clip.state_dict()) and not model.training
    floor, _, _ = clip_from_checkpoint(record, random_init_seed=5)
    again, _, _ = clip_from_checkpoint(record, random_init_seed=5)
    assert _same_tensors(floor.state_dict(), again.state_dict()) and not _same_tensors(floor.state_dict(), clip.state_dict())


def test_an_untagged_clip_checkpoint_of_before_the_tag_loads_as_version_0(clip, tmp_path):
    path = tmp_path / "checkpoint.pt"  # exactly what save_clip_checkpoint wrote before the format tag
    torch.save({"model": NAME, "model_config": model_config(NAME), "state_dict": clip.state_dict(), "steps": 6}, path)
    record = load(path, ClipCheckpoint)
    assert record.version == 0 and record.model_name == NAME
    assert _same_tensors(clip_from_checkpoint(record)[0].state_dict(), clip.state_dict())


def test_image_encoder_round_trip(clip, tmp_path):
    path = tmp_path / "encoder.pt"
    save_image_encoder(path, NAME, clip.visual, source="test")
    record = load(path)
    assert type(record) is ImageEncoderCheckpoint and record.source == "test" and record.model_name == NAME
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(9)
        fresh = build_clip(NAME)[0].visual
    assert load_image_encoder(path, fresh) == "test"
    assert _same_tensors(fresh.state_dict(), clip.visual.state_dict())


def test_rasd_backbone_round_trip(tmp_path):
    from synthvlp.pretrain.rasd_engine import load_backbone, save_backbone
    from synthvlp.rasd import BackboneConfig, RaSDConfig, build_backbone

    config = RaSDConfig(backbone=BackboneConfig(name="unet", out_channels=4, channels=(4, 8)))
    net = build_backbone(config.backbone, spatial_dims=len(config.stream.spatial_size))
    save_backbone(tmp_path / "backbone.pt", config, net, steps=2)
    assert type(load(tmp_path / "backbone.pt")) is BackboneCheckpoint
    back, back_config = load_backbone(tmp_path / "backbone.pt")
    assert back_config == config and _same_tensors(back.state_dict(), net.state_dict())


def test_training_state_round_trip(clip, tmp_path):
    from synthvlp.pretrain.checkpoint import latest_state, save_state

    optimizer = torch.optim.SGD(clip.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    path = save_state(tmp_path, 4, NAME, clip, optimizer, scheduler, {"skipped": 1}, keep=2)
    assert type(load(path)) is TrainState
    found_path, state = latest_state(tmp_path)
    assert found_path == path and state["step"] == 4 and state["skipped"] == 1 and _same_tensors(state["model"], clip.state_dict())


def test_a_file_of_another_kind_names_the_accepted_formats(clip, tmp_path):
    path = tmp_path / "encoder.pt"
    save_image_encoder(path, NAME, clip.visual, source="test")
    with pytest.raises(UserError) as caught:
        load(path, ClipCheckpoint, TrainState)
    message = str(caught.value)
    assert message.startswith(f"{path}: not a CLIP checkpoint or training state (format 'synthvlp.image_encoder/1')")
    assert message.endswith("accepted formats: synthvlp.clip/0, synthvlp.clip/1, synthvlp.train_state/1")


@pytest.mark.parametrize("payload, found", [
    ({"format": "open_clip.epoch/1", "state_dict": {}}, "(format 'open_clip.epoch/1')"),
    ({"format": "synthvlp.clip", "model": NAME, "state_dict": {}}, "(format 'synthvlp.clip')"),
    ({"epoch": 1, "state_dict": {}}, "(no format entry; it has ['epoch', 'state_dict'])"),
])
def test_a_foreign_file_names_itself_and_every_format(tmp_path, payload, found):
    path = tmp_path / "foreign.pt"
    torch.save(payload, path)
    with pytest.raises(UserError) as caught:
        load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: not a ") and found in message
    assert all(kind.tag() in message for kind in KINDS.values())


def test_a_newer_version_and_missing_entries_are_named(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": "synthvlp.clip/2", "model": NAME, "state_dict": {}}, path)
    with pytest.raises(UserError, match="format 'synthvlp.clip/2', newer than this synthvlp reads .*; update synthvlp"):
        load(path, ClipCheckpoint)
    torch.save({"format": "synthvlp.rasd_backbone/1", "state_dict": {}}, path)
    with pytest.raises(UserError, match=r"not a RaSD backbone \(missing entries \['config'\]"):
        load(path)
