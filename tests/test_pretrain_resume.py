"""Exact resume: a run interrupted mid-training and started again ends with the uninterrupted run's weights."""

from __future__ import annotations

import pytest
import torch

from pretrain_helpers import make_shards
from synthvlp.config import PretrainSection
from synthvlp.pretrain.engine import train


class Interrupt(Exception):
    """Stands in for a kill: raised from the progress callback, so nothing after that step runs."""


def _settings(**overrides) -> PretrainSection:
    values = dict(epochs=3, batch_size=8, threads=1, warmup_steps=2, checkpoint_every=2, tensorboard=False, workers=0)
    values.update(overrides)
    return PretrainSection(**values)


def _weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path / "checkpoint.pt", weights_only=True)["state_dict"]


@pytest.mark.parametrize("objective", ["clip", pytest.param("gloria", marks=pytest.mark.slow)])
def test_interrupted_and_resumed_run_matches_uninterrupted(tmp_path, objective):
    shards = make_shards(tmp_path / "data", n_shards=2, per_shard=12)  # 24 samples: 3 steps per epoch, 9 in all
    settings = _settings(objective=objective, accumulate=2)
    full = train(settings, shards, tmp_path / "full", seed=3, say=lambda s: None)

    seen = []

    def stop_at_step_6(n):  # the state of step 6 is written; die before step 7's
        seen.append(n)
        if len(seen) == 7:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(settings, shards, tmp_path / "cut", seed=3, advance=stop_at_step_6, say=lambda s: None)
    assert not (tmp_path / "cut" / "checkpoint.pt").exists()
    resumed = train(settings, shards, tmp_path / "cut", seed=3, say=lambda s: None)
    assert resumed.resumed_from == 6 and full.steps == resumed.steps == 9
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    log_full = (tmp_path / "full" / "log.csv").read_text().splitlines()
    log_cut = (tmp_path / "cut" / "log.csv").read_text().splitlines()
    assert [r.split(",")[:3] for r in log_full] == [r.split(",")[:3] for r in log_cut]  # step, epoch, loss


def test_changed_settings_start_afresh_instead_of_resuming(tmp_path):
    shards = make_shards(tmp_path / "data", n_shards=1, per_shard=16)
    train(_settings(epochs=1), shards, tmp_path / "run", seed=0, say=lambda s: None)
    again = train(_settings(epochs=1), shards, tmp_path / "run", seed=0, say=lambda s: None)
    changed = train(_settings(epochs=1, lr=5e-4), shards, tmp_path / "run", seed=0, say=lambda s: None)
    assert (again.resumed_from, changed.resumed_from) == (2, 0)
    assert len(list((tmp_path / "run" / "state").iterdir())) == 1
