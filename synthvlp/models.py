"""The model registry: our open_clip model configs (JSON in ``model_configs/``) plus open_clip's own.

Models are data, as in open_clip: a new architecture is a JSON file, registered here once, then built by name
with ``open_clip.create_model_and_transforms``. Heavy imports stay inside functions so the CLI starts fast.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path
from typing import Any

from synthvlp.errors import UserError

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"


@cache
def register_model_configs() -> None:
    """Make our JSON configs visible to open_clip (idempotent)."""
    import open_clip

    open_clip.add_model_config(MODEL_CONFIG_DIR)


def list_models() -> list[str]:
    register_model_configs()
    import open_clip

    return open_clip.list_models()


def model_config(name: str) -> dict[str, Any]:
    register_model_configs()
    import open_clip

    config = open_clip.get_model_config(name)
    if config is None:
        raise UserError(f"pretrain.model: unknown model {name!r}; `synthvlp models` lists the available ones")
    return config


def build_clip(name: str):
    """(model, train transform, eval transform, tokenizer) for a registered model name, randomly initialised."""
    model_config(name)  # named error for unknown models
    import open_clip

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # open_clip warns that no pretrained weights were loaded: that is intended here
    try:
        model, preprocess_train, preprocess_eval = open_clip.create_model_and_transforms(name, pretrained=None)
    finally:
        logging.disable(previous)
    tokenizer = open_clip.get_tokenizer(name)
    return model, preprocess_train, preprocess_eval, tokenizer


def save_clip_checkpoint(path: Path, name: str, model, steps: int) -> None:
    """Write weights with the model name and config, atomically, so evaluation can rebuild the model."""
    import torch

    from synthvlp.store import atomic_open

    payload = {"model": name, "model_config": model_config(name), "state_dict": model.state_dict(), "steps": steps}
    with atomic_open(path, "wb") as handle:
        torch.save(payload, handle)


def load_clip_checkpoint(path: Path):
    """(model in eval mode, eval transform, tokenizer) from ``save_clip_checkpoint``'s file.

    ``weights_only=True``, so loading a checkpoint cannot execute code; a checkpoint whose tensors do not fit the
    named model is an error that lists the mismatched keys.
    """
    import torch

    if not Path(path).exists():
        raise UserError(f"{path}: checkpoint not found; run the pretrain stage first")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model, _, preprocess, tokenizer = build_clip(checkpoint["model"])
    missing, unexpected = model.load_state_dict(checkpoint["state_dict"], strict=False)
    if missing or unexpected:
        raise UserError(
            f"{path}: checkpoint does not match model {checkpoint['model']!r}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
        )
    model.eval()
    return model, preprocess, tokenizer
