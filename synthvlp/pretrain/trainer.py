"""The training skeleton every synthvlp training objective runs in: one process or torchrun DDP, exact resume,
gradient accumulation, warm-up + cosine, the divergence guard, periodic states and the final save.

An ``Objective`` supplies what differs between kinds of training (the model and its optimiser, the batches, the
loss of a batch, the extra state a resume needs, what to write at the end); ``fit`` owns the rest, so every
objective resumes, logs and checkpoints alike. A run killed at any moment and started again ends with the
weights of an uninterrupted one: model, optimiser, schedule and RNG states are saved together
(``checkpoint.py``) with the objective's own extra state, under ``state/<key>/`` where ``key`` fingerprints
every setting the weights depend on (``config.without_operational``).
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from synthvlp.errors import UserError
from synthvlp.pretrain import checkpoint
from synthvlp.pretrain.distributed import World, all_reduce_flag, close_world, init_world
from synthvlp.pretrain.logs import TrainLog


@dataclass(frozen=True)
class Loop:
    """The skeleton's own settings, read from whichever config section the objective has."""

    out_dir: Path  # log.csv, state/ and the objective's final files
    seed: int  # seeds the initial weights (identical on every rank)
    warmup_steps: int
    checkpoint_every: int
    keep_checkpoints: int
    tensorboard: bool
    threads: int | None
    accumulate: int = 1  # micro-batches per optimiser step
    precision: str = "fp32"  # "auto": bf16 autocast on GPU, fp32 on CPU; "bf16"; "fp32"; "fp16" (GPU, with a gradient scaler)
    precision_setting: str = "precision"  # the config field errors about ``precision`` name
    grad_clip: float | None = None  # clip the gradient norm to this before each optimiser step
    mean_over_ranks: bool = False  # log the loss and its parts averaged over the processes, not the main one's own


@dataclass(frozen=True)
class Built:
    """What ``Objective.build`` returns: the model (unwrapped) and the run's size."""

    model: torch.nn.Module
    state_name: str  # model name recorded in each state; a state of another name is refused
    total_steps: int
    samples_per_step: int  # all processes together, for progress and samples/s


@dataclass
class Fitted:
    """What a finished ``fit`` reports; each engine wraps it in its own result."""

    steps: int
    final_loss: float
    seconds: float
    samples_per_second: float
    resumed_from: int
    world_size: int


class Objective(ABC):
    """One kind of training. ``build`` runs first (under ``loop.seed``), then the skeleton asks for the optimiser,
    restores a state if there is one, and calls ``batches``, ``loss`` and ``after_step`` each step."""

    loop: Loop
    label: str  # how messages name this training, e.g. "pretrain"
    columns: tuple[str, ...]  # log.csv columns: "step", "loss", "lr", "samples_per_s", "data_wait_s", the loss's parts, ``log_values``'s keys

    @abstractmethod
    def state_key(self) -> str:
        """Fingerprint of everything the weights depend on (``checkpoint.state_key``); names the state folder."""

    @abstractmethod
    def build(self, world: World) -> Built:
        """Model, data and whatever else the run needs, in an order that draws the same random numbers each time."""

    @abstractmethod
    def optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer: ...

    @abstractmethod
    def batches(self, start: int, stop: int) -> Iterator[Any]:
        """This process's micro-batches for optimiser steps ``start`` to ``stop``, ``loop.accumulate`` per step."""

    @abstractmethod
    def loss(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss to minimise, its logged parts by column name) of one micro-batch; ``model`` may be DDP-wrapped."""

    @abstractmethod
    def diverged(self, loss: float, step: int, batch: Any) -> str:
        """The error message when the loss is not finite at ``step`` on some process."""

    @abstractmethod
    def save(self, steps: int) -> None:
        """Write the final outputs (main process only)."""

    def grad_scale(self) -> float:
        """Factor the loss is multiplied by before backward (a loss over features gathered from every process
        needs the process count, because DDP averages gradients)."""
        return 1.0

    def restore(self, path: Path, state: dict[str, Any]) -> None:
        """Take back the extra state ``extra_state`` wrote (after the model, optimiser, schedule and RNGs)."""

    def extra_state(self) -> dict[str, Any]:
        """Extra values each state holds; called on every process (it may gather from all of them)."""
        return {}

    def after_step(self) -> None:
        """Called after each optimiser step (e.g. to clamp a parameter or update an average of the weights)."""

    def logged(self, values: dict[str, float]) -> None:
        """Called on the main process with each step's logged loss and parts (e.g. to show the loss)."""

    def saved(self, step: int) -> None:
        """Called on the main process after each state is written (e.g. to export what it holds)."""

    def log_values(self, step: int) -> dict[str, float | int]:
        """Log columns besides the skeleton's and the loss's parts."""
        return {}


def autocast_dtype(precision: str, device: torch.device, setting: str = "precision") -> torch.dtype | None:
    """The autocast dtype of a ``precision`` setting on ``device`` (None: fp32). 'auto' is bf16 on a GPU and fp32
    on a CPU; fp16 needs a GPU (its gradient scaler is a CUDA one); bf16 runs on CPU too, slower than fp32 on CPUs
    without bf16 units. ``setting`` names the config field in the error."""
    if precision == "fp16" and device.type != "cuda":
        raise UserError(f"{setting} = fp16 needs a CUDA GPU; use bf16 (or fp32) on CPU")
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """LR multiplier: linear warm-up to 1 over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min((step - warmup) / max(1, total - warmup), 1.0)))


def fit(objective: Objective, advance: Callable[[int], None] = lambda n: None, say: Callable[[str], None] = print) -> Fitted:
    """Train (or resume training) ``objective`` under torchrun's world if there is one, else in this process.

    ``advance(n)`` is called on the main process after each optimiser step with the samples it consumed (and once
    at the start of a resumed run with the samples already done), so a progress bar ends full.
    """
    world = init_world(objective.loop.threads)
    try:
        return _Run(objective, world, say).fit(advance)
    finally:
        close_world(world)


def restore_only(objective: Objective) -> int:
    """Build ``objective`` and restore its newest state without training; returns that state's step (0: none)."""
    world = init_world(objective.loop.threads)
    try:
        return _Run(objective, world, lambda s: None).resume()
    finally:
        close_world(world)


class _Run:
    """One ``fit``: the objective, the live model, optimiser and schedule, and the state folder."""

    def __init__(self, objective: Objective, world: World, say: Callable[[str], None]) -> None:
        self.objective, self.world, self.say, loop = objective, world, say, objective.loop
        dtype = autocast_dtype(loop.precision, world.device, loop.precision_setting)
        torch.manual_seed(loop.seed)  # identical initial weights on every rank
        self.built = objective.build(world)
        self.model = self.built.model.to(world.device)
        self.optimizer = objective.optimizer(self.model)
        total = self.built.total_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: warmup_cosine(s, loop.warmup_steps, total))
        self.state_dir = loop.out_dir / "state" / objective.state_key()
        self.autocast = torch.autocast(world.device.type, dtype=dtype) if dtype is not None else nullcontext()
        self.scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None  # fp16 gradients underflow unscaled

    def resume(self) -> int:
        """The step to start from: that of the newest readable state (restored), else 0."""
        if self.world.main:
            checkpoint.drop_other_states(self.state_dir)
        found = checkpoint.latest_state(self.state_dir)
        if found is None:
            return 0
        start = checkpoint.restore(found[0], found[1], self.built.state_name, self.model, self.optimizer, self.scheduler)
        self.objective.restore(found[0], found[1])
        if self.scaler is not None and "scaler" in found[1]:
            self.scaler.load_state_dict(found[1]["scaler"])
        if self.world.main:
            self.say(f"{self.objective.label}: resuming from {found[0]} (step {start} of {self.built.total_steps})")
        return start

    def fit(self, advance: Callable[[int], None]) -> Fitted:
        objective, world, loop, total = self.objective, self.world, self.objective.loop, self.built.total_steps
        start = self.resume()
        if start and world.main:
            advance(start * self.built.samples_per_step)
        log = TrainLog(loop.out_dir, start, loop.tensorboard and world.main, objective.columns) if world.main else None
        wrapped = self.model
        if world.size > 1:
            wrapped = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=[world.local_rank] if world.device.type == "cuda" else None)
        batches = objective.batches(start, total)
        self.model.train()
        began, last_loss = time.perf_counter(), float("nan")
        for step in range(start, total):
            tick = time.perf_counter()
            values = self.step(wrapped, batches, step)
            last_loss = values["loss"]
            if log is not None:
                log.add(step=step, lr=self.scheduler.get_last_lr()[0], samples_per_s=self.built.samples_per_step / (time.perf_counter() - tick),
                        **values, **objective.log_values(step))
                objective.logged(values)
            if (step + 1) % loop.checkpoint_every == 0 or step + 1 == total:
                extra = {**objective.extra_state(), **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {})}
                if world.main:
                    checkpoint.save_state(self.state_dir, step + 1, self.built.state_name, self.model, self.optimizer, self.scheduler, extra, loop.keep_checkpoints)
                    log.flush()
                    objective.saved(step + 1)
            if world.main:
                advance(self.built.samples_per_step)
        seconds = time.perf_counter() - began
        if world.main:
            objective.save(total)
            log.close()
        rate = (total - start) * self.built.samples_per_step / max(seconds, 1e-9)
        return Fitted(total, last_loss, seconds, rate, start, world.size)

    def step(self, wrapped: torch.nn.Module, batches: Iterator[Any], step: int) -> dict[str, float]:
        """One optimiser step over ``loop.accumulate`` micro-batches: (mean loss, mean parts, data wait)."""
        objective, world, accumulate = self.objective, self.world, self.objective.loop.accumulate
        totals: torch.Tensor | None = None
        names: list[str] = []
        wait = 0.0
        for micro in range(accumulate):
            fetched = time.perf_counter()
            batch = next(batches)
            wait += time.perf_counter() - fetched
            sync = micro == accumulate - 1 or world.size == 1
            with (nullcontext() if sync else wrapped.no_sync()), self.autocast:
                loss, parts = objective.loss(wrapped, batch)
            if all_reduce_flag(not bool(torch.isfinite(loss)), world):
                raise UserError(objective.diverged(loss.item(), step, batch))
            scaled = loss * objective.grad_scale() / accumulate
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            names = list(parts)
            now = torch.tensor([loss.item(), *(part.item() for part in parts.values())]) / accumulate
            totals = now if totals is None else totals + now
        self.apply()
        objective.after_step()
        assert totals is not None
        means = self.mean_over_ranks(totals)
        return {"loss": means[0], **dict(zip(names, means[1:], strict=True)), "data_wait_s": wait}

    def apply(self) -> None:
        """The optimiser step on the accumulated gradients (unscaled and clipped first when so set), then the schedule's."""
        clip = self.objective.loop.grad_clip
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def mean_over_ranks(self, totals: torch.Tensor) -> list[float]:
        """This process's (loss, parts), or with ``loop.mean_over_ranks`` their mean over the processes (in float64)."""
        if not self.objective.loop.mean_over_ranks or self.world.size == 1:
            return [float(value) for value in totals]
        summed = totals.to(device=self.world.device, dtype=torch.float64)
        torch.distributed.all_reduce(summed)
        return [float(value) / self.world.size for value in summed.tolist()]
