"""Which samples each step trains on: the recipes' epoch orders and their split into micro-batches and ranks.

The order of epoch ``e`` is a pure function of (seed, e, recipe), and step ``s`` takes the ``s``-th slice of
it, so the data position in a checkpoint is just the step count: resuming recomputes the order and starts at
that slice, reading nothing twice. Each global batch splits into ``accumulate`` micro-batches and each of those
into contiguous per-rank chunks, so gathering the ranks' features in rank order rebuilds the micro-batch a
single process would see.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from synthvlp.pretrain.data import Item
from synthvlp.seeding import sample_seed


@dataclass(frozen=True)
class Recipe:
    """How epochs draw from the sources (sizes in PairDataset order: synthetic first, then real)."""

    sizes: tuple[int, ...]
    mix: str = "concat"  # 'concat' or 'ratio'
    real_fraction: float = 0.5  # ratio: probability of the last source

    @property
    def epoch_length(self) -> int:
        return sum(self.sizes)

    def order(self, seed: int, epoch: int) -> torch.Tensor:
        """Global sample indices of one epoch."""
        generator = torch.Generator().manual_seed(sample_seed(seed, f"epoch-{epoch}", "pretrain-order"))
        if self.mix == "concat" or len(self.sizes) == 1:
            return torch.randperm(self.epoch_length, generator=generator)
        synthetic, real = self.sizes
        from_real = torch.rand(self.epoch_length, generator=generator) < self.real_fraction
        order = torch.empty(self.epoch_length, dtype=torch.long)
        for mask, size, offset in ((~from_real, synthetic, 0), (from_real, real, synthetic)):
            count = int(mask.sum())
            cycles = -(-count // size) if count else 0
            draws = torch.cat([torch.randperm(size, generator=generator) for _ in range(cycles)] or [torch.empty(0, dtype=torch.long)])
            order[mask] = draws[:count] + offset
        return order


@dataclass(frozen=True)
class StepPlan:
    recipe: Recipe
    seed: int
    batch_size: int  # global, per optimiser step
    accumulate: int
    rank: int
    world: int

    @property
    def steps_per_epoch(self) -> int:
        return self.recipe.epoch_length // self.batch_size

    @property
    def per_rank(self) -> int:
        return self.batch_size // (self.accumulate * self.world)

    def micro_batches(self, start_step: int, stop_step: int) -> Iterator[list[Item]]:
        """This rank's micro-batches for steps [start_step, stop_step), ``accumulate`` per step."""
        micro = self.batch_size // self.accumulate
        epoch, order = -1, torch.empty(0)
        for step in range(start_step, stop_step):
            if step // self.steps_per_epoch != epoch:
                epoch = step // self.steps_per_epoch
                order = self.recipe.order(self.seed, epoch)
            begin = (step % self.steps_per_epoch) * self.batch_size
            for m in range(self.accumulate):
                chunk = begin + m * micro + self.rank * self.per_rank
                yield [Item(int(i), epoch) for i in order[chunk : chunk + self.per_rank]]
