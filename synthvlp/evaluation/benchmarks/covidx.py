"""COVIDx (Wang et al., COVID-Net): space-separated ``train.txt``/``val.txt``/``test.txt`` label files.

Each line is ``patient_id filename class [data_source]``. Versions 8 and later have two classes (positive,
negative); earlier ones three (COVID-19, pneumonia, normal), where "pneumonia" means a pneumonia that is not
COVID-19. In the three-class files a COVID-19 image is NaN for "pneumonia" (it is a pneumonia, so 0 would be
wrong, yet the file does not label it as the class it means).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthvlp.errors import UserError
from synthvlp.evaluation.benchmarks._common import existing
from synthvlp.evaluation.benchmarks.base import LabelledSet
from synthvlp.evaluation.labels import harmonise

VALUES = {"positive": (1.0, None), "negative": (0.0, None), "covid-19": (1.0, np.nan),
          "pneumonia": (0.0, 1.0), "normal": (0.0, 0.0)}
"""Class -> (covid-19, pneumonia); None where the version has no pneumonia class."""


def load(path: Path | list[Path], images: Path | None = None) -> LabelledSet:
    """COVIDx from one label file; images are looked up in ``images``, else ``<txt folder>/<txt stem>/`` (the
    release's ``train/`` and ``test/``), else the txt's folder."""
    txt = existing(Path(path[0] if isinstance(path, list) else path), "COVIDx label file")
    if txt.is_dir():
        raise UserError(f"{txt}: is a folder; pass the COVIDx label file (train.txt, val.txt or test.txt)")
    records = []
    for number, line in enumerate(txt.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 3 or fields[2].lower() not in VALUES:
            raise UserError(f"{txt}:{number}: expected 'patient_id filename class [data_source]' with class one "
                            f"of {sorted(VALUES)}, got {line!r}")
        records.append((fields[0], fields[1], fields[2].lower()))
    three_class = any(VALUES[c][1] is not None for _, _, c in records)
    classes = [harmonise("covid-19", "covidx")] + ([harmonise("pneumonia", "covidx")] if three_class else [])
    folders = [Path(images)] if images else [txt.parent / txt.stem, txt.parent]
    refs, ids, rows, group, missing = [], [], [], [], []
    for patient, filename, label in records:
        image = next((f / filename for f in folders if (f / filename).is_file()), None)
        if image is None:
            missing.append(filename)
            continue
        refs.append(image)
        ids.append(filename)
        rows.append(VALUES[label][: len(classes)])
        group.append(patient)
    labels = np.asarray(rows, dtype=np.float32).reshape(-1, len(classes))
    return LabelledSet(f"covidx/{txt.stem}", refs, ids, classes, labels, split=[txt.stem] * len(refs),
                       group=group, missing=missing)
