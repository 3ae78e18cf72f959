"""The pre-training loop: one process or torchrun DDP, accumulation, warm-up + cosine, bf16 on GPU, exact resume.

``train`` is a pure function of (settings, data, seed) plus whatever resumable state ``out_dir`` already holds:
a run killed at any moment and started again ends with the same weights as an uninterrupted one
(``tests/test_pretrain_resume.py``), because model, optimiser, schedule and RNG states are checkpointed
together and the data position is derived from the step (``sampling.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from synthvlp.config import PretrainSection
from synthvlp.errors import UserError
from synthvlp.models import build_clip, load_image_encoder, model_config, save_clip_checkpoint
from synthvlp.pretrain import checkpoint
from synthvlp.pretrain.data import Batch, CsvSource, PairDataset, ShardSource, collate
from synthvlp.pretrain.distributed import World, all_reduce_flag, close_world, gather, gather_lists, init_world
from synthvlp.pretrain.labels import FindingLabels, label_targets
from synthvlp.pretrain.logs import TrainLog
from synthvlp.pretrain.losses import clip_loss, gloria_local_loss
from synthvlp.pretrain.sampling import Recipe, StepPlan
from synthvlp.pretrain.towers import Features, MedVLP
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
    """(model, train transform, tokenizer), the image tower optionally initialised from an encoder checkpoint."""
    clip, train_transform, _, tokenizer = build_clip(settings.model)
    if settings.image_encoder is not None:
        load_image_encoder(settings.image_encoder, clip.visual)
    size = model_config(settings.model)["vision_cfg"].get("image_size", 224)
    size = size if isinstance(size, int) else size[0]
    local_dim = settings.gloria.local_dim if settings.objective == "gloria" else None
    return MedVLP(clip, local_dim, size, tokenizer.context_length), train_transform, tokenizer


OPERATIONAL = ("threads", "workers", "checkpoint_every", "keep_checkpoints", "tensorboard")
"""Settings that do not change the trained weights; changing them keeps a run resumable."""


def state_key(settings: PretrainSection, seed: int, shards: Sequence[Path]) -> str:
    """Fingerprint of everything the weights depend on: settings, seed, model config and training files.

    Resumable states live under ``state/<key>/``, so changed settings start afresh instead of resuming a
    different training run.
    """
    plain = {k: v for k, v in settings.model_dump(mode="json").items() if k not in OPERATIONAL}
    files = [(str(p), p.stat().st_size) for p in map(Path, shards)]
    if settings.real is not None and settings.recipe != "synthetic":
        files.append((str(settings.real.csv), settings.real.csv.stat().st_size if settings.real.csv.exists() else -1))
    return checkpoint.state_key([plain, seed, model_config(settings.model), files])


def planned_samples(settings: PretrainSection, shards: Sequence[Path], seed: int) -> int:
    """Samples the whole run will consume (steps x global batch), for a progress bar sized before training."""
    _, _, _, tokenizer = build_clip(settings.model)
    dataset, recipe = build_dataset(settings, shards, None, tokenizer, seed)
    steps_per_epoch = recipe.epoch_length // settings.batch_size
    return (settings.max_steps or settings.epochs * steps_per_epoch) * settings.batch_size


def _optimizer(model: torch.nn.Module, settings: PretrainSection) -> torch.optim.Optimizer:
    """AdamW; gains, biases and the temperature are not decayed (CLIP's practice)."""
    decay, keep = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (keep if parameter.ndim < 2 or "logit_scale" in name else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": keep, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=settings.lr)


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """LR multiplier: linear warm-up to 1 over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min((step - warmup) / max(1, total - warmup), 1.0)))


def _losses(features: Features, labels: torch.Tensor | None, settings: PretrainSection, world: World) -> tuple[torch.Tensor, torch.Tensor]:
    """(global, local) losses over the whole global micro-batch; local is 0 for the CLIP objective."""
    scale = features.logit_scale.float()
    targets = None
    if labels is not None:
        every = gather(labels.to(features.image.device), world)
        targets = label_targets(every, every, settings.label_temperature)
    global_loss = clip_loss(gather(features.image.float(), world), gather(features.text.float(), world), scale, targets)
    if settings.objective == "clip":
        return global_loss, torch.zeros((), device=global_loss.device)
    g = settings.gloria
    mask = gather(features.word_mask.to(torch.uint8), world).bool()
    local = gloria_local_loss(
        gather(features.regions.float(), world), gather(features.words.float(), world), mask,
        g.attention_temperature, g.word_temperature, g.logit_temperature,
    )
    return global_loss, local


class _Batches:
    """The plan's micro-batches as a re-iterable object, the form ``DataLoader(batch_sampler=...)`` takes."""

    def __init__(self, plan: StepPlan, start: int, stop: int) -> None:
        self.plan, self.start, self.stop = plan, start, stop

    def __iter__(self):
        return self.plan.micro_batches(self.start, self.stop)

    def __len__(self) -> int:
        return (self.stop - self.start) * self.plan.accumulate


def train(
    settings: PretrainSection,
    shards: Sequence[Path],
    out_dir: Path,
    seed: int,
    advance: Callable[[int], None] = lambda n: None,
    say: Callable[[str], None] = print,
) -> TrainResult:
    """Train (or resume training) ``settings.model`` and write ``checkpoint.pt`` and ``log.csv`` to ``out_dir``.

    ``advance(n)`` is called on the main process after each optimiser step with the samples it consumed (and
    once at the start of a resumed run with the samples already done), so a progress bar sized by
    ``planned_samples`` ends full.
    """
    world = init_world(settings.threads)
    try:
        return _train(settings, shards, Path(out_dir), seed, advance, say, world)
    finally:
        close_world(world)


def _train(settings, shards, out_dir: Path, seed: int, advance, say, world: World) -> TrainResult:
    if settings.batch_size % (settings.accumulate * world.size):
        raise UserError(f"pretrain.batch_size ({settings.batch_size}) must be a multiple of accumulate x processes ({settings.accumulate} x {world.size})")
    torch.manual_seed(seed)  # identical initial weights on every rank
    model, transform, tokenizer = build_model(settings)
    dataset, recipe = build_dataset(settings, shards, transform, tokenizer, seed)
    plan = StepPlan(recipe, seed, settings.batch_size, settings.accumulate, world.rank, world.size)
    if plan.steps_per_epoch == 0:
        raise UserError(f"pretrain.batch_size ({settings.batch_size}) exceeds the {len(dataset)} training samples; lower it")
    total = settings.max_steps or settings.epochs * plan.steps_per_epoch
    model.to(world.device)
    optimizer = _optimizer(model, settings)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, settings.warmup_steps, total))
    state_dir = out_dir / "state" / state_key(settings, seed, shards)
    if world.main:
        checkpoint.drop_other_states(state_dir)
    start = 0
    found = checkpoint.latest_state(state_dir)
    if found is not None:
        start = checkpoint.restore(found[0], found[1], settings.model, model, optimizer, scheduler)
        if world.main:
            say(f"pretrain: resuming from {found[0]} (step {start} of {total})")
            advance(start * settings.batch_size)
    skipped: list[str] = list(found[1].get("skipped", [])) if found else []  # all ranks' up to the last state, then this rank's
    skipped_before = list(skipped)
    log = TrainLog(out_dir, start, settings.tensorboard and world.main) if world.main else None
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[world.local_rank] if world.device.type == "cuda" else None) if world.size > 1 else model
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=_Batches(plan, start, total), num_workers=settings.workers, collate_fn=collate,
        generator=torch.Generator().manual_seed(seed), pin_memory=world.device.type == "cuda", worker_init_fn=worker_init,
    )
    bf16 = settings.precision == "bf16" or (settings.precision == "auto" and world.device.type == "cuda")
    autocast = torch.autocast(world.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    max_log_scale = math.log(settings.max_logit_scale)
    batches = iter(loader)
    model.train()
    began = time.perf_counter()
    last_loss = float("nan")
    for step in range(start, total):
        tick = time.perf_counter()
        wait = 0.0
        totals = torch.zeros(3)
        for micro in range(settings.accumulate):
            fetched = time.perf_counter()
            batch: Batch = next(batches)
            wait += time.perf_counter() - fetched
            skipped.extend(batch.skipped)
            if batch.skipped and world.main:
                say(f"pretrain: skipped unreadable image(s) {batch.skipped}")
            sync = micro == settings.accumulate - 1 or world.size == 1
            with (nullcontext() if sync else ddp.no_sync()), autocast:
                features = ddp(batch.images.to(world.device, non_blocking=True), batch.tokens.to(world.device, non_blocking=True))
                global_loss, local_loss = _losses(features, batch.labels, settings, world)
            loss = settings.gloria.global_weight * global_loss + settings.gloria.local_weight * local_loss if settings.objective == "gloria" else global_loss
            if all_reduce_flag(not bool(torch.isfinite(loss)), world):
                raise UserError(f"pre-training diverged: loss is {loss.item()} at step {step}; batch keys {batch.keys} (rank {world.rank}); lower pretrain.lr or check those samples")
            (loss * world.size / settings.accumulate).backward()
            totals += torch.tensor([loss.item(), global_loss.item(), local_loss.item()]) / settings.accumulate
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        with torch.no_grad():
            model.clip.logit_scale.clamp_(0, max_log_scale)
        last_loss = float(totals[0])
        if log is not None:
            seconds = time.perf_counter() - tick
            log.add(
                step=step, epoch=step // plan.steps_per_epoch, loss=last_loss, global_loss=float(totals[1]), local_loss=float(totals[2]),
                lr=scheduler.get_last_lr()[0], logit_scale=float(model.clip.logit_scale.detach().exp()), samples_per_s=settings.batch_size / seconds, data_wait_s=wait,
            )
        if (step + 1) % settings.checkpoint_every == 0 or step + 1 == total:
            skipped = skipped_before + gather_lists(skipped[len(skipped_before) :], world)
            skipped_before = list(skipped)
            if world.main:
                checkpoint.save_state(state_dir, step + 1, settings.model, model, optimizer, scheduler, {"skipped": skipped}, settings.keep_checkpoints)
                log.flush()
        if world.main:
            advance(settings.batch_size)
    seconds = time.perf_counter() - began
    if world.main:
        save_clip_checkpoint(out_dir / "checkpoint.pt", settings.model, model.clip, steps=total)
        log.close()
        if skipped:
            say(f"pretrain: {len(skipped)} unreadable image(s) were skipped: {skipped[:10]}")
    done = total - start
    return TrainResult(
        steps=total, samples=total * settings.batch_size, final_loss=last_loss, seconds=seconds,
        samples_per_second=done * settings.batch_size / max(seconds, 1e-9), resumed_from=start, skipped_images=skipped, world_size=world.size,
        training_pairs=dataset.origins(),
    )
