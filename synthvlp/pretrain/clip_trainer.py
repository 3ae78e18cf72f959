"""CLIP/ConVIRT-style contrastive pre-training of an open_clip model on WebDataset shards.

The walking-skeleton trainer: one process, AdamW with warm-up and cosine decay, open_clip's ``ClipLoss``,
shards read with ``webdataset``. Samples are decoded once and kept in memory, which suits the small CPU runs
this trainer is for; the full engine (torchrun, checkpoints with exact resume) replaces it behind
``train_clip``.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from synthvlp.config import PretrainSection
from synthvlp.errors import UserError
from synthvlp.models import build_clip, save_clip_checkpoint
from synthvlp.store import atomic_open


@dataclass
class TrainResult:
    steps: int
    samples: int
    final_loss: float
    seconds: float
    samples_per_second: float


def load_pairs(shards: list[Path], preprocess, tokenizer):
    """Decode (image tensor, token tensor, key) for every sample of ``shards`` through webdataset."""
    import torch
    import webdataset as wds

    urls = [str(p) for p in shards]
    dataset = wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("pil").to_tuple("png", "txt", "__key__")
    images, texts, keys = [], [], []
    for image, text, key in dataset:
        images.append(preprocess(image))
        texts.append(text)
        keys.append(key)
    if not images:
        raise UserError(f"no samples found in {len(urls)} training shard(s): {urls[:3]}")
    return torch.stack(images), tokenizer(texts), keys


def train_clip(
    settings: PretrainSection,
    shards: list[Path],
    out_dir: Path,
    seed: int,
    advance: Callable[[int], None] = lambda n: None,
) -> TrainResult:
    """Train ``settings.model`` from scratch on ``shards``; write ``checkpoint.pt`` and ``log.csv`` to ``out_dir``."""
    import torch
    from open_clip import ClipLoss

    torch.set_num_threads(settings.threads)
    torch.manual_seed(seed)
    model, _, preprocess, tokenizer = build_clip(settings.model)
    images, tokens, _ = load_pairs(shards, preprocess, tokenizer)
    n = images.shape[0]
    batch = min(settings.batch_size, n)
    steps_per_epoch = n // batch
    total = steps_per_epoch * settings.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _warmup_cosine(s, settings.warmup_steps, total))
    loss_fn = ClipLoss()
    generator = torch.Generator().manual_seed(seed)
    log_rows: list[tuple[int, int, float, float]] = []
    model.train()
    start = time.perf_counter()
    step = 0
    for epoch in range(settings.epochs):
        order = torch.randperm(n, generator=generator)
        for begin in range(0, steps_per_epoch * batch, batch):
            index = order[begin : begin + batch]
            image_features, text_features, logit_scale = model(images[index], tokens[index])
            loss = loss_fn(image_features, text_features, logit_scale)
            if not torch.isfinite(loss):
                raise UserError(f"pre-training diverged: loss is {loss.item()} at step {step}; lower pretrain.lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            log_rows.append((step, epoch, loss.item(), schedule.get_last_lr()[0]))
            step += 1
            advance(batch)
    seconds = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_open(out_dir / "log.csv", "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "epoch", "loss", "lr"])
        writer.writerows((s, e, f"{loss:.6f}", f"{lr:.6g}") for s, e, loss, lr in log_rows)
    save_clip_checkpoint(out_dir / "checkpoint.pt", settings.model, model, steps=step)
    final = log_rows[-1][2] if log_rows else float("nan")
    return TrainResult(steps=step, samples=step * batch, final_loss=final, seconds=seconds, samples_per_second=step * batch / max(seconds, 1e-9))


def _warmup_cosine(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

