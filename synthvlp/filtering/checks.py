"""The filter stage for one unit: every image and text check, plus exemplar similarity, as manifest columns.

Checks never drop a sample silently: a rejected sample keeps its row, with each failing check named in
``reject_reasons``, and the balance stage leaves it out of the exported dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

import numpy as np
import pyarrow as pa

from synthvlp.config import FilterSection, RunConfig
from synthvlp.encoders import ImageEncoder, build_encoder
from synthvlp.filtering.exemplars import bank_features, max_similarity
from synthvlp.filtering.image_checks import DecodedBatch, decode_batch, image_scores, image_signatures
from synthvlp.filtering.judge import judge_images
from synthvlp.filtering.memorisation import load_training_films, nearest_training_films
from synthvlp.filtering.text_checks import text_scores


@cache
def _exemplar_bank(encoder_spec: str, folder: Path, cache_dir: Path) -> tuple[ImageEncoder, np.ndarray]:
    """The encoder and the bank's features, built once per process: regeneration checks a unit several times,
    and loading a Hugging Face encoder for every check would dominate the stage."""
    encoder = build_encoder(encoder_spec)
    return encoder, bank_features(folder, encoder, cache_dir)


def image_check_scores(settings: FilterSection, batch: DecodedBatch, cache_dir: Path, texts: Sequence[str | None] | None = None,
                       seed: int = 0, nearest: dict[str, list[str]] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{check: (scores, passed)} for the image checks, with the exemplar filter, the memorisation guard and the
    LLM judge (shown ``texts``, the reports) when they are configured. The judge's score is 1 for pass, 0 for
    reject. Checks that find a neighbour put its key per image into ``nearest[check]``."""
    checks = image_scores(batch, settings)
    if settings.train_films is not None:
        found = nearest_training_films(batch.pixels, load_training_films(Path(settings.train_films)))
        checks["memorisation"] = (found.correlation, (found.correlation < settings.max_train_correlation) & batch.ok)
        if nearest is not None:
            nearest["memorisation"] = [key if ok else None for key, ok in zip(found.keys, batch.ok, strict=True)]
    if settings.exemplar_dir is not None:
        encoder, bank = _exemplar_bank(settings.exemplar_encoder, Path(settings.exemplar_dir), Path(cache_dir))
        similarity = max_similarity(encoder.encode(batch.pixels), bank)
        checks["exemplar"] = (similarity, (similarity < settings.exemplar_threshold) & batch.ok)
    if settings.judge is not None:
        passed, _ = judge_images(settings.judge, batch.pixels, texts, seed)
        checks["judge"] = (passed.astype(np.float64), passed & batch.ok)
    return checks


def failed_image_checks(config: RunConfig, pngs: list[bytes], cache_dir: Path, texts: Sequence[str | None] | None = None) -> list[list[str]]:
    """Per image, the names of the image checks it fails: what regeneration re-renders for."""
    checks = image_check_scores(config.filter, decode_batch(pngs, config.images.size), cache_dir, texts, config.run.seed)
    return [[name for name, (_, passed) in checks.items() if not passed[i]] for i in range(len(pngs))]


def check_samples(
    config: RunConfig,
    rows: list[dict],
    images: dict[str, bytes],
    cache_dir: Path,
    advance: Callable[[int], None] = lambda n: None,
) -> tuple[pa.Table, np.ndarray]:
    """Score a unit. ``rows`` carry id, findings, impression, planned and extracted entities; ``images`` maps id
    to PNG bytes. Returns (id, ``filter_<check>_score``/``_verdict`` per check, ``accepted``, ``reject_reasons``;
    the images' signatures for near-duplicate search)."""
    settings = config.filter
    ids = [r["id"] for r in rows]
    batch = decode_batch([images[k] for k in ids], config.images.size)
    nearest: dict[str, list[str]] = {}
    image_checks = image_check_scores(settings, batch, cache_dir, [r.get("impression") for r in rows], config.run.seed, nearest)
    checks = image_checks | text_scores(rows, settings)
    advance(len(ids))
    columns: dict[str, object] = {"id": ids}
    for name, (scores, passed) in checks.items():
        columns[f"filter_{name}_score"] = pa.array(scores, pa.float64())
        columns[f"filter_{name}_verdict"] = ["pass" if ok else "reject" for ok in passed]
    for name, keys in nearest.items():
        columns[f"filter_{name}_nearest"] = pa.array(keys, pa.string())
    reasons = reject_reasons(checks, set(image_checks), batch)
    columns["accepted"] = [r is None for r in reasons]
    columns["reject_reasons"] = reasons
    return pa.table(columns), image_signatures(batch.pixels)


def reject_reasons(checks: dict[str, tuple[np.ndarray, np.ndarray]], image_checks: set[str], batch: DecodedBatch) -> list[str | None]:
    """Per sample, its failing checks joined with "; " (None when it passed them all).

    An unreadable image fails every image check; its one image reason is why it is unreadable ("format: ...")."""
    reasons: list[list[str]] = [[] for _ in batch.problems]
    for name, (_, passed) in checks.items():
        for row in np.flatnonzero(~passed):
            if batch.ok[row] or name not in image_checks:
                reasons[row].append(name)
            elif name == "format":
                reasons[row].append(f"format: {batch.problems[row]}")
    return ["; ".join(r) if r else None for r in reasons]
