"""The memorisation guard on real NIH films: a copy of a training film is flagged, another patient's film passes,
and the filter stage rejects the copy and records its nearest training film."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import SHARED_DATA
from synthvlp.config import FilterSection, RunConfig
from synthvlp.errors import UserError
from synthvlp.filtering.checks import check_samples
from synthvlp.filtering.memorisation import load_training_films, nearest_training_films

NIH = SHARED_DATA / "nih-real-256"
SIZE = 64
needs_nih = pytest.mark.skipif(not (NIH / "labels.csv").is_file(), reason="needs ../shared/data/nih-real-256")


def _films(split: str, n: int) -> tuple[list[str], np.ndarray]:
    table = pd.read_csv(NIH / "labels.csv")
    rows = table[table["split"] == split].head(n)
    films = [np.asarray(Image.open(NIH / p).convert("L").resize((SIZE, SIZE), Image.Resampling.BOX)) for p in rows["path"]]
    return list(rows["path"]), np.stack(films)


@pytest.fixture(scope="module")
def index_path(tmp_path_factory):
    keys, films = _films("train", 200)
    path = tmp_path_factory.mktemp("renderer") / "training-films.npz"
    np.savez_compressed(path, keys=np.array(keys), films=films)
    return path


@needs_nih
def test_a_copy_is_flagged_and_another_patient_passes(index_path):
    index = load_training_films(index_path)
    train_keys, train_films = _films("train", 200)
    _, test_films = _films("test", 40)
    copies = train_films[[3, 150]].astype(np.float32) / 255
    noisy = np.clip(copies * 0.9 + 0.05 + np.random.default_rng(0).normal(0, 0.02, copies.shape), 0, 1)  # re-exposed, re-noised
    found = nearest_training_films(np.concatenate([copies, noisy]), index)
    assert found.keys == [train_keys[3], train_keys[150]] * 2
    assert found.correlation[:2] == pytest.approx(1.0, abs=1e-5)
    assert (found.correlation[2:] >= FilterSection().max_train_correlation).all()
    others = nearest_training_films(test_films.astype(np.float32) / 255, index)
    assert (others.correlation < FilterSection().max_train_correlation).all()
    assert others.correlation.min() > 0.5  # chest films share their layout: the score is not trivially low


@needs_nih
def test_filter_stage_rejects_the_copy_and_records_its_neighbour(index_path, tmp_path):
    train_keys, train_films = _films("train", 5)
    _, test_films = _films("test", 1)
    config = RunConfig.model_validate({"images": {"size": SIZE}, "filter": {"train_films": str(index_path), "min_report_chars": 0}})
    pngs = {}
    for key, film in (("s00000000", train_films[4]), ("s00000001", test_films[0])):
        buffer = io.BytesIO()
        Image.fromarray(film).save(buffer, format="PNG")
        pngs[key] = buffer.getvalue()
    rows = [{"id": k, "findings": "Clear lungs.", "impression": "No acute process.", "planned_entities": [], "extracted_entities": []} for k in pngs]
    table, _ = check_samples(config, rows, pngs, tmp_path)
    assert table.column("filter_memorisation_verdict").to_pylist() == ["reject", "pass"]
    assert table.column("filter_memorisation_nearest").to_pylist()[0] == train_keys[4]
    assert table.column("reject_reasons").to_pylist()[0] == "memorisation"


def test_a_bad_index_is_named(tmp_path):
    with pytest.raises(UserError, match=r"filter.train_films = .*missing.npz: no such file"):
        load_training_films(tmp_path / "missing.npz")
    np.savez(tmp_path / "wrong.npz", films=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(UserError, match=r"wrong.npz: not a training-film index"):
        load_training_films(tmp_path / "wrong.npz")


def test_run_report_shows_the_distribution_and_closest_pairs():
    from synthvlp.report import _memorisation_lines

    rows = [{"id": f"s{i}", "filter_memorisation_score": score, "filter_memorisation_nearest": f"t{i}", "filter_memorisation_verdict": verdict}
            for i, (score, verdict) in enumerate([(0.80, "pass"), (0.99, "reject"), (0.85, "pass")])]
    [_, line] = _memorisation_lines(rows)
    assert "max 0.990; 1 rejected as copies" in line and "Closest: s1 ~ t1 (0.990), s2 ~ t2 (0.850)" in line
    assert _memorisation_lines([{"id": "s0"}]) == []
