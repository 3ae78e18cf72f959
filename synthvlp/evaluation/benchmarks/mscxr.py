"""MS-CXR (Boecking et al. 2022): phrase grounding boxes on MIMIC-CXR images.

``MS_CXR_Local_Alignment_v*.csv`` has one row per (image, phrase, box) with ``x, y, w, h`` in the original
image's pixels. An image is positive for the categories of its rows; the other categories are NaN, since
MS-CXR annotates what its phrases ground, not every finding of the image.
"""

from __future__ import annotations

from pathlib import Path

from synthvlp.evaluation.benchmarks._common import existing, find_image, harmonise_all, label_matrix, read_csv
from synthvlp.evaluation.benchmarks.base import LabelledSet, Region
from synthvlp.evaluation.labels import harmonise

COLUMNS = ["dicom_id", "category_name", "label_text", "path", "x", "y", "w", "h", "image_width", "image_height"]


def load(path: Path | list[Path], images: Path | None = None) -> LabelledSet:
    """MS-CXR from its CSV; ``path`` is resolved under ``images`` (the MIMIC-CXR-JPG root, default the CSV's
    folder), falling back to ``<images>/<dicom_id>.jpg``."""
    csv = existing(Path(path[0] if isinstance(path, list) else path), "MS-CXR label file")
    frame = read_csv(csv, COLUMNS)
    root = Path(images) if images else csv.parent
    classes = harmonise_all(sorted(set(frame["category_name"])), "ms-cxr")
    refs, ids, rows, regions, missing = [], [], [], [], []
    position: dict[str, int] = {}
    for record in frame.to_dict("records"):
        dicom = record["dicom_id"]
        if dicom not in position:
            image = find_image(root, record["path"]) or find_image(root, dicom, (".jpg", ".png"))
            if image is None:
                if dicom not in missing:
                    missing.append(dicom)
                continue
            position[dicom] = len(ids)
            refs.append(image)
            ids.append(dicom)
            rows.append({})
        index = position[dicom]
        label = harmonise(record["category_name"], "ms-cxr")
        rows[index][label] = 1.0
        x, y, w, h = (float(record[k]) for k in ("x", "y", "w", "h"))
        regions.append(Region(index, label, (x, y, x + w, y + h), phrase=record["label_text"]))
    return LabelledSet("ms-cxr", refs, ids, classes, label_matrix(rows, classes), regions, missing=missing)
