"""The model registry: our open_clip model configs (JSON in ``model_configs/``) plus open_clip's own.

Models are data, as in open_clip: a new architecture is a JSON file, registered here once, then built by name
with ``open_clip.create_model_and_transforms``. Heavy imports stay inside functions so the CLI starts fast.
"""

from __future__ import annotations

import logging
from copy import deepcopy
from functools import cache
from pathlib import Path
from typing import Any

from synthvlp.checkpoints import ClipCheckpoint, ImageEncoderCheckpoint, load, save
from synthvlp.errors import UserError

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"


TOWER_KEY = "synthvlp_vision"
"""Key of a model config whose image tower is ours (``synthvlp.convtower``), in place of open_clip's ``vision_cfg``."""


@cache
def register_model_configs() -> dict[str, dict[str, Any]]:
    """Make our JSON configs visible to open_clip (idempotent); returns {model name: config} of those with our tower.

    open_clip's scan skips a JSON without ``vision_cfg``, so a config with ``TOWER_KEY`` instead is registered here,
    with a one-layer placeholder ViT that ``build_clip`` replaces (its ``image_size`` sizes the transforms). open_clip
    has no public call that takes a config dict; its registry dict is stable in the pinned 3.3 series, and a later
    rescan (``add_model_config``) keeps these entries because it only rewrites the files it scans.
    """
    import json

    import open_clip
    from open_clip import factory

    open_clip.add_model_config(MODEL_CONFIG_DIR)
    ours = {}
    for path in sorted(MODEL_CONFIG_DIR.glob("*.json")):
        config = json.loads(path.read_text())
        if TOWER_KEY in config:
            size = config[TOWER_KEY]["image_size"]
            placeholder = {"image_size": size, "layers": 1, "width": 8, "head_width": 8, "patch_size": size}
            factory._MODEL_CONFIGS[path.stem] = {"embed_dim": config["embed_dim"], "vision_cfg": placeholder, "text_cfg": config["text_cfg"]}
            ours[path.stem] = {**config, "vision_cfg": {"image_size": size}}
    return ours


def list_models() -> list[str]:
    register_model_configs()
    import open_clip

    return open_clip.list_models()


def model_config(name: str) -> dict[str, Any]:
    """The model's config as its JSON states it; ours with ``TOWER_KEY`` also get ``vision_cfg.image_size``."""
    towers = register_model_configs()
    import open_clip

    config = open_clip.get_model_config(name)
    if config is None:
        raise UserError(f"pretrain.model: unknown model {name!r}; `synthvlp models list` shows the available ones")
    return deepcopy(towers[name]) if name in towers else config


def describe_model(name: str) -> str:
    """One line on a config's towers, for ``synthvlp models list``."""
    config = model_config(name)
    vision, text = config.get("vision_cfg", {}), config.get("text_cfg", {})
    layers, tower = vision.get("layers"), config.get(TOWER_KEY)
    if tower is not None:
        image = f"CNN {tower.get('blocks')} width {tower.get('width')}, stride {tower.get('output_stride', 8)}, mean-pooled"
    else:
        image = f"ResNet {layers}" if isinstance(layers, list) else f"ViT {layers}x{vision.get('width')} patch {vision.get('patch_size')}"
    words = f"HF {text['hf_model_name']}" if "hf_model_name" in text else f"transformer {text.get('layers')}x{text.get('width')}"
    return f"embed {config.get('embed_dim')}; image: {image} at {vision.get('image_size')} px; text: {words}"


def build_clip(name: str):
    """(model, train transform, eval transform, tokenizer) for a registered model name, randomly initialised.

    A Hugging Face text tower (``text_cfg.hf_model_name``) is loaded from its local folder, which must exist:
    weights are never downloaded.
    """
    config = model_config(name)  # named error for unknown models
    hf_folder = config.get("text_cfg", {}).get("hf_model_name")
    if hf_folder is not None and not Path(hf_folder).is_dir():
        raise UserError(f"model {name!r}: text_cfg.hf_model_name {hf_folder!r} is not a local folder; put the Hugging Face model there (relative paths are from the working directory)")
    import open_clip

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # open_clip warns that no pretrained weights were loaded: that is intended here
    try:
        model, preprocess_train, preprocess_eval = open_clip.create_model_and_transforms(name, pretrained=None)
    finally:
        logging.disable(previous)
    tower = config.get(TOWER_KEY)
    if tower is not None:
        model.visual = _our_tower(tower, config, model.visual)
    tokenizer = open_clip.get_tokenizer(name)
    return model, preprocess_train, preprocess_eval, tokenizer


def _our_tower(tower: dict[str, Any], config: dict[str, Any], placeholder):
    """The image tower a ``TOWER_KEY`` config asks for, in place of open_clip's placeholder."""
    from synthvlp.convtower import ConvTower

    if tower.get("tower") != "convnet":
        raise UserError(f"model config: {TOWER_KEY}.tower {tower.get('tower')!r} is unknown; the only one is 'convnet'")
    visual = ConvTower(config["embed_dim"], tower["image_size"], int(tower.get("width", 32)), tuple(tower.get("blocks", (1, 1, 1, 1))),
                       int(tower.get("output_stride", 8)))
    visual.preprocess_cfg = placeholder.preprocess_cfg
    return visual


def load_weights(module, state_dict: dict[str, Any], path: Path, what: str) -> None:
    """Load ``state_dict`` into ``module`` exactly; a mismatch is a ``UserError`` naming the offending keys.

    This is how a checkpoint written for another model config is caught: missing, unexpected and wrongly
    shaped tensors are listed instead of torch's long traceback.
    """
    if not isinstance(state_dict, dict) or not all(isinstance(k, str) for k in state_dict):
        raise UserError(f"{path}: {what}: its state_dict is a {type(state_dict).__name__}, not a dict of named tensors")
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = sorted(k for k in set(own) & set(state_dict) if tuple(own[k].shape) != tuple(state_dict[k].shape))
    if missing or unexpected or shapes:
        raise UserError(
            f"{path}: {what} does not match the model: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}, "
            f"shape mismatches {[(k, tuple(state_dict[k].shape), tuple(own[k].shape)) for k in shapes[:5]]}"
            f"{' (and more)' if max(len(missing), len(unexpected), len(shapes)) > 5 else ''}"
        )
    module.load_state_dict(state_dict)


def save_clip_checkpoint(path: Path, name: str, model, steps: int) -> None:
    """Write weights with the model name and config (``checkpoints.ClipCheckpoint``), atomically, so evaluation can
    rebuild the model."""
    save(path, ClipCheckpoint, {"model": name, "model_config": model_config(name), "state_dict": model.state_dict(), "steps": steps})


def clip_from_checkpoint(checkpoint: ClipCheckpoint, random_init_seed: int | None = None):
    """(model in eval mode, eval transform, tokenizer) rebuilt from a loaded CLIP checkpoint.

    A checkpoint whose tensors do not fit the named model is an error that lists the mismatched keys. With
    ``random_init_seed`` the weights are not loaded: the same architecture is initialised from that seed, the
    floor a trained model is compared with.
    """
    import torch

    if random_init_seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(random_init_seed)
            model, _, preprocess, tokenizer = build_clip(checkpoint.model_name)
    else:
        model, _, preprocess, tokenizer = build_clip(checkpoint.model_name)
        load_weights(model, checkpoint.state_dict, checkpoint.path, f"checkpoint of model {checkpoint.model_name!r}")
    model.eval()
    return model, preprocess, tokenizer


def save_image_encoder(path: Path, name: str, visual, source: str) -> None:
    """Write ``visual`` (an open_clip ``model.visual`` built from model config ``name``) atomically, as a
    ``checkpoints.ImageEncoderCheckpoint`` that ``pretrain.image_encoder`` loads into the image tower before
    training, so a RaSD-initialised encoder and a CLIP-trained text tower end up in one model."""
    save(path, ImageEncoderCheckpoint, {"model": name, "vision_cfg": model_config(name)["vision_cfg"], "state_dict": visual.state_dict(), "source": source})


def load_image_encoder(source: Path | ImageEncoderCheckpoint, visual) -> str:
    """Load an image-encoder checkpoint (a file or a loaded one) into ``visual`` (exact keys and shapes); returns
    what produced it."""
    record = source if isinstance(source, ImageEncoderCheckpoint) else load(source, ImageEncoderCheckpoint)
    load_weights(visual, record.state_dict, record.path, f"image encoder for model {record.model_name!r}")
    return record.source


def image_tower(record: ClipCheckpoint | ImageEncoderCheckpoint):
    """The image tower (open_clip ``model.visual``) either checkpoint holds, its weights loaded: a CLIP model's, or
    an image encoder alone (what ``synthvlp pretrain rasd`` writes). Rebuilt from the model config the record
    names, which ``build_clip`` also rebuilds a from-scratch tower from."""
    if isinstance(record, ImageEncoderCheckpoint):
        visual = build_clip(record.model_name)[0].visual
        load_image_encoder(record, visual)
        return visual
    return clip_from_checkpoint(record)[0].visual
