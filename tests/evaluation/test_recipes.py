"""Every recipe ends with an evaluation on its own held-out data, and compare lines recipes up."""

from __future__ import annotations

import pytest

from synthvlp.evaluation.compare import compare_runs
from tests.conftest import REPO, SHARED_DATA
from tests.test_runner import DATA_STAGES, make_runner

NOTES = SHARED_DATA / "covid-notes" / "pairs.csv"
FAST = ["pretrain.epochs=1", "pretrain.batch_size=16", "pretrain.threads=1", "evaluate.bootstrap=10", "evaluate.benchmarks=[]"]


@pytest.mark.skipif(not NOTES.is_file(), reason=f"real data {NOTES} is absent")
def test_a_real_csv_run_is_scored_on_its_held_out_patients_and_compares_with_a_synthetic_run(tmp_path, write_config):
    real = make_runner(REPO / "configs" / "recipes" / "real.yaml", overrides=[f"run.out_dir={tmp_path / 'real'}", *FAST])
    real.run(("pretrain", "evaluate"))
    held_out = tmp_path / "real" / "evaluate" / "real-heldout"
    assert (held_out / "zeroshot.csv").exists() and (held_out / "zeroshot_floor.csv").exists()
    synthetic = make_runner(write_config(tmp_path / "synthetic"))
    synthetic.run((*DATA_STAGES, "pretrain", "evaluate"))
    tables = compare_runs([tmp_path / "real", tmp_path / "synthetic"])
    assert set(tables) == {"real-heldout", "synthetic-test"}
    assert tables["real-heldout"][0] == ["class", "real", "synthetic"]
