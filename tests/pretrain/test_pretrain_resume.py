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


CHILD = """
import sys, time
from pathlib import Path
sys.path[:0] = [{here!r}, {tests!r}]  # this file's folder and the tests' helpers
from test_pretrain_resume import _settings
from synthvlp.pretrain.engine import train
shards = sorted(Path({data!r}).glob('train-*.tar'))
train(_settings(accumulate=2), shards, Path({out!r}), seed=3, advance=lambda n: time.sleep(0.3), say=lambda s: None)
"""


def test_sigkilled_training_process_resumes_to_the_same_weights(tmp_path):
    """A real SIGKILL (no cleanup code runs) while the child is between checkpoints, then a resume in-process."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    shards = make_shards(tmp_path / "data", n_shards=2, per_shard=12)
    full = train(_settings(accumulate=2), shards, tmp_path / "full", seed=3, say=lambda s: None)
    script = CHILD.format(here=str(Path(__file__).resolve().parent), tests=str(Path(__file__).resolve().parents[1]), data=str(tmp_path / "data"), out=str(tmp_path / "cut"))
    child = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 240
    while not list((tmp_path / "cut").glob("state/*/step-00000004.pt")):
        assert child.poll() is None, "the child finished or died before its step-4 state"
        assert time.monotonic() < deadline, "no step-4 state within 240 s"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert not (tmp_path / "cut" / "checkpoint.pt").exists()
    resumed = train(_settings(accumulate=2), shards, tmp_path / "cut", seed=3, say=lambda s: None)
    assert resumed.resumed_from >= 4 and resumed.steps == full.steps
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    for key in a:
        assert torch.equal(a[key], b[key]), key
