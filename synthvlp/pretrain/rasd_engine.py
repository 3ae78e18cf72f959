"""``synthvlp pretrain rasd``: RaSD pre-training with the engine's habits (torchrun DDP, warm-up + cosine,
atomic checkpoints, exact resume, CSV and TensorBoard logs).

Batches are synthesised on each process's device by its own ``BufferedSynthesizer`` (seeded ``stream.seed +
rank``), so nothing is read from disk. Exact resume needs the synthesiser's state as well as the model's: each
state file holds every rank's generator states and buffer, and a resumed run continues each rank's stream where
it stopped, ending with the weights an uninterrupted run would have (``tests/test_rasd_engine.py``). With ``backbone.name: clip`` the trained image tower is also written as
``encoder.pt`` (``synthvlp.models.save_image_encoder``), ready for ``pretrain.image_encoder``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from synthvlp.checkpoints import BackboneCheckpoint, load, save
from synthvlp.errors import UserError
from synthvlp.models import save_image_encoder
from synthvlp.pretrain import checkpoint
from synthvlp.pretrain.distributed import World, all_reduce_flag, close_world, init_world
from synthvlp.pretrain.engine import warmup_cosine
from synthvlp.pretrain.logs import TrainLog
from synthvlp.rasd import BufferedSynthesizer, PrototypeDisentangleLoss, RaSDConfig, build_backbone

LOG_COLUMNS = ("step", "loss", "pull", "push", "lr", "samples_per_s")
OPERATIONAL = ("out_dir", "threads", "checkpoint_every", "keep_checkpoints", "tensorboard")


@dataclass
class RaSDResult:
    steps: int
    final_loss: float
    seconds: float
    samples_per_second: float
    resumed_from: int
    world_size: int
    backbone: Path


def state_key(config: RaSDConfig) -> str:
    """Fingerprint of everything the weights depend on; other settings keep a run resumable."""
    plain = config.model_dump(mode="json")
    plain["train"] = {k: v for k, v in plain["train"].items() if k not in OPERATIONAL}
    return checkpoint.state_key(plain)


def _all_synthesizer_states(batches: BufferedSynthesizer, world: World) -> list[dict]:
    """Every rank's synthesiser state, in rank order (a collective under torchrun)."""
    mine = batches.state_dict()
    if world.size == 1:
        return [mine]
    states: list[dict] = [{} for _ in range(world.size)]
    dist.all_gather_object(states, mine)
    return states


def train_rasd(config: RaSDConfig, advance: Callable[[int], None] = lambda n: None, say: Callable[[str], None] = print) -> RaSDResult:
    """Train (or resume) ``config.backbone`` on RaSD batches; writes ``backbone.pt`` and ``log.csv`` to
    ``config.train.out_dir``. ``advance(n)`` gets the samples each step consumed, on the main process."""
    world = init_world(config.train.threads)
    try:
        return _train(config, Path(config.train.out_dir), advance, say, world)
    finally:
        close_world(world)


def _train(config: RaSDConfig, out_dir: Path, advance, say, world: World) -> RaSDResult:
    settings = config.train
    spatial_dims = len(config.stream.spatial_size)
    torch.manual_seed(settings.seed)  # identical initial weights on every rank
    net = build_backbone(config.backbone, spatial_dims=spatial_dims).to(world.device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, settings.warmup_steps, settings.steps))
    rank_config = config.model_copy(update={"stream": config.stream.model_copy(update={"seed": config.stream.seed + world.rank})})
    batches = BufferedSynthesizer.from_config(rank_config, world.device)
    loss_fn = PrototypeDisentangleLoss(config.loss, num_labels=config.fields.num_labels)
    state_dir = out_dir / "state" / state_key(config)
    if world.main:
        checkpoint.drop_other_states(state_dir)
    name = f"rasd:{config.backbone.name}"
    start = 0
    found = checkpoint.latest_state(state_dir)
    if found is not None:
        start = checkpoint.restore(found[0], found[1], name, net, optimizer, scheduler)
        synthesizers = found[1]["synthesizers"]
        if len(synthesizers) != world.size:
            raise UserError(f"{found[0]}: written by {len(synthesizers)} process(es), resumed with {world.size}; resume with the same process count")
        batches.load_state_dict(synthesizers[world.rank])
        if world.main:
            say(f"pretrain rasd: resuming from {found[0]} (step {start} of {settings.steps})")
            advance(start * config.stream.batch_size * world.size)
    log = TrainLog(out_dir, start, settings.tensorboard and world.main, LOG_COLUMNS) if world.main else None
    model = torch.nn.parallel.DistributedDataParallel(net, device_ids=[world.local_rank] if world.device.type == "cuda" else None) if world.size > 1 else net
    net.train()
    began, last = time.perf_counter(), float("nan")
    for step in range(start, settings.steps):
        tick = time.perf_counter()
        images, labels = next(batches)
        out = loss_fn(model(images), labels)
        if all_reduce_flag(not bool(torch.isfinite(out.total.detach())), world):
            raise UserError(f"RaSD pre-training diverged: loss is {out.total.item()} at step {step} (rank {world.rank}); lower train.lr")
        optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        optimizer.step()
        scheduler.step()
        last = out.total.item()
        if log is not None:
            log.add(step=step, loss=last, pull=out.pull.item(), push=out.push.item(), lr=scheduler.get_last_lr()[0],
                    samples_per_s=config.stream.batch_size * world.size / (time.perf_counter() - tick))
        if (step + 1) % settings.checkpoint_every == 0 or step + 1 == settings.steps:
            synthesizers = _all_synthesizer_states(batches, world)
            if world.main:
                checkpoint.save_state(state_dir, step + 1, name, net, optimizer, scheduler, {"synthesizers": synthesizers}, settings.keep_checkpoints)
                log.flush()
        if world.main:
            advance(config.stream.batch_size * world.size)
    seconds = time.perf_counter() - began
    backbone = out_dir / "backbone.pt"
    if world.main:
        save_backbone(backbone, config, net, settings.steps)
        if config.backbone.name == "clip":  # the tower alone, in the form pretrain.image_encoder loads
            save_image_encoder(out_dir / "encoder.pt", config.backbone.clip_model, net.visual, source=f"rasd ({settings.steps} steps)")
            say(f"pretrain rasd: image tower for pretrain.image_encoder -> {out_dir / 'encoder.pt'}")
        log.close()
    done = settings.steps - start
    return RaSDResult(settings.steps, last, seconds, done * config.stream.batch_size * world.size / max(seconds, 1e-9), start, world.size, backbone)


def save_backbone(path: Path, config: RaSDConfig, net: torch.nn.Module, steps: int) -> None:
    """The trained dense network with the config that builds it (``load_backbone`` reads it back)."""
    save(path, BackboneCheckpoint, {"config": config.model_dump(mode="json"), "state_dict": net.state_dict(), "steps": steps})


def load_backbone(path: Path) -> tuple[torch.nn.Module, RaSDConfig]:
    """(backbone with its trained weights, the RaSD config it was trained with) from ``save_backbone``'s file."""
    from synthvlp.models import load_weights

    payload = load(path, BackboneCheckpoint).payload
    try:
        config = RaSDConfig.model_validate(payload["config"])
    except ValueError as exc:
        raise UserError(f"{path}: RaSD backbone with an invalid config entry: {str(exc).splitlines()[0]}") from None
    net = build_backbone(config.backbone, spatial_dims=len(config.stream.spatial_size))
    load_weights(net, payload["state_dict"], path, f"RaSD {config.backbone.name} backbone")
    return net, config
