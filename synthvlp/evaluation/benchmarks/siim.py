"""SIIM-ACR Pneumothorax Segmentation (Kaggle 2019): ``train-rle.csv`` with relative run-length masks.

The competition's RLE is relative: each start is an offset from the end of the previous run, over the image
flattened column by column, so the decoded vector is reshaped (width, height) and transposed. An image with
several pneumothoraces has several rows (their masks are united); ``-1`` means none. Stage 1 spells the mask
column with a leading space (`` EncodedPixels``), stage 2 without. Masks decode lazily, only when grounded.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from synthvlp.errors import UserError
from synthvlp.evaluation.benchmarks._common import existing, read_csv
from synthvlp.evaluation.benchmarks.base import LabelledSet, Region
from synthvlp.evaluation.benchmarks.rsna import dicom_as_png
from synthvlp.evaluation.labels import harmonise

SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")


def load(path: Path | list[Path], images: Path | None = None, size: tuple[int, int] = (1024, 1024)) -> LabelledSet:
    """SIIM from its RLE CSV (or the folder holding ``train-rle.csv``); ``images`` defaults to the CSV's folder,
    searched recursively (the DICOMs sit in study/series folders). ``size`` is (height, width) of the masks."""
    csv = existing(Path(path[0] if isinstance(path, list) else path), "SIIM data")
    if csv.is_dir():
        csv = existing(csv / "train-rle.csv", "SIIM label file")
    frame = read_csv(csv, ["ImageId"])
    column = next((c for c in (" EncodedPixels", "EncodedPixels") if c in frame.columns), None)
    if column is None:
        raise UserError(f"{csv}: missing column ' EncodedPixels' (or 'EncodedPixels'); expected columns "
                        f"['ImageId', ' EncodedPixels'] (found {list(frame.columns)})")
    runs: dict[str, list[str]] = {}
    for image_id, rle in zip(frame["ImageId"], frame[column]):
        rle = rle.strip()
        runs.setdefault(image_id, []).extend([] if rle in ("-1", "") else [rle])
    on_disk = {p.stem: p for p in Path(images or csv.parent).rglob("*") if p.suffix.lower() in SUFFIXES}
    label = harmonise("pneumothorax", "siim")
    refs, ids, labels, regions, missing = [], [], [], [], []
    for image_id, rles in runs.items():
        if image_id not in on_disk:
            missing.append(image_id)
            continue
        image = on_disk[image_id]
        if rles:
            regions.append(Region(len(ids), label, mask=partial(decode_rle, rles, size)))
        refs.append(dicom_as_png(image) if image.suffix.lower() == ".dcm" else image)
        ids.append(image_id)
        labels.append([float(bool(rles))])
    return LabelledSet("siim", refs, ids, [label], np.asarray(labels, dtype=np.float32).reshape(-1, 1), regions,
                       missing=missing)


def decode_rle(rles: list[str], size: tuple[int, int]) -> np.ndarray:
    """The union of the relative-RLE masks ``rles`` as a boolean (height, width) array."""
    height, width = size
    flat = np.zeros(height * width, dtype=bool)
    for rle in rles:
        numbers = np.asarray(rle.split(), dtype=np.int64)
        starts, lengths = numbers[0::2], numbers[1::2]
        absolute = np.cumsum(starts + np.concatenate([[0], lengths[:-1]]))
        for start, length in zip(absolute, lengths):
            flat[start : start + length] = True
    return flat.reshape(width, height).T
