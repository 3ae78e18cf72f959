"""RSNA Pneumonia Detection (Kaggle 2018): ``stage_2_train_labels.csv``, one row per box.

A patient with pneumonia has one row per opacity box (``x, y, width, height, Target=1``); one without has a
single row with empty box cells and ``Target=0``. Rows are united per patient. Images are DICOM as published;
PNG/JPEG conversions with the same stem are accepted too, and DICOM needs pydicom, which is optional.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from synthvlp.errors import UserError
from synthvlp.evaluation.benchmarks._common import existing, images_by_stem, read_csv
from synthvlp.evaluation.benchmarks.base import LabelledSet, Region
from synthvlp.evaluation.labels import harmonise

COLUMNS = ["patientId", "x", "y", "width", "height", "Target"]
SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")


def load(path: Path | list[Path], images: Path | None = None) -> LabelledSet:
    """RSNA from the label CSV (plain or zipped) or the folder holding ``stage_2_train_labels.csv``.

    ``images`` is the image folder (default: ``stage_2_train_images`` beside the CSV, else the CSV's folder).
    """
    csv = _csv(path)
    frame = read_csv(csv, COLUMNS)
    folder = Path(images) if images else next((d for d in (csv.parent / "stage_2_train_images", csv.parent)
                                               if d.is_dir()), csv.parent)
    pneumonia = harmonise("pneumonia", "rsna")
    order: dict[str, list[tuple[float, float, float, float]]] = {}
    for pid, x, y, w, h, target in frame[COLUMNS].itertuples(index=False):
        boxes = order.setdefault(pid, [])
        if target.strip() == "1":
            x0, y0 = float(x), float(y)
            boxes.append((x0, y0, x0 + float(w), y0 + float(h)))
    on_disk = images_by_stem(folder, SUFFIXES)
    images_out, ids, labels, regions, missing = [], [], [], [], []
    for pid, boxes in order.items():
        image = on_disk.get(pid)
        if image is None:
            missing.append(pid)
            continue
        index = len(ids)
        images_out.append(dicom_as_png(image) if image.suffix == ".dcm" else image)
        ids.append(pid)
        labels.append([1.0 if boxes else 0.0])
        regions.extend(Region(index, pneumonia, box) for box in boxes)
    return LabelledSet("rsna", images_out, ids, [pneumonia], np.asarray(labels, dtype=np.float32).reshape(-1, 1),
                       regions, group=list(ids), missing=missing)


def dicom_as_png(path: Path) -> bytes:
    """The DICOM's pixels as PNG bytes, so the evaluation opens every image with PIL."""
    try:
        import pydicom
    except ImportError as exc:
        raise UserError(f"{path}: reading DICOM needs pydicom (pip install pydicom), or convert the images to "
                        f"PNG with the same file stem") from exc
    pixels = pydicom.dcmread(path).pixel_array.astype(np.float32)
    span = float(pixels.max() - pixels.min()) or 1.0
    buffer = io.BytesIO()
    Image.fromarray(((pixels - pixels.min()) / span * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _csv(path: Path | list[Path]) -> Path:
    """The label CSV; a Kaggle ``.zip`` holding one CSV is read as it is (pandas unzips it)."""
    path = existing(Path(path[0] if isinstance(path, list) else path), "RSNA data")
    if path.is_dir():
        path = existing(path / "stage_2_train_labels.csv", "RSNA label file")
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(".csv")]
        if len(names) != 1:
            raise UserError(f"{path}: expected one CSV inside the zip, found {names}")
    return path
