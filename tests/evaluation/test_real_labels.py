"""Real films with labels as plans: captions state exactly the labels, the film and its boxes reach the shards."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from synthvlp.entities import EntityExtractor
from synthvlp.errors import UserError
from synthvlp.evaluation.benchmarks import load_benchmark
from synthvlp.store import read_shard
from tests.conftest import REPO, SHARED_DATA
from tests.test_runner import make_runner

NIH_256 = SHARED_DATA / "nih-real-256"
pytestmark = pytest.mark.skipif(not (NIH_256 / "labels.csv").is_file(), reason=f"real data {NIH_256} is absent")
STAGES = ("plan", "reports", "images", "filter", "balance")


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("real-nih")
    runner = make_runner(REPO / "configs" / "recipes" / "real-nih.yaml", overrides=[f"run.out_dir={out}", "run.n_samples=120", "run.shard_size=40", "images.size=64"])
    runner.run(STAGES)
    return runner


def test_every_caption_states_exactly_its_films_labels(real_run):
    manifest = pd.read_parquet(real_run.run_dir / "manifest.parquet")
    labels = pd.read_csv(NIH_256 / "labels.csv").set_index("path")
    extractor = EntityExtractor()
    positives_seen = 0
    for row in manifest.itertuples():
        film = labels.loc[str(row.source_image).split("nih-real-256/")[-1]]
        truth = {name for name in load_benchmark("nih", NIH_256).classes if _label(film, name) == 1}
        said = {m.canonical for m in extractor.extract([f"{row.findings} {row.impression}"])[0]
                if m.category in ("ABNORMALITY", "DISEASE") and m.assertion == "present"}
        assert said == truth, (row.id, row.findings, row.impression)
        assert row.report_verified
        positives_seen += bool(truth)
    assert positives_seen >= 30  # a seeded draw, not the set's first (all-normal) rows


def _label(film: pd.Series, harmonised: str) -> int:
    column = {"pleural effusion": "Effusion", "pulmonary edema": "Edema", "infiltrate": "Infiltration",
              "pleural thickening": "Pleural_Thickening", "hiatal hernia": "Hernia"}.get(harmonised, harmonised.capitalize())
    return int(film[column])


def test_splits_follow_the_set_and_valid_films_are_left_out(real_run):
    manifest = pd.read_parquet(real_run.run_dir / "manifest.parquet")
    labels = pd.read_csv(NIH_256 / "labels.csv").set_index("path")
    for row in manifest.itertuples():
        assert labels.loc[str(row.source_image).split("nih-real-256/")[-1], "split"] == row.split
    assert set(manifest.split) == {"train", "test"}


def test_shards_hold_the_resized_film_and_its_boxes_as_masks(real_run):
    boxes = pd.read_csv(NIH_256 / "boxes.csv")
    found_box = False
    for shard in sorted((real_run.run_dir / "images").glob("*.tar")):
        for sample in read_shard(shard):
            meta = json.loads(sample["json"])
            stored = np.asarray(Image.open(io.BytesIO(sample["png"])))
            film = Image.open(meta["source"]).convert("L").resize((64, 64), Image.Resampling.BICUBIC)
            np.testing.assert_array_equal(stored, np.asarray(film))
            for mask in meta["masks"]:
                found_box = True
                mine = boxes[boxes.path == meta["source"].split("nih-real-256/")[-1]]
                row = mine[mine.finding.str.lower() == mask["name"]].iloc[0]
                assert abs(mask["x0"] - row.x * 64 / 256) <= 1 and abs(mask["y1"] - (row.y + row.h) * 64 / 256) <= 1
    if not found_box:
        pytest.skip("no boxed film among the 120 drawn")


def test_more_samples_than_films_names_the_count(tmp_path):
    runner = make_runner(REPO / "configs" / "recipes" / "real-nih.yaml", overrides=[f"run.out_dir={tmp_path / 'r'}", "run.n_samples=5000"])
    with pytest.raises(UserError, match="has 859 films in splits"):
        runner.run(("plan",))
