"""Using synthvlp's outputs with open_clip alone: an exported checkpoint and open_clip_train on our shards.

``export_open_clip`` writes a checkpoint in the layout open_clip loads by itself, with no synthvlp installed:
``open_clip_config.json`` (``model_cfg`` and ``preprocess_cfg``) beside ``open_clip_model.safetensors``, which
``open_clip.create_model_and_transforms("local-dir:FOLDER")`` and ``open_clip.get_tokenizer("local-dir:FOLDER")``
read (and which uploads unchanged to a Hugging Face hub repo for ``hf-hub:``).

``train_open_clip(argv)`` runs ``open_clip_train.main`` with our model configs registered and one fix to its
webdataset reader: since webdataset 0.2.96 the tar expander yields an empty end-of-shard marker that
open_clip_train's ``group_by_keys_nothrow`` cannot read (``KeyError: 'fname'`` on any shards, open_clip issue
935); the fix is the one proposed there, asking the expander for no marker. ``python -m synthvlp.interop
--train-data 'runs/qs/dataset/train-{000000..000004}.tar' --dataset-type webdataset ...`` takes the same
arguments as ``python -m open_clip_train.main``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from synthvlp.errors import UserError
from synthvlp.store import write_bytes_atomic, write_text_atomic

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"


def export_open_clip(checkpoint: Path, out: Path) -> Path:
    """Write ``out/open_clip_config.json`` and ``out/open_clip_model.safetensors`` from a pretrain checkpoint."""
    from safetensors.torch import save

    from synthvlp.checkpoints import ClipCheckpoint, load
    from synthvlp.models import clip_from_checkpoint, model_config

    record = load(checkpoint, ClipCheckpoint)
    model, _, _ = clip_from_checkpoint(record)
    name = record.model_name
    preprocess = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    tensors = {key: value.detach().contiguous() for key, value in model.state_dict().items()}
    write_bytes_atomic(Path(out) / WEIGHTS_FILE, save(tensors, metadata={"format": "pt", "synthvlp_model": name}))
    write_text_atomic(Path(out) / CONFIG_FILE, json.dumps({"model_cfg": model_config(name), "preprocess_cfg": preprocess}, indent=2))
    return Path(out)


def patch_open_clip_train() -> None:
    """Register our model configs with open_clip and make open_clip_train's webdataset reader work with
    webdataset >= 0.2.96 (see the module docstring)."""
    from open_clip_train import data
    from webdataset.tariterators import tar_file_expander, url_opener

    from synthvlp.models import register_model_configs

    register_model_configs()

    def tarfile_to_samples_nothrow(src, handler=data.log_and_continue):
        files = tar_file_expander(url_opener(src, handler=handler), handler=handler, eof_value=None)
        return data.group_by_keys_nothrow(files, handler=handler)

    data.tarfile_to_samples_nothrow = tarfile_to_samples_nothrow


def train_open_clip(argv: list[str]) -> None:
    """``open_clip_train.main.main(argv)`` after ``patch_open_clip_train``."""
    try:
        from open_clip_train.main import main
    except ImportError:
        raise UserError("open_clip_train is not installed; pip install open_clip_torch[training]") from None
    patch_open_clip_train()
    main(argv)


if __name__ == "__main__":
    train_open_clip(sys.argv[1:])
