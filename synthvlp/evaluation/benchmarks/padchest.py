"""PadChest (Bustos et al. 2020): one CSV row per image, ``Labels`` a Python-list-like string.

PadChest has 190+ labels, many of which (devices, old surgery, anatomical variants) no vocabulary names. Unlike
the other adapters, which fail on an unknown label, this one keeps a label only if ``harmonise`` accepts it and
logs the rest with their counts. Labels are exhaustive per report, so a kept class an image does not list is 0;
a row without parseable labels is NaN throughout. Frontal (PA, AP, AP_horizontal) images only by default.
"""

from __future__ import annotations

import ast
from pathlib import Path

from synthvlp.evaluation.benchmarks._common import existing, keep_known, label_matrix, note_unknown, read_csv
from synthvlp.evaluation.benchmarks.base import LabelledSet

COLUMNS = ["ImageID", "ImageDir", "Labels", "Projection", "PatientID"]
FRONTAL = {"PA", "AP", "AP_horizontal"}


def load(path: Path | list[Path], images: Path | None = None, frontal_only: bool = True,
         classes: list[str] | None = None, include_no_finding: bool = False) -> LabelledSet:
    """PadChest from its CSV; images are ``<images>/<ImageDir>/<ImageID>`` or ``<images>/<ImageID>``
    (``images`` defaults to the CSV's folder). ``classes`` (harmonised names) defaults to every kept label."""
    csv = existing(Path(path[0] if isinstance(path, list) else path), "PadChest label file")
    frame = read_csv(csv, COLUMNS)
    if frontal_only:
        frame = frame[frame["Projection"].isin(FRONTAL)]
    parsed = [_labels(cell) for cell in frame["Labels"]]
    known, unknown = keep_known((label for row in parsed if row for label in row), "padchest")
    note_unknown("padchest", unknown)
    if classes is None:
        classes = sorted({n for n in known.values() if include_no_finding or n != "no finding"})
    root = Path(images) if images else csv.parent
    refs, ids, rows, group, missing = [], [], [], [], []
    for image_id, folder, patient, listed in zip(frame["ImageID"], frame["ImageDir"], frame["PatientID"], parsed):
        image = next((p for p in (root / folder / image_id, root / image_id) if p.is_file()), None)
        if image is None:
            missing.append(image_id)
            continue
        refs.append(image)
        ids.append(image_id)
        present = {known[label] for label in listed or [] if label in known}
        rows.append({} if listed is None else {c: float(c in present) for c in classes})
        group.append(patient)
    return LabelledSet("padchest", refs, ids, list(classes), label_matrix(rows, classes), group=group,
                       missing=missing)


def _labels(cell: str) -> list[str] | None:
    """The label names of a ``"['a', 'b']"`` cell, stripped; None for a blank or malformed cell."""
    try:
        value = ast.literal_eval(cell) if cell.strip() else None
    except (ValueError, SyntaxError):
        return None
    if not isinstance(value, list):
        return None
    return [str(v).strip() for v in value if str(v).strip()]
