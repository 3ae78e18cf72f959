"""Torch checkpoint files (CLIP weights, image encoders, RaSD backbones, training states): one writer, one reader.

Every ``.pt`` synthvlp reads goes through ``load_checkpoint``, so a bad file gets the same named error whichever
command meets it: missing, a folder, empty, cut short, not a torch file, a pickle that would run code (refused by
``weights_only=True``, never answered with torch's advice to turn that off), something other than a dict, or a
dict without the entries the caller needs. ``save_checkpoint`` writes through ``store.atomic_open``, so a full disk
mid-save is the same one-line message as in every other stage and the previous file stays intact.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from synthvlp.errors import UserError
from synthvlp.store import atomic_open

CODE_REFUSED = "not a synthvlp checkpoint (refused to unpickle code)"
"""The message fragment for a pickle that ``weights_only`` loading refuses because it names code to run."""
NOT_TORCH = "not a synthvlp checkpoint (not a torch file, or garbled)"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` of a dict of tensors and plain values, atomically (loadable with ``weights_only=True``)."""
    import torch

    with atomic_open(Path(path), "wb") as handle:
        torch.save(payload, handle)


def load_checkpoint(path: Path, what: str, *, fmt: str | None = None, keys: Sequence[str] = (), hint: str = "") -> dict[str, Any]:
    """The dict saved at ``path``, checked; anything else is a ``UserError`` naming the file and what is wrong.

    ``what`` names the expected kind in messages ("CLIP checkpoint"); ``fmt`` is the required ``format`` entry
    and ``keys`` the entries the caller reads; ``hint`` is appended to "not found" (e.g. which stage writes it).
    """
    import pickle

    import torch

    path = Path(path)
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
    absent = [k for k in keys if k not in payload]
    if absent:
        raise UserError(f"{path}: not a {what} (missing entries {absent}; it has {sorted(map(str, payload))[:8]})")
    if fmt is not None and payload.get("format") != fmt:
        found = f"format {payload['format']!r}" if "format" in payload else "no format entry"
        raise UserError(f"{path}: not a {what} ({found}; expected format {fmt!r})")
    return payload
