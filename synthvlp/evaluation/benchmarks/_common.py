"""What every adapter shares: reading a label file with named-column errors, finding images, building labels.

Kept apart so each benchmark module only says what its published layout means.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from synthvlp.csvfiles import read_csv_table
from synthvlp.errors import UserError
from synthvlp.evaluation.labels import harmonise

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def existing(path: Path, what: str) -> Path:
    """``path`` if it exists; otherwise a UserError naming what it was meant to be."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} {path} does not exist")
    return path


def read_csv(path: Path, required: Sequence[str], **options: object) -> pd.DataFrame:
    """The CSV as strings (blank cells as ""); an unreadable, empty or header-only file, or absent columns, are a
    UserError naming the file (``synthvlp.csvfiles``)."""
    return read_csv_table(path, "label file", required, dtype=str, keep_default_na=False, **options)


def harmonise_all(raw: Iterable[str], benchmark: str) -> list[str]:
    """Harmonised names of ``raw`` in first-seen order, duplicates merged (two raw names may share a target)."""
    return list(dict.fromkeys(harmonise(r, benchmark) for r in raw))


def keep_known(raw: Iterable[str], benchmark: str) -> tuple[dict[str, str], dict[str, int]]:
    """Raw -> harmonised for the labels ``harmonise`` accepts, and the count of each label it does not.

    For benchmarks with long tails of labels (PadChest, VinDr's "other disease") that no vocabulary covers; the
    caller logs the rejected counts so nothing is dropped silently.
    """
    known: dict[str, str] = {}
    unknown: dict[str, int] = {}
    for label in raw:
        if label in unknown:
            unknown[label] += 1
        elif label not in known:
            try:
                known[label] = harmonise(label, benchmark)
            except UserError:
                unknown[label] = 1
    return known, unknown


def note_unknown(benchmark: str, unknown: dict[str, int]) -> None:
    """Log the labels left out because the vocabulary has no name for them, most frequent first."""
    if unknown:
        ranked = sorted(unknown.items(), key=lambda kv: -kv[1])
        log.warning("%s: %d label(s) not in the vocabulary left out: %s", benchmark, len(ranked),
                    ", ".join(f"{k} ({v})" for k, v in ranked[:20]))


def label_matrix(rows: Sequence[dict[str, float]], classes: Sequence[str]) -> np.ndarray:
    """float32 (len(rows), len(classes)); a class a row does not mention is NaN (not labelled)."""
    out = np.full((len(rows), len(classes)), np.nan, dtype=np.float32)
    column = {c: j for j, c in enumerate(classes)}
    for i, row in enumerate(rows):
        for name, value in row.items():
            if name in column:
                out[i, column[name]] = value
    return out


def find_image(root: Path, relative: str, suffixes: Sequence[str] = ()) -> Path | None:
    """``relative`` under ``root`` (or with its first folder dropped, for a root that is that folder); with
    ``suffixes``, ``relative`` is a stem and each suffix is tried. None when no candidate exists."""
    parts = Path(relative).parts
    bases = [Path(relative)] + ([Path(*parts[1:])] if len(parts) > 1 else [])
    for base in bases:
        for name in ([base] if not suffixes else [base.with_name(base.name + s) for s in suffixes]):
            if (root / name).is_file():
                return root / name
    return None


def images_by_stem(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """Stem -> path for the files of ``folder`` with one of ``suffixes``: one listing instead of a stat per id."""
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in suffixes}


def float_or_nan(cell: str) -> float:
    """A CSV cell as a float; a blank cell is NaN."""
    return float(cell) if cell.strip() else float("nan")
