"""``synthvlp pretrain rasd``: RaSD pre-training as an objective of the training skeleton (``trainer.fit``:
torchrun DDP, warm-up + cosine, atomic checkpoints, exact resume, CSV and TensorBoard logs).

Batches are synthesised on each process's device by its own ``BufferedSynthesizer`` (seeded ``stream.seed +
rank``), so nothing is read from disk. Exact resume needs the synthesiser's state as well as the model's: each
state file holds every rank's generator states and buffer, and a resumed run continues each rank's stream where
it stopped, ending with the weights an uninterrupted run would have (``tests/pretrain/test_rasd_engine.py``). With ``backbone.name: clip`` the trained image tower is also written as
``encoder.pt`` (``synthvlp.models.save_image_encoder``), ready for ``pretrain.image_encoder``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from synthvlp.checkpoints import BackboneCheckpoint, load, save
from synthvlp.config import without_operational
from synthvlp.errors import UserError
from synthvlp.models import save_image_encoder
from synthvlp.pretrain import checkpoint
from synthvlp.pretrain.distributed import World
from synthvlp.pretrain.trainer import Built, Fitted, Loop, Objective, fit
from synthvlp.rasd import BufferedSynthesizer, PrototypeDisentangleLoss, RaSDConfig, build_backbone

LOG_COLUMNS = ("step", "loss", "pull", "push", "lr", "samples_per_s")


@dataclass
class RaSDResult(Fitted):
    backbone: Path


def state_key(config: RaSDConfig) -> str:
    """Fingerprint of everything the weights depend on; operational settings keep a run resumable."""
    return checkpoint.state_key(without_operational(config))


def _all_synthesizer_states(batches: BufferedSynthesizer, world: World) -> list[dict]:
    """Every rank's synthesiser state, in rank order (a collective under torchrun)."""
    mine = batches.state_dict()
    if world.size == 1:
        return [mine]
    states: list[dict] = [{} for _ in range(world.size)]
    dist.all_gather_object(states, mine)
    return states


class RaSDObjective(Objective):
    """RaSD's prototype pull/push loss on a dense backbone, fed by this process's own synthesiser."""

    label = "pretrain rasd"
    columns = LOG_COLUMNS

    def __init__(self, config: RaSDConfig, say: Callable[[str], None] = print) -> None:
        self.config, self.say = config, say
        train = config.train
        self.loop = Loop(Path(train.out_dir), train.seed, train.warmup_steps, train.checkpoint_every, train.keep_checkpoints, train.tensorboard, train.threads)

    def state_key(self) -> str:
        return state_key(self.config)

    def build(self, world: World) -> Built:
        config, self.world = self.config, world
        self.net = build_backbone(config.backbone, spatial_dims=len(config.stream.spatial_size))
        rank_config = config.model_copy(update={"stream": config.stream.model_copy(update={"seed": config.stream.seed + world.rank})})
        self.stream = BufferedSynthesizer.from_config(rank_config, world.device)
        self.loss_fn = PrototypeDisentangleLoss(config.loss, num_labels=config.fields.num_labels)
        return Built(self.net, f"rasd:{config.backbone.name}", config.train.steps, config.stream.batch_size * world.size)

    def optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(model.parameters(), lr=self.config.train.lr, weight_decay=self.config.train.weight_decay)

    def batches(self, start: int, stop: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.stream

    def loss(self, model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images, labels = batch
        out = self.loss_fn(model(images), labels)
        return out.total, {"pull": out.pull, "push": out.push}

    def diverged(self, loss: float, step: int, batch: tuple[torch.Tensor, torch.Tensor]) -> str:
        return f"RaSD pre-training diverged: loss is {loss} at step {step} (rank {self.world.rank}); lower train.lr"

    def restore(self, path: Path, state: dict) -> None:
        synthesizers = state["synthesizers"]
        if len(synthesizers) != self.world.size:
            raise UserError(f"{path}: written by {len(synthesizers)} process(es), resumed with {self.world.size}; resume with the same process count")
        self.stream.load_state_dict(synthesizers[self.world.rank])

    def extra_state(self) -> dict:
        return {"synthesizers": _all_synthesizer_states(self.stream, self.world)}

    def save(self, steps: int) -> None:
        out_dir = self.loop.out_dir
        save_backbone(out_dir / "backbone.pt", self.config, self.net, steps)
        if self.config.backbone.name == "clip":  # the tower alone, in the form pretrain.image_encoder loads
            save_image_encoder(out_dir / "encoder.pt", self.config.backbone.clip_model, self.net.visual, source=f"rasd ({steps} steps)")
            self.say(f"pretrain rasd: image tower for pretrain.image_encoder -> {out_dir / 'encoder.pt'}")


def train_rasd(config: RaSDConfig, advance: Callable[[int], None] = lambda n: None, say: Callable[[str], None] = print) -> RaSDResult:
    """Train (or resume) ``config.backbone`` on RaSD batches; writes ``backbone.pt`` and ``log.csv`` to
    ``config.train.out_dir``. ``advance(n)`` gets the samples each step consumed, on the main process."""
    done = fit(RaSDObjective(config, say), advance, say)
    backbone = Path(config.train.out_dir) / "backbone.pt"
    return RaSDResult(**vars(done), backbone=backbone)


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
