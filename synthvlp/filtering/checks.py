"""Per-sample quality checks. Each check yields a score and a pass/reject verdict, recorded in the manifest.

Checks never drop a sample silently: a rejected sample keeps its row, with the failing checks named in
``reject_reasons``, and is left out of the exported dataset by the balance stage.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pyarrow as pa
from PIL import Image

from synthvlp.config import FilterSection


def decode_gray(png: bytes) -> np.ndarray:
    """A PNG as float32 in [0, 1], whatever its bit depth."""
    image = Image.open(io.BytesIO(png))
    array = np.asarray(image.convert("I;16") if image.mode in ("I", "I;16") else image.convert("L"), dtype=np.float32)
    return array / (65535.0 if image.mode in ("I", "I;16") else 255.0)


def check_samples(
    settings: FilterSection,
    ids: list[str],
    images: dict[str, bytes],
    reports: pa.Table,
    advance: Callable[[int], None] = lambda n: None,
) -> pa.Table:
    """Score the unit's samples; ``images`` maps id to PNG bytes, ``reports`` holds findings and impression."""
    text = {row["id"]: f"{row['findings']} {row['impression']}" for row in reports.select(["id", "findings", "impression"]).to_pylist()}
    stds, saturated, lengths = [], [], []
    for key in ids:
        pixels = decode_gray(images[key])
        stds.append(float(pixels.std()) if np.isfinite(pixels).all() else 0.0)
        saturated.append(float(((pixels <= 0.0) | (pixels >= 1.0)).mean()))
        lengths.append(float(len(text[key].strip())))
        advance(1)
    scores = {
        "contrast": (stds, [s >= settings.min_std for s in stds]),
        "saturation": (saturated, [s <= settings.max_saturated for s in saturated]),
        "report_length": (lengths, [n >= settings.min_report_chars for n in lengths]),
    }
    columns: dict[str, list] = {"id": ids}
    reasons: list[list[str]] = [[] for _ in ids]
    for check, (values, passed) in scores.items():
        columns[f"filter_{check}_score"] = values
        columns[f"filter_{check}_verdict"] = ["pass" if ok else "reject" for ok in passed]
        for row, ok in enumerate(passed):
            if not ok:
                reasons[row].append(check)
    columns["accepted"] = [not r for r in reasons]
    columns["reject_reasons"] = [",".join(r) if r else None for r in reasons]
    return pa.table(columns)
