"""Torch checkpoint files (CLIP weights, image encoders, RaSD backbones, training states): one writer, one reader.

Every ``.pt`` synthvlp writes is one ``torch.save`` dict whose ``format`` entry is ``"<kind>/<version>"`` (e.g.
``"synthvlp.clip/1"``), written by ``save``. ``load(path, *kinds)`` reads it back as the typed record of its kind
(``ClipCheckpoint``, ``ImageEncoderCheckpoint``, ``BackboneCheckpoint``, ``TrainState``), so a caller asks for the
kinds it can use and gets an object whose fields say what it holds, as open_clip's single ``load_checkpoint`` does
for its files. A file of another kind, a foreign file or a newer version is one ``UserError`` naming the file, what
it holds and the formats the caller accepts; so are the ways a file goes bad: missing, a folder, empty, cut short,
not a torch file, a pickle that would run code (refused by ``weights_only=True``, never answered with torch's
advice to turn that off), something other than a dict, or a dict without the entries its kind needs.

CLIP checkpoints written before the tag existed (every run folder's ``pretrain/checkpoint.pt`` until then) have no
``format`` entry; a dict without one that has the CLIP entries ``model`` and ``state_dict`` reads as
``synthvlp.clip/0``, the same record as version 1. Writes go through ``store.atomic_open``, so a full disk
mid-save is the same one-line message as in every other stage and the previous file stays intact.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from synthvlp.errors import UserError
from synthvlp.store import atomic_open

CODE_REFUSED = "not a synthvlp checkpoint (refused to unpickle code)"
"""The message fragment for a pickle that ``weights_only`` loading refuses because it names code to run."""
NOT_TORCH = "not a synthvlp checkpoint (not a torch file, or garbled)"


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint file's dict (``payload``) with the file it came from and its format version.

    Each kind states its format name (``KIND``), the version this code writes (``VERSION``, the newest it reads),
    the oldest it still reads (``OLDEST``), the entries every version has (``KEYS``), how messages name it
    (``WHAT``) and where such a file comes from (``HINT``, appended to "not found").
    """

    path: Path
    version: int
    payload: dict[str, Any]

    KIND: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    OLDEST: ClassVar[int] = 1
    KEYS: ClassVar[tuple[str, ...]] = ()
    WHAT: ClassVar[str] = ""
    HINT: ClassVar[str] = ""

    @classmethod
    def tag(cls) -> str:
        """The ``format`` entry this code writes for the kind."""
        return f"{cls.KIND}/{cls.VERSION}"

    @classmethod
    def formats(cls) -> list[str]:
        """Every ``format`` this code reads for the kind, oldest first."""
        return [f"{cls.KIND}/{version}" for version in range(cls.OLDEST, cls.VERSION + 1)]

    @property
    def state_dict(self) -> dict[str, Any]:
        return self.payload["state_dict"]

    def check(self) -> None:
        """Kind-specific checks of the entries beyond their presence (a ``UserError`` naming the file)."""


class ClipCheckpoint(Checkpoint):
    """``pretrain/checkpoint.pt``: a CLIP model's weights with the registered model config name that rebuilds it.

    ``{"format": "synthvlp.clip/1", "model": name, "model_config": {...}, "state_dict": {...}, "steps": n}``;
    version 0 is the same dict without ``format``.
    """

    KIND = "synthvlp.clip"
    OLDEST = 0
    KEYS = ("model", "state_dict")
    WHAT = "CLIP checkpoint"
    HINT = "run the pretrain stage first"

    @property
    def model_name(self) -> str:
        return self.payload["model"]

    def check(self) -> None:
        if not isinstance(self.model_name, str):
            raise UserError(f"{self.path}: not a CLIP checkpoint (its 'model' entry is a {type(self.model_name).__name__}, not a model config name)")


class ImageEncoderCheckpoint(Checkpoint):
    """An image tower alone (``models.save_image_encoder``), for ``pretrain.image_encoder`` and segmentation.

    ``{"format": "synthvlp.image_encoder/1", "model": name, "vision_cfg": {...}, "state_dict": {...}, "source": text}``.
    """

    KIND = "synthvlp.image_encoder"
    KEYS = ("model", "state_dict")
    WHAT = "synthvlp image encoder"
    HINT = "give the encoder.pt that synthvlp pretrain rasd (or save_image_encoder) writes"

    @property
    def model_name(self) -> str:
        return self.payload["model"]

    @property
    def source(self) -> str:
        return str(self.payload.get("source", ""))


class BackboneCheckpoint(Checkpoint):
    """A RaSD dense network: ``{"format": "synthvlp.rasd_backbone/1", "config": {...}, "state_dict": {...}, "steps": n}``."""

    KIND = "synthvlp.rasd_backbone"
    KEYS = ("config", "state_dict")
    WHAT = "RaSD backbone"
    HINT = "run synthvlp pretrain rasd first"


class TrainState(Checkpoint):
    """A resumable training state (``pretrain/checkpoint.save_state``): model, optimiser, schedule, RNGs, step."""

    KIND = "synthvlp.train_state"
    KEYS = ("model_name", "step", "model", "optimizer", "scheduler", "rng")
    WHAT = "training state"


KINDS: dict[str, type[Checkpoint]] = {kind.KIND: kind for kind in (ClipCheckpoint, ImageEncoderCheckpoint, BackboneCheckpoint, TrainState)}
"""Every kind of file synthvlp writes, by format name."""

C = TypeVar("C", bound=Checkpoint)


def save(path: Path, kind: type[Checkpoint], entries: dict[str, Any]) -> None:
    """``torch.save`` of ``{"format": kind.tag(), **entries}`` (tensors and plain values), atomically."""
    import torch

    with atomic_open(Path(path), "wb") as handle:
        torch.save({"format": kind.tag(), **entries}, handle)


def load(path: Path, *kinds: type[C]) -> C:
    """The checkpoint at ``path`` as the record of its kind, which must be one of ``kinds`` (default: any).

    Anything else is a ``UserError`` naming the file, what it holds and the formats accepted here.
    """
    accepted = kinds or tuple(KINDS.values())
    what = " or ".join(kind.WHAT for kind in accepted)
    path = Path(path)
    payload = _read(path, what, accepted[0].HINT if len(accepted) == 1 else "")
    name, version = _format_of(payload)
    kind = KINDS.get(name or "")
    formats = ", ".join(f for k in accepted for f in k.formats())
    if kind not in accepted or version is None or version < kind.OLDEST:
        found = f"format {payload['format']!r}" if "format" in payload else f"no format entry; it has {sorted(map(str, payload))[:8]}"
        raise UserError(f"{path}: not a {what} ({found}); accepted formats: {formats}")
    if version > kind.VERSION:
        raise UserError(f"{path}: {kind.WHAT} of format {payload['format']!r}, newer than this synthvlp reads ({formats}); update synthvlp")
    absent = [k for k in kind.KEYS if k not in payload]
    if absent:
        raise UserError(f"{path}: not a {kind.WHAT} (missing entries {absent}; it has {sorted(map(str, payload))[:8]})")
    record = kind(path, version, payload)
    record.check()
    return record


def _format_of(payload: dict[str, Any]) -> tuple[str | None, int | None]:
    """(kind name, version) from the ``format`` entry; an untagged dict with the CLIP entries is CLIP version 0."""
    tag = payload.get("format")
    if tag is None:
        return (ClipCheckpoint.KIND, 0) if all(k in payload for k in ClipCheckpoint.KEYS) else (None, None)
    name, _, version = str(tag).rpartition("/")
    return (name, int(version)) if version.isdigit() else (None, None)


def _read(path: Path, what: str, hint: str) -> dict[str, Any]:
    """The dict saved at ``path``, loaded with ``weights_only=True``; each way a file goes bad is a named error."""
    import pickle

    import torch

    if not path.exists():
        raise UserError(f"{path}: {what} not found" + (f"; {hint}" if hint else ""))
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a checkpoint file (.pt); expected a {what}")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file (0 bytes), not a checkpoint; it was cut short or never written")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files; the error says it all
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" in str(exc).lower():  # "Unsupported global: GLOBAL os.system", "unsupported GLOBAL ... is blocked"
            raise UserError(f"{path}: {CODE_REFUSED}") from None
        raise UserError(f"{path}: {NOT_TORCH}") from None
    except (RuntimeError, EOFError) as exc:
        reason = "cut short" if isinstance(exc, EOFError) or "central directory" in str(exc) else "corrupt"
        raise UserError(f"{path}: unreadable checkpoint ({reason}); rerun the step that wrote it") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except Exception:  # noqa: BLE001 - torch.load on arbitrary bytes raises whatever its parser trips over
        raise UserError(f"{path}: {NOT_TORCH}") from None
    if not isinstance(payload, dict):
        raise UserError(f"{path}: not a synthvlp checkpoint (holds a {type(payload).__name__}, not a dict of named entries)")
    return payload
