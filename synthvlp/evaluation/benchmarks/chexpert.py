"""CheXpert (Irvin et al. 2019): the train/valid CSVs, the test ``groundtruth.csv`` and the CheXpert 5x200 set.

The train/valid CSVs hold one row per image with 1 positive, 0 negative, -1 uncertain and blank not mentioned;
uncertain and blank are both NaN here (not guessed, as torchxrayvision does). Paths start with the release
folder (``CheXpert-v1.0-small/valid/...``), which the data root may or may not include. The test set labels a
study, not an image, so each study expands to the images of its folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthvlp.errors import UserError
from synthvlp.evaluation.benchmarks._common import (existing, find_image, float_or_nan, harmonise_all,
                                                      label_matrix, read_csv)
from synthvlp.evaluation.benchmarks.base import LabelledSet
from synthvlp.evaluation.labels import harmonise

LABELS = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
          "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
          "Fracture", "Support Devices"]
COMPETITION = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
"""The five competition findings that CheXpert 5x200 (GLoRIA, MedCLIP) samples."""


def load(path: Path | list[Path], split: str = "valid", frontal_only: bool = True,
         include_no_finding: bool = False, images: Path | None = None) -> LabelledSet:
    """CheXpert ``split`` ("train", "valid" or "test") from a CSV or the folder holding it.

    ``images`` is where image paths are resolved (default: the CSV's folder, then its parent).
    """
    csv = _csv(path, split)
    frame = read_csv(csv, ["Study"] if csv.name == "groundtruth.csv" else ["Path", "Frontal/Lateral"])
    labels = [c for c in LABELS if c in frame.columns and (include_no_finding or c != "No Finding")]
    if not labels:
        raise UserError(f"{csv}: no CheXpert label column; expected some of {LABELS}")
    classes = harmonise_all(labels, "chexpert")
    roots = [Path(images)] if images else [csv.parent, csv.parent.parent]
    refs, ids, rows, group, missing = [], [], [], [], []
    for record in frame.to_dict("records"):
        row = _row(record, labels)
        for relative in _image_paths(record, roots, frontal_only):
            found = next((p for p in (find_image(r, relative) for r in roots) if p), None)
            if found is None:
                missing.append(relative)
                continue
            refs.append(found)
            ids.append(relative)
            rows.append(row)
            group.append(_patient(relative))
    return LabelledSet(f"chexpert/{split}", refs, ids, classes, label_matrix(rows, classes),
                       split=[split] * len(refs), group=group, missing=missing)


def build_chexpert_5x200(train_csv: Path, seed: int = 0, per_class: int = 200, frontal_only: bool = True,
                         images: Path | None = None) -> LabelledSet:
    """CheXpert 5x200: ``per_class`` images for each competition finding, positive for it and for none of the
    other four (uncertain and blank count as not positive, as in GLoRIA), drawn with ``seed``.

    Candidates are sorted by path before drawing, so a seed gives the same set whatever the CSV's row order.
    """
    csv = existing(Path(train_csv), "CheXpert train CSV")
    frame = read_csv(csv, ["Path", "Frontal/Lateral", *COMPETITION])
    if frontal_only:
        frame = frame[frame["Frontal/Lateral"] == "Frontal"]
    positive = frame[COMPETITION].apply(lambda col: col.str.strip().isin(["1", "1.0"]))
    rng = np.random.default_rng(seed)
    classes = harmonise_all(COMPETITION, "chexpert")
    roots = [Path(images)] if images else [csv.parent, csv.parent.parent]
    refs, ids, label_rows, missing = [], [], [], []
    for j, finding in enumerate(COMPETITION):
        only = positive[finding] & (positive.sum(axis=1) == 1)
        candidates = sorted(frame.loc[only, "Path"])
        if len(candidates) < per_class:
            raise UserError(f"{csv}: only {len(candidates)} frontal images are positive for {finding!r} alone; "
                            f"CheXpert 5x200 needs {per_class} (pass per_class= to draw fewer)")
        for relative in rng.choice(candidates, size=per_class, replace=False):
            found = next((p for p in (find_image(r, str(relative)) for r in roots) if p), None)
            if found is None:
                missing.append(str(relative))
                continue
            refs.append(found)
            ids.append(str(relative))
            label_rows.append(np.eye(len(COMPETITION), dtype=np.float32)[j])
    labels = np.stack(label_rows) if label_rows else np.zeros((0, len(classes)), dtype=np.float32)
    return LabelledSet("chexpert-5x200", refs, ids, classes, labels, split=["test"] * len(refs),
                       group=[_patient(i) for i in ids], missing=missing)


def _csv(path: Path | list[Path], split: str) -> Path:
    """The label file: ``path`` itself, or ``<split>.csv`` (``groundtruth.csv`` for test) in the folder."""
    path = existing(Path(path[0] if isinstance(path, list) else path), "CheXpert data")
    if path.is_file():
        return path
    return existing(path / ("groundtruth.csv" if split == "test" else f"{split}.csv"), "CheXpert label file")


def _row(record: dict[str, str], labels: list[str]) -> dict[str, float]:
    """Harmonised name -> 1/0/NaN; -1 (uncertain) and blank are NaN."""
    values = {raw: float_or_nan(record[raw]) for raw in labels}
    return {harmonise(raw, "chexpert"): float("nan") if v == -1 else v for raw, v in values.items()}


def _image_paths(record: dict[str, str], roots: list[Path], frontal_only: bool) -> list[str]:
    """The image path of a train/valid row, or the images in a test row's study folder."""
    if "Path" in record:
        return [] if frontal_only and record["Frontal/Lateral"] != "Frontal" else [record["Path"]]
    study = record["Study"].rstrip("/")
    for root in roots:
        for folder in (root / study, root / Path(*Path(study).parts[1:])):
            if folder.is_dir():
                names = sorted(p.name for p in folder.glob("*.jpg"))
                names = [n for n in names if "frontal" in n] if frontal_only else names
                return [f"{study}/{n}" for n in names]
    return [f"{study}/view1_frontal.jpg"]


def _patient(relative: str) -> str:
    """The ``patientNNNNN`` folder of an image path, the unit no fine-tuning split may cut."""
    return next((p for p in Path(relative).parts if p.startswith("patient")), relative)
