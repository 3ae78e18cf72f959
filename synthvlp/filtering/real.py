"""The same quality filters on a real paired dataset: a CSV of image paths and report text (MIMIC-CXR layout).

Mixed recipes train on real and synthetic data together, and real collections carry their own problems (wrong
body part, rotated or inverted films, truncated notes). This writes every row's scores and verdicts, and a
cleaned CSV of the accepted rows with absolute image paths, ready for a real or mixed recipe.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from synthvlp.config import FilterSection
from synthvlp.csvfiles import read_csv_table
from synthvlp.filtering.checks import image_check_scores, reject_reasons
from synthvlp.filtering.image_checks import DecodedBatch
from synthvlp.filtering.text_checks import repeated_ngram_share
from synthvlp.store import atomic_open

BATCH = 256


def _load(path: Path, size: int) -> tuple[np.ndarray | None, str | None]:
    """Any image as grayscale float32 at size x size; real data comes in every size, mode and bit depth."""
    if not path.is_file():
        return None, "missing file"
    try:
        with Image.open(path) as image:
            if image.mode in ("I", "I;16", "I;16B"):
                array = np.asarray(image, dtype=np.float32) / 65535.0
                resized = Image.fromarray(array, mode="F").resize((size, size), Image.Resampling.BILINEAR)
                return np.asarray(resized, dtype=np.float32), None
            gray = image.convert("L").resize((size, size), Image.Resampling.BILINEAR)
    except (UnidentifiedImageError, OSError) as exc:
        return None, f"undecodable ({exc.__class__.__name__})"
    return np.asarray(gray, dtype=np.float32) / 255.0, None


def filter_real_dataset(
    csv_path: Path,
    out_dir: Path,
    settings: FilterSection,
    image_column: str = "image",
    text_column: str = "text",
    size: int = 256,
    cache_dir: Path | None = None,
    advance: Callable[[int], None] = lambda n: None,
) -> dict[str, int]:
    """Score every row of ``csv_path``; write ``verdicts.parquet`` and ``cleaned.csv`` to ``out_dir``.

    Image paths are relative to the CSV's folder unless absolute. Returns counts: rows, accepted, and rejects per
    reason.
    """
    csv_path, out_dir = Path(csv_path), Path(out_dir)
    table = read_csv_table(csv_path, "real dataset CSV", (image_column, text_column))
    paths = [Path(p) if Path(p).is_absolute() else csv_path.parent / p for p in table[image_column].astype(str)]
    texts = table[text_column].fillna("").astype(str).tolist()
    scores: dict[str, list[float]] = {}
    passed: dict[str, list[bool]] = {}
    reasons: list[str | None] = []
    for start in range(0, len(paths), BATCH):
        loaded = [_load(p, size) for p in paths[start : start + BATCH]]
        pixels = np.stack([a if a is not None else np.zeros((size, size), np.float32) for a, _ in loaded])
        batch = DecodedBatch(pixels=pixels, ok=np.array([a is not None for a, _ in loaded]), problems=[why for _, why in loaded])
        chunk = texts[start : start + BATCH]
        checks = image_check_scores(settings, batch, cache_dir or out_dir / "cache", chunk)
        image_checks = set(checks)
        lengths = np.array([len(t.strip()) for t in chunk], dtype=np.float64)
        repeats = np.array([repeated_ngram_share(t) for t in chunk])
        checks["report_length"] = (lengths, (lengths >= settings.min_report_chars) & (lengths <= settings.max_report_chars))
        checks["repetition"] = (repeats, repeats <= settings.max_repeated_ngrams)
        for name, (values, ok) in checks.items():
            scores.setdefault(name, []).extend(values.tolist())
            passed.setdefault(name, []).extend(ok.tolist())
        reasons.extend(reject_reasons(checks, image_checks, batch))
        advance(len(chunk))
    verdicts = table.copy()
    verdicts[image_column] = [str(p.resolve()) for p in paths]
    for name in scores:
        verdicts[f"filter_{name}_score"] = scores[name]
        verdicts[f"filter_{name}_verdict"] = ["pass" if ok else "reject" for ok in passed[name]]
    verdicts["accepted"] = [r is None for r in reasons]
    verdicts["reject_reasons"] = reasons
    with atomic_open(out_dir / "verdicts.parquet", "wb") as handle:
        verdicts.to_parquet(handle, index=False)
    with atomic_open(out_dir / "cleaned.csv", "w") as handle:
        verdicts.loc[verdicts["accepted"], list(table.columns)].to_csv(handle, index=False)
    counts = Counter(reason.split(":")[0] for r in reasons if r for reason in r.split("; "))
    return {"rows": len(paths), "accepted": int(verdicts["accepted"].sum()), **{f"rejected_{k}": v for k, v in sorted(counts.items())}}
