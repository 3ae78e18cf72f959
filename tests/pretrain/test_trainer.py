"""The training skeleton (``pretrain/trainer.py``) with an objective of its own, the objective registry, the
one declaration of operational settings (docs/extending.md's "Add a loss" example runs in tests/test_docs.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from synthvlp.config import OBJECTIVES, OPERATIONAL, PretrainSection, RenderTrainSection, load_config, without_operational
from synthvlp.errors import ConfigError, UserError
from synthvlp.pretrain import checkpoint, engine
from synthvlp.pretrain.trainer import Built, Loop, Objective, fit
from synthvlp.rasd import RaSDConfig

REPO = Path(__file__).resolve().parents[2]


class Interrupt(Exception):
    """Stands in for a kill: raised from the progress callback, after a step's state and before the next step."""


class Regression(Objective):
    """A linear model fitted to y = sum(x): the smallest real objective the skeleton can run."""

    label = "regression"
    columns = ("step", "loss", "lr", "samples_per_s")

    def __init__(self, out_dir: Path, accumulate: int = 1, micro: int = 8, poison_step: int | None = None) -> None:
        self.loop = Loop(out_dir, seed=1, warmup_steps=1, checkpoint_every=2, keep_checkpoints=2, tensorboard=False, threads=1, accumulate=accumulate)
        self.micro, self.poison_step, self.steps = micro, poison_step, 6

    def state_key(self) -> str:
        return checkpoint.state_key({"accumulate": self.loop.accumulate, "micro": self.micro})

    def build(self, world) -> Built:
        self.model = torch.nn.Linear(4, 1)
        return Built(self.model, "linear", self.steps, self.micro * self.loop.accumulate)

    def optimizer(self, model):
        return torch.optim.SGD(model.parameters(), lr=0.05)

    def batches(self, start: int, stop: int):
        for index in range(start * self.loop.accumulate, stop * self.loop.accumulate):  # derived from the position: resumable
            first = index * self.micro
            x = torch.stack([torch.randn(4, generator=torch.Generator().manual_seed(j)) for j in range(first, first + self.micro)])
            yield index // self.loop.accumulate, x, x.sum(1, keepdim=True)

    def loss(self, model, batch):
        step, x, y = batch
        loss = F.mse_loss(model(x), y)
        return (loss * float("nan") if step == self.poison_step else loss), {}

    def diverged(self, loss: float, step: int, batch) -> str:
        return f"regression diverged: loss {loss} at step {step}"

    def save(self, steps: int) -> None:
        torch.save(self.model.state_dict(), self.loop.out_dir / "final.pt")


def test_killed_run_resumes_to_the_uninterrupted_weights(tmp_path):
    full = fit(Regression(tmp_path / "full"), say=lambda s: None)
    calls = []

    def stop_after_step_3(n):  # the state after step 2 is on disk, step 3 ran and is lost
        calls.append(n)
        if len(calls) == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(Regression(tmp_path / "cut"), advance=stop_after_step_3, say=lambda s: None)
    assert not (tmp_path / "cut" / "final.pt").exists()
    said: list[str] = []
    resumed = fit(Regression(tmp_path / "cut"), say=said.append)
    assert resumed.resumed_from == 2 and resumed.steps == full.steps == 6 and "regression: resuming from" in said[0]
    a, b = (torch.load(tmp_path / name / "final.pt", weights_only=True) for name in ("full", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "cut" / "log.csv").read_text().count("\n") == 7  # header + 6 steps


def test_accumulated_micro_batches_make_the_step_of_the_whole_batch(tmp_path):
    whole = fit(Regression(tmp_path / "one", accumulate=1, micro=8), say=lambda s: None)
    halves = fit(Regression(tmp_path / "two", accumulate=2, micro=4), say=lambda s: None)  # the same 8 samples per step
    assert whole.steps == halves.steps == 6 and abs(whole.final_loss - halves.final_loss) < 1e-5
    a, b = (torch.load(tmp_path / name / "final.pt", weights_only=True) for name in ("one", "two"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_a_non_finite_loss_stops_the_run_with_the_objectives_message(tmp_path):
    with pytest.raises(UserError, match="regression diverged: loss nan at step 3"):
        fit(Regression(tmp_path / "bad", poison_step=3), say=lambda s: None)
    assert not (tmp_path / "bad" / "final.pt").exists()
    assert checkpoint.latest_state(next((tmp_path / "bad" / "state").iterdir()))[1]["step"] == 2  # states up to then stay


def test_objective_names_a_registered_class_and_an_unknown_one_is_a_config_error():
    assert OBJECTIVES.load("gloria") is engine.GloriaObjective and OBJECTIVES.load("clip") is engine.ClipObjective
    with pytest.raises(ConfigError, match="pretrain.objective = 'siglip': unknown pretrain.objective 'siglip'; known: clip, gloria"):
        load_config(None, ["pretrain.objective=siglip"])


def test_operational_settings_are_left_out_of_what_the_weights_depend_on():
    base = without_operational(PretrainSection())
    assert without_operational(PretrainSection(threads=2, workers=3, checkpoint_every=7, keep_checkpoints=4, tensorboard=False)) == base
    assert without_operational(PretrainSection(lr=0.5)) != base
    assert "threads" not in base and "gloria" in base
    rasd = without_operational(RaSDConfig.model_validate({"train": {"out_dir": "x", "threads": 3}}))
    assert rasd == without_operational(RaSDConfig()) and "out_dir" not in rasd["train"] and "steps" in rasd["train"]


def test_the_render_trainers_own_list_names_the_operational_fields():
    """diffusion_engine filters by its own tuple (its state keys predate without_operational); it must match the marks."""
    from synthvlp.pretrain import diffusion_engine

    marked = {name for name, field in RenderTrainSection.model_fields.items() if (field.json_schema_extra or {}).get(OPERATIONAL)}
    assert set(diffusion_engine.OPERATIONAL) == marked
