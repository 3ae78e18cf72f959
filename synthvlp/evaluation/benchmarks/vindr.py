"""VinDr-CXR (Nguyen et al. 2022): ``image_labels_<split>.csv`` and ``annotations_<split>.csv``.

The training set is read by three radiologists each, one row per (image, radiologist); a label is positive
here if ANY radiologist marked it (the convention of the VinDr-CXR Kaggle challenge; majority voting would
drop many of the rare findings). Labels that no vocabulary names ("Other diseases", "Lung cyst", ...) are left
out and logged with their counts, as for PadChest. Boxes of all radiologists are kept as separate regions; the
"No finding" rows have empty box cells and give no region.
"""

from __future__ import annotations

from pathlib import Path

from synthvlp.errors import UserError
from synthvlp.evaluation.benchmarks._common import (existing, images_by_stem, keep_known, label_matrix, note_unknown,
                                                      read_csv)
from synthvlp.evaluation.benchmarks.base import LabelledSet, Region
from synthvlp.evaluation.benchmarks.rsna import dicom_as_png

BOX_COLUMNS = ["image_id", "rad_id", "class_name", "x_min", "y_min", "x_max", "y_max"]
SUFFIXES = (".png", ".jpg", ".jpeg", ".dicom", ".dcm")


def load(path: Path | list[Path], split: str = "train", images: Path | None = None,
         include_no_finding: bool = False) -> LabelledSet:
    """VinDr-CXR ``split`` from the release folder (``annotations/`` and ``<split>/``) or a list of its two
    CSV files; ``images`` defaults to ``<folder>/<split>`` or the CSVs' folder."""
    labels_csv, boxes_csv = _files(path, split)
    frame = read_csv(labels_csv, ["image_id", "rad_id"])
    raw = [c for c in frame.columns if c not in ("image_id", "rad_id")]
    known, unknown = keep_known(raw, "vindr")
    note_unknown("vindr", unknown)
    classes = list(dict.fromkeys(n for n in known.values() if include_no_finding or n != "no finding"))
    marked = frame[list(known)].apply(lambda col: col.str.strip().isin(["1", "1.0"])).groupby(frame["image_id"]).any()
    folder = Path(images) if images else next((d for d in (labels_csv.parent.parent / split, labels_csv.parent / split)
                                               if d.is_dir()), labels_csv.parent)
    on_disk = images_by_stem(folder, SUFFIXES)
    refs, ids, rows, missing = [], [], [], []
    for image_id, flags in marked.iterrows():
        image = on_disk.get(str(image_id))
        if image is None:
            missing.append(str(image_id))
            continue
        refs.append(dicom_as_png(image) if image.suffix in (".dicom", ".dcm") else image)
        ids.append(str(image_id))
        row: dict[str, float] = {}
        for column, name in known.items():
            row[name] = max(row.get(name, 0.0), float(flags[column]))
        rows.append(row)
    regions = _boxes(boxes_csv, {image_id: i for i, image_id in enumerate(ids)}, known) if boxes_csv else []
    return LabelledSet(f"vindr/{split}", refs, ids, classes, label_matrix(rows, classes), regions,
                       split=[split] * len(ids), group=list(ids), missing=missing)


def _files(path: Path | list[Path], split: str) -> tuple[Path, Path | None]:
    """(image-level labels CSV, box CSV or None) from a folder or a list of files."""
    paths = [existing(Path(p), "VinDr-CXR data") for p in (path if isinstance(path, list) else [path])]
    files = [f for p in paths for f in ([*p.glob("*.csv"), *p.glob("annotations/*.csv")] if p.is_dir() else [p])]
    pick = lambda prefix: next((f for f in files if f.name == f"{prefix}_{split}.csv"),  # noqa: E731
                               next((f for f in files if f.name.startswith(prefix)), None))
    labels_csv = pick("image_labels")
    if labels_csv is None:
        raise UserError(f"VinDr-CXR: no image_labels_{split}.csv among {[str(p) for p in paths]}")
    return labels_csv, pick("annotations")


def _boxes(csv: Path, position: dict[str, int], known: dict[str, str]) -> list[Region]:
    """One region per annotated box of a loaded image; rows with empty coordinates ("No finding") give none."""
    frame = read_csv(csv, BOX_COLUMNS)
    regions = []
    for image_id, _, name, *corners in frame[BOX_COLUMNS].itertuples(index=False):
        if image_id in position and name in known and all(c.strip() for c in corners):
            x0, y0, x1, y1 = (float(c) for c in corners)
            regions.append(Region(position[image_id], known[name], (x0, y0, x1, y1)))
    return regions
