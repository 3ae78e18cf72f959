"""CLIP-style pre-training of a ``MedVLP`` model: the objectives ``pretrain.objective`` names, and ``train``.

Each objective is a class that ``config.OBJECTIVES`` names (CLIP/ConVIRT InfoNCE, GLoRIA's local-global loss); all of them read
the same data (synthetic shards, a real CSV or both, ``sampling.py``) and write the same ``checkpoint.pt``, and
they run in the shared training skeleton (``trainer.fit``: torchrun DDP, accumulation, warm-up + cosine, bf16 on
GPU, exact resume). ``train`` is a pure function of (settings, data, seed) plus whatever resumable state
``out_dir`` already holds: a run killed at any moment and started again ends with the same weights as an
uninterrupted one (``tests/pretrain/test_pretrain_resume.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from synthvlp.config import OBJECTIVES, PretrainSection, without_operational
from synthvlp.errors import UserError
from synthvlp.models import build_clip, load_image_encoder, model_config, save_clip_checkpoint
from synthvlp.pretrain import checkpoint
from synthvlp.pretrain.data import Batch, CsvSource, PairDataset, ShardSource, collate
from synthvlp.pretrain.distributed import World, gather, gather_lists
from synthvlp.pretrain.labels import FindingLabels, label_targets
from synthvlp.pretrain.logs import COLUMNS
from synthvlp.pretrain.losses import clip_loss, gloria_local_loss
from synthvlp.pretrain.sampling import Recipe, StepPlan
from synthvlp.pretrain.towers import Features, MedVLP
from synthvlp.pretrain.trainer import Built, Loop, Objective, fit
from synthvlp.runfolder import CHECKPOINT_FILE
from synthvlp.threads import worker_init


@dataclass
class TrainResult:
    steps: int
    samples: int
    final_loss: float
    seconds: float
    samples_per_second: float
    resumed_from: int
    skipped_images: list[str]
    world_size: int
    training_pairs: dict[str, int]  # pairs per origin (a folder of shards or a CSV)


def build_dataset(settings: PretrainSection, shards: Sequence[Path], transform, tokenizer, seed: int) -> tuple[PairDataset, Recipe]:
    """The recipe's sources (synthetic shards first, then the real CSV) and how epochs draw from them."""
    sources = []
    if settings.recipe in ("synthetic", "mixed"):
        if not shards:
            raise UserError("pretrain: no synthetic training shards; run the balance stage or set pretrain.shards")
        sources.append(ShardSource(shards))
    if settings.recipe in ("real", "mixed"):
        sources.append(CsvSource(settings.real, seed))
    labels = FindingLabels() if settings.targets == "labels" else None
    dataset = PairDataset(sources, transform, tokenizer, seed, labels)
    return dataset, Recipe(tuple(dataset.sizes), settings.mix, settings.real_fraction)


def build_model(settings: PretrainSection) -> tuple[MedVLP, Callable, Callable]:
    """(model, train transform, tokenizer), the image tower optionally initialised from an encoder checkpoint and
    with the local heads ``settings.objective`` asks for."""
    clip, train_transform, _, tokenizer = build_clip(settings.model)
    if settings.image_encoder is not None:
        load_image_encoder(settings.image_encoder, clip.visual)
    size = model_config(settings.model)["vision_cfg"].get("image_size", 224)
    size = size if isinstance(size, int) else size[0]
    local_dim = OBJECTIVES.load(settings.objective).local_dim(settings)
    return MedVLP(clip, local_dim, size, tokenizer.context_length), train_transform, tokenizer


def planned_samples(settings: PretrainSection, shards: Sequence[Path], seed: int) -> int:
    """Samples the whole run will consume (steps x global batch), for a progress bar sized before training."""
    _, _, _, tokenizer = build_clip(settings.model)
    dataset, recipe = build_dataset(settings, shards, None, tokenizer, seed)
    steps_per_epoch = recipe.epoch_length // settings.batch_size
    return (settings.max_steps or settings.epochs * steps_per_epoch) * settings.batch_size


class _Batches:
    """The plan's micro-batches as a re-iterable object, the form ``DataLoader(batch_sampler=...)`` takes."""

    def __init__(self, plan: StepPlan, start: int, stop: int) -> None:
        self.plan, self.start, self.stop = plan, start, stop

    def __iter__(self):
        return self.plan.micro_batches(self.start, self.stop)

    def __len__(self) -> int:
        return (self.stop - self.start) * self.plan.accumulate


class ClipObjective(Objective):
    """CLIP/ConVIRT: symmetric InfoNCE on the pooled embeddings of the whole global batch (soft targets from the
    finding labels with ``pretrain.targets: labels``). A new loss subclasses this and overrides ``global_loss``,
    ``local_loss`` or ``combine`` (see docs/extending.md)."""

    label = "pretrain"
    columns = COLUMNS

    def __init__(self, settings: PretrainSection, shards: Sequence[Path], out_dir: Path, seed: int, say: Callable[[str], None] = print) -> None:
        self.settings, self.shards, self.seed, self.say = settings, list(shards), seed, say
        self.loop = Loop(out_dir, seed, settings.warmup_steps, settings.checkpoint_every, settings.keep_checkpoints, settings.tensorboard,
                         settings.threads, settings.accumulate, settings.precision)
        self.skipped: list[str] = []  # every rank's up to the last state, then this rank's
        self._gathered = 0  # how much of ``skipped`` is every rank's

    @classmethod
    def local_dim(cls, settings: PretrainSection) -> int | None:
        """Width of the region and word projections this objective needs (None: no local heads)."""
        return None

    def state_key(self) -> str:
        settings = self.settings
        files = [(str(p), p.stat().st_size) for p in map(Path, self.shards)]
        if settings.real is not None and settings.recipe != "synthetic":
            files.append((str(settings.real.csv), settings.real.csv.stat().st_size if settings.real.csv.exists() else -1))
        return checkpoint.state_key([without_operational(settings), self.seed, model_config(settings.model), files])

    def build(self, world: World) -> Built:
        settings = self.settings
        if settings.batch_size % (settings.accumulate * world.size):
            raise UserError(f"pretrain.batch_size ({settings.batch_size}) must be a multiple of accumulate x processes ({settings.accumulate} x {world.size})")
        self.world = world
        self.model, transform, tokenizer = build_model(settings)
        self.dataset, recipe = build_dataset(settings, self.shards, transform, tokenizer, self.seed)
        self.plan = StepPlan(recipe, self.seed, settings.batch_size, settings.accumulate, world.rank, world.size)
        if self.plan.steps_per_epoch == 0:
            raise UserError(f"pretrain.batch_size ({settings.batch_size}) exceeds the {len(self.dataset)} training samples; lower it")
        total = settings.max_steps or settings.epochs * self.plan.steps_per_epoch
        return Built(self.model, settings.model, total, settings.batch_size)

    def optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        """AdamW; gains, biases and the temperature are not decayed (CLIP's practice)."""
        decay, keep = [], []
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                (keep if parameter.ndim < 2 or "logit_scale" in name else decay).append(parameter)
        groups = [{"params": decay, "weight_decay": self.settings.weight_decay}, {"params": keep, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=self.settings.lr)

    def batches(self, start: int, stop: int) -> Iterator[Batch]:
        world = self.world
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=_Batches(self.plan, start, stop), num_workers=self.settings.workers, collate_fn=collate,
            generator=torch.Generator().manual_seed(self.seed), pin_memory=world.device.type == "cuda", worker_init_fn=worker_init,
        )
        return self._noting_skipped(iter(loader))

    def _noting_skipped(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        for batch in batches:
            self.skipped.extend(batch.skipped)
            if batch.skipped and self.world.main:
                self.say(f"pretrain: skipped unreadable image(s) {batch.skipped}")
            yield batch

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        device = self.world.device
        features = model(batch.images.to(device, non_blocking=True), batch.tokens.to(device, non_blocking=True))
        global_loss, local_loss = self.global_loss(features, batch.labels), self.local_loss(features)
        return self.combine(global_loss, local_loss), {"global_loss": global_loss, "local_loss": local_loss}

    def global_loss(self, features: Features, labels: torch.Tensor | None) -> torch.Tensor:
        """InfoNCE over the global micro-batch: every process's features meet in one loss (``grad_scale``)."""
        world = self.world
        targets = None
        if labels is not None:
            every = gather(labels.to(features.image.device), world)
            targets = label_targets(every, every, self.settings.label_temperature)
        return clip_loss(gather(features.image.float(), world), gather(features.text.float(), world), features.logit_scale.float(), targets)

    def local_loss(self, features: Features) -> torch.Tensor:
        """The word-region loss; none (0) for CLIP."""
        return torch.zeros((), device=features.image.device)

    def combine(self, global_loss: torch.Tensor, local_loss: torch.Tensor) -> torch.Tensor:
        """The loss minimised."""
        return global_loss

    def grad_scale(self) -> float:
        return self.world.size

    def diverged(self, loss: float, step: int, batch: Batch) -> str:
        return f"pre-training diverged: loss is {loss} at step {step}; batch keys {batch.keys} (rank {self.world.rank}); lower pretrain.lr or check those samples"

    def after_step(self) -> None:
        with torch.no_grad():
            self.model.clip.logit_scale.clamp_(0, math.log(self.settings.max_logit_scale))

    def log_values(self, step: int) -> dict[str, float | int]:
        return {"epoch": step // self.plan.steps_per_epoch, "logit_scale": float(self.model.clip.logit_scale.detach().exp())}

    def restore(self, path: Path, state: dict) -> None:
        self.skipped = list(state.get("skipped", []))
        self._gathered = len(self.skipped)

    def extra_state(self) -> dict:
        self.skipped = self.skipped[: self._gathered] + gather_lists(self.skipped[self._gathered :], self.world)
        self._gathered = len(self.skipped)
        return {"skipped": self.skipped}

    def save(self, steps: int) -> None:
        save_clip_checkpoint(self.loop.out_dir / CHECKPOINT_FILE, self.settings.model, self.model.clip, steps=steps)
        if self.skipped:
            self.say(f"pretrain: {len(self.skipped)} unreadable image(s) were skipped: {self.skipped[:10]}")


class GloriaObjective(ClipObjective):
    """GLoRIA: the global InfoNCE plus the local word-to-region attention loss, weighted by ``pretrain.gloria``."""

    @classmethod
    def local_dim(cls, settings: PretrainSection) -> int | None:
        return settings.gloria.local_dim

    def local_loss(self, features: Features) -> torch.Tensor:
        g, world = self.settings.gloria, self.world
        mask = gather(features.word_mask.to(torch.uint8), world).bool()
        regions, words = gather(features.regions.float(), world), gather(features.words.float(), world)
        return gloria_local_loss(regions, words, mask, g.attention_temperature, g.word_temperature, g.logit_temperature)

    def combine(self, global_loss: torch.Tensor, local_loss: torch.Tensor) -> torch.Tensor:
        return self.settings.gloria.global_weight * global_loss + self.settings.gloria.local_weight * local_loss


def train(
    settings: PretrainSection,
    shards: Sequence[Path],
    out_dir: Path,
    seed: int,
    advance: Callable[[int], None] = lambda n: None,
    say: Callable[[str], None] = print,
) -> TrainResult:
    """Train (or resume training) ``settings.model`` with ``settings.objective``; writes ``checkpoint.pt`` and
    ``log.csv`` to ``out_dir``. ``advance(n)`` gets the samples each step consumed, on the main process."""
    objective = OBJECTIVES.load(settings.objective)(settings, shards, Path(out_dir), seed, say)
    done = fit(objective, advance, say)
    return TrainResult(
        steps=done.steps, samples=done.steps * settings.batch_size, final_loss=done.final_loss, seconds=done.seconds,
        samples_per_second=done.samples_per_second, resumed_from=done.resumed_from, skipped_images=objective.skipped,
        world_size=done.world_size, training_pairs=objective.dataset.origins(),
    )
