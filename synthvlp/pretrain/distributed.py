"""Process-group setup for one process or ``torchrun`` (gloo on CPU, NCCL on GPU) and feature gathering.

Under torchrun every rank computes the loss over the whole global batch: the other ranks' features are gathered
without gradient and this rank's own slice keeps its graph. Each rank's backward then yields its share of the
global gradient, and DDP's average times the world size is exactly the single-process gradient, which is why
the engine scales the loss by ``world`` (so 2 processes train the same model as 1 on the same global batch).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from synthvlp.threads import apply as apply_threads


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_world(threads: int | None) -> World:
    """Join torchrun's process group when its environment is set, else a world of one; pick the device and set
    this process's thread pools for compute (``threads`` None: the policy's budget, see ``synthvlp.threads``)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        apply_threads("compute", threads)
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(rank=rank, size=size, local_rank=local_rank, device=device)


def close_world(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def gather(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` along dim 0 in rank order; only this rank's slice carries gradient."""
    if world.size == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world.size)]
    dist.all_gather(parts, tensor.detach().contiguous())
    parts[world.rank] = tensor
    return torch.cat(parts)


def all_reduce_flag(flag: bool, world: World) -> bool:
    """True on every rank if ``flag`` is True on any rank (so all ranks stop together)."""
    if world.size == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=world.device)
    dist.all_reduce(value)
    return bool(value.item() > 0)


def gather_lists(items: list[str], world: World) -> list[str]:
    """Every rank's list, concatenated in rank order (a collective: all ranks must call it)."""
    if world.size == 1:
        return items
    parts: list[list[str]] = [[] for _ in range(world.size)]
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part]
