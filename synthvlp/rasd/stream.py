"""On-the-fly RaSD data: nothing is stored, every pair is drawn from a seed.

Two ways in. ``RaSDStream`` is an ``IterableDataset`` for CPU ``DataLoader`` workers, each worker (and each
distributed rank) seeded on its own so no two produce the same stream. ``BufferedSynthesizer`` makes whole batches
on the training device inside the loop, with the reference's optional buffer reuse: keep a batch, replace a
fraction of it each step, and so spend a fraction of the synthesis time per step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info

from synthvlp.rasd.appearance import RandAppearance
from synthvlp.rasd.config import AppearanceConfig, FieldsConfig, RaSDConfig
from synthvlp.rasd.fields import RandLabelMap

Pair = tuple[torch.Tensor, torch.Tensor]


class RaSDSynthesizer:
    """Label maps plus appearance: ``synth(b)`` gives images (B, 1, *spatial) in [0, 1] and int64 labels."""

    def __init__(
        self,
        fields: FieldsConfig | None = None,
        appearance: AppearanceConfig | None = None,
        spatial_size: Sequence[int] = (128, 128, 128),
        device: torch.device | str = "cpu",
        seed: int = 0,
    ) -> None:
        self.label_map = RandLabelMap(fields, spatial_size, device)
        self.appearance = RandAppearance(appearance, device)
        self.set_random_state(seed)

    @classmethod
    def from_config(cls, config: RaSDConfig, device: torch.device | str = "cpu") -> RaSDSynthesizer:
        stream = config.stream
        return cls(config.fields, config.appearance, stream.spatial_size, device, stream.seed)

    def set_random_state(self, seed: int) -> RaSDSynthesizer:
        """Reseed both stages from one seed (as independent child streams); returns ``self``."""
        label_seed, appearance_seed = np.random.SeedSequence(seed).generate_state(2)
        self.label_map.set_random_state(int(label_seed))
        self.appearance.set_random_state(int(appearance_seed))
        return self

    def __call__(self, batch_size: int = 1) -> Pair:
        labels = self.label_map(batch_size)
        return self.appearance(labels, self.label_map.config.num_labels), labels


class RaSDStream(IterableDataset):
    """Yields (image, labels) pairs of shape (1, *spatial) on CPU; endless unless ``length`` is given.

    ``length`` is split across workers; ``chunk`` pairs are drawn per vectorised call.
    """

    def __init__(self, config: RaSDConfig, length: int | None = None, chunk: int = 1) -> None:
        super().__init__()
        self.config, self.length, self.chunk = config, length, chunk

    def _worker(self) -> tuple[int, int]:
        info = get_worker_info()
        return (info.id, info.num_workers) if info else (0, 1)

    def __iter__(self) -> Iterator[Pair]:
        worker, workers = self._worker()
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        seed = int(np.random.SeedSequence([self.config.stream.seed, rank, worker]).generate_state(1)[0])
        synth = RaSDSynthesizer.from_config(self.config).set_random_state(seed)
        remaining = None if self.length is None else len(range(worker, self.length, workers))
        while remaining is None or remaining > 0:
            count = self.chunk if remaining is None else min(self.chunk, remaining)
            images, labels = synth(count)
            yield from zip(images, labels)
            if remaining is not None:
                remaining -= count


class BufferedSynthesizer:
    """Endless iterator of training batches made on ``synthesizer``'s device.

    Each step replaces ``max(1, int(batch_size * refresh_fraction))`` of the buffered pairs, oldest first (the
    reference keeps 16 and replaces 1); 1.0 gives a fresh batch every step. The returned tensors are the buffer
    itself: valid until the next step, not to be modified in place.
    """

    def __init__(self, synthesizer: RaSDSynthesizer, batch_size: int, refresh_fraction: float = 1.0) -> None:
        if not 0 < refresh_fraction <= 1:
            raise ValueError(f"refresh_fraction must be in (0, 1], got {refresh_fraction}")
        self.synthesizer, self.batch_size = synthesizer, batch_size
        self.per_step = max(1, int(batch_size * refresh_fraction))
        self._buffer: Pair | None = None
        self._oldest = 0

    @classmethod
    def from_config(cls, config: RaSDConfig, device: torch.device | str = "cpu") -> BufferedSynthesizer:
        stream = config.stream
        return cls(RaSDSynthesizer.from_config(config, device), stream.batch_size, stream.refresh_fraction)

    def __iter__(self) -> BufferedSynthesizer:
        return self

    def state_dict(self) -> dict:
        """Generator states and reuse buffer (on the CPU): what continues this stream exactly after a restart."""
        buffer = self._buffer
        return {
            "label_map": self.synthesizer.label_map.generator.get_state(),
            "appearance": self.synthesizer.appearance.generator.get_state(),
            "images": buffer[0].cpu() if buffer is not None else torch.empty(0),
            "labels": buffer[1].cpu() if buffer is not None else torch.empty(0, dtype=torch.long),
            "oldest": self._oldest,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state_dict()``'s state; the buffer goes back to the synthesiser's device."""
        self.synthesizer.label_map.generator.set_state(state["label_map"])
        self.synthesizer.appearance.generator.set_state(state["appearance"])
        device = self.synthesizer.label_map.device
        self._buffer = (state["images"].to(device), state["labels"].to(device)) if state["images"].numel() else None
        self._oldest = int(state["oldest"])

    def __next__(self) -> Pair:
        if self._buffer is None or self.per_step == self.batch_size:
            self._buffer = self.synthesizer(self.batch_size)
            return self._buffer
        slots = (self._oldest + torch.arange(self.per_step)) % self.batch_size
        images, labels = self.synthesizer(self.per_step)
        self._buffer[0][slots], self._buffer[1][slots] = images, labels
        self._oldest = (self._oldest + self.per_step) % self.batch_size
        return self._buffer
