"""Any other labelled set: a CSV with an image column and 1/0/-1 label columns, or one subfolder per class.

Column and folder names pass through ``harmonise`` like every benchmark's labels, so an unknown name is an
error that says to add an alias, not a class silently missing from the vocabulary.
"""

from __future__ import annotations

from pathlib import Path

from synthvlp.errors import UserError
from synthvlp.evaluation.benchmarks._common import (IMAGE_SUFFIXES, existing, float_or_nan, harmonise_all,
                                                      label_matrix, read_csv)
from synthvlp.evaluation.benchmarks.base import LabelledSet
from synthvlp.evaluation.labels import harmonise

LABEL_VALUES = {"", "1", "0", "-1", "1.0", "0.0", "-1.0"}


def load(path: Path | list[Path], image_column: str = "path", label_columns: list[str] | None = None,
         images: Path | None = None) -> LabelledSet:
    """A CSV (image paths relative to ``images``, default its folder; -1 and blank are NaN) or a folder with one
    subfolder per class. The set is named after the CSV (or folder), and so are its result folders.

    Without ``label_columns`` every column whose cells are all 1/0/-1/blank is a label. In a folder, an image is
    1 for its subfolder's class and 0 for the others; a "normal"/"no finding" subfolder is 0 for all classes.
    """
    path = existing(Path(path[0] if isinstance(path, list) else path), "data")
    if path.is_dir():
        return _folder(path)
    return _csv(path, image_column, label_columns, existing(Path(images), "image folder") if images else path.parent)


def _csv(csv: Path, image_column: str, label_columns: list[str] | None, root: Path) -> LabelledSet:
    """Labels from the named (or all 1/0/-1) columns of ``csv``."""
    frame = read_csv(csv, [image_column, *(label_columns or [])])
    if label_columns is None:
        label_columns = [c for c in frame.columns if c != image_column and set(frame[c].str.strip()) <= LABEL_VALUES]
    if not label_columns:
        raise UserError(f"{csv}: no label column (all cells 1, 0, -1 or blank) beside {image_column!r}; "
                        f"name them with label_columns")
    classes = harmonise_all(label_columns, csv.name)
    refs, ids, rows, missing = [], [], [], []
    for record in frame.to_dict("records"):
        image = root / record[image_column]
        if not image.is_file():
            missing.append(record[image_column])
            continue
        refs.append(image)
        ids.append(record[image_column])
        values = {harmonise(c, csv.name): float_or_nan(record[c]) for c in label_columns}
        rows.append({k: float("nan") if v == -1 else v for k, v in values.items()})
    return LabelledSet(csv.stem, refs, ids, classes, label_matrix(rows, classes), missing=missing)


def _folder(root: Path) -> LabelledSet:
    """One class per subfolder of ``root``; the images directly inside each subfolder."""
    folders = {sub: harmonise(sub.name, root.name) for sub in sorted(root.iterdir()) if sub.is_dir()}
    if not folders:
        raise UserError(f"{root}: expected one subfolder per class, found none")
    classes = [c for c in dict.fromkeys(folders.values()) if c != "no finding"]
    refs, ids, rows = [], [], []
    for sub, name in folders.items():
        for image in sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            refs.append(image)
            ids.append(f"{sub.name}/{image.name}")
            rows.append({c: float(c == name) for c in classes})
    return LabelledSet(root.name, refs, ids, classes, label_matrix(rows, classes))
