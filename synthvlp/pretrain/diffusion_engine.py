"""``synthvlp render train``: a text-to-image diffusion renderer trained on real image-report pairs (RoentGen's
recipe), written as a pipeline folder ``images.backend: diffusers`` renders from.

The UNet is built from the settings and denoises the films themselves (pixel space, ``PixelDiffusionPipeline``) or
the latents of a frozen local VAE (``model.vae``), or it is a local Stable Diffusion folder's UNet fine-tuned on its
VAE's latents (``model.init_from``, RoentGen's own recipe); a latent run exports a ``StableDiffusionPipeline``
folder (``synthvlp.pretrain.latent`` loads and checks those parts).

It is an objective of the training skeleton (``trainer.fit``, as the CLIP, GLoRIA and RaSD trainers are): the data order of step ``s`` is a pure function of (seed, s)
(``sampling.StepPlan``), noise, timesteps and caption dropout of step ``s`` come from a generator seeded by
(seed, s), and the weights, optimiser, LR schedule, EMA weights and RNG states are checkpointed together
(``checkpoint.py``), so a run killed and started again ends with the weights an uninterrupted one has
(``tests/pretrain/test_render_train.py``). Under torchrun each rank takes a contiguous slice of every global batch and of
its noise, timesteps and caption dropout (drawn for the whole batch, then sliced), DDP averages the gradients, and
rank 0 alone writes: N processes train the model one process trains on the same global batch, up to the order of
float sums (``tests/pretrain/test_render_ddp.py``). Each checkpoint also exports ``pipeline/`` (EMA weights) and draws
``samples/step-N.png``, so a stopped run leaves a renderer to look at. The pipeline folder holds
``training-films.npz``, the training films at the model's size, which the memorisation guard compares every
rendered film with (``filter.train_films``).
"""

from __future__ import annotations

import glob
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from synthvlp.captions import caption, conditioning
from synthvlp.config import RealDataSection, RenderDataSection, RenderModelSection, RenderTrainConfig
from synthvlp.csvfiles import read_csv_table
from synthvlp.errors import UserError
from synthvlp.pretrain import checkpoint, latent
from synthvlp.pretrain.data import CsvSource, PairDataset, ShardSource, collate
from synthvlp.pretrain.distributed import World
from synthvlp.pretrain.trainer import Built, Fitted, Loop, Objective, fit, restore_only
from synthvlp.pretrain.sampling import Recipe, StepPlan
from synthvlp.seeding import sample_seed
from synthvlp.store import atomic_open

MODEL_NAME, LATENT_MODEL_NAME = "pixel-diffusion", "latent-diffusion"
LOG_COLUMNS = ("step", "loss", "lr", "samples_per_s")
OPERATIONAL = ("out_dir", "threads", "checkpoint_every", "keep_checkpoints", "sample_prompts", "sample_steps", "sample_guidance")
"""Training settings that do not change the weights; changing them keeps a run resumable."""
LATER = (("data", "plan", False), ("model", "init_from", None), ("model", "vae", None))
"""(section, setting, default) of weight-changing settings added after the first release."""
TRAINING_FILMS = "training-films.npz"
Inputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, list[str]]
"""One rank's (films, caption tokens, noise, timesteps, latent draw, keys) of one step."""


@dataclass
class RenderResult(Fitted):
    training_pairs: int
    pipeline: Path


def _shard_paths(patterns: list[str]) -> list[Path]:
    paths: list[Path] = []
    for pattern in patterns:
        found = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else ([pattern] if Path(pattern).exists() else [])
        if not found:
            raise UserError(f"data.shards: {pattern!r} matches no file; point it at a run's dataset/train-*.tar")
        paths.extend(Path(p) for p in found)
    return paths


def _check_csv(settings: RealDataSection) -> None:
    """Every row names an image that exists and a non-empty report, or a ``UserError`` naming the row."""
    table = read_csv_table(settings.csv, "data.real.csv", required=(settings.image_column, settings.text_column))
    root = settings.image_root or settings.csv.parent
    for row, (image, text) in enumerate(zip(table[settings.image_column], table[settings.text_column], strict=True), start=2):
        if not isinstance(image, str) or not image.strip():
            raise UserError(f"{settings.csv} line {row}: no image path in column {settings.image_column!r}")
        if not (root / image).is_file():
            raise UserError(f"{settings.csv} line {row}: image {root / image} does not exist (column {settings.image_column!r}, relative to {root})")
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"{settings.csv} line {row}: empty report in column {settings.text_column!r}; every training film needs its text")


class CaptionedSource:
    """A source whose text is each pair's caption (``synthvlp.captions.conditioning``), computed and checked
    once, so the dataset tokenizes exactly that (plan included)."""

    def __init__(self, source: ShardSource | CsvSource, captions: list[str]) -> None:
        self.source, self.captions, self.keys = source, captions, source.keys

    def __len__(self) -> int:
        return len(self.source)

    def origins(self) -> dict[str, int]:
        return self.source.origins()

    def load(self, index: int) -> tuple[Image.Image, str]:
        image, _ = self.source.load(index)
        return image, self.captions[index]


def _shard_plan(shards: ShardSource, index: int) -> list[dict]:
    """The entity plan in a shard sample's ``<key>.json`` (what a synthvlp run exports), or a named error."""
    key, member = shards.keys[index], shards.metas[index]
    hint = "data.plan needs shards a synthvlp run exported (each sample's <key>.json holds its plan); or set data.plan: false"
    if member is None:
        raise UserError(f"{shards.texts[index].path}: sample {key} has no {key}.json; {hint}")
    try:
        entities = json.loads(member.read()).get("entities")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise UserError(f"{member.path}: {key}.json is not a JSON object ({exc}); {hint}") from None
    if not isinstance(entities, list) or not all(isinstance(e, dict) and {"name", "category", "assertion"} <= set(e) for e in entities):
        raise UserError(f"{member.path}: {key}.json has no 'entities' list of {{name, category, assertion, laterality}}; {hint}")
    return entities


def _shard_pairs(data: RenderDataSection) -> CaptionedSource:
    shards = ShardSource(_shard_paths(data.shards))
    captions = []
    for i, key in enumerate(shards.keys):
        text = shards.texts[i].read().decode("utf-8", errors="replace")
        if not caption(text, data.text):
            raise UserError(f"{shards.texts[i].path}: sample {key} has an empty {'IMPRESSION' if data.text == 'impression' else 'report'}; "
                            "every training film needs its text (data.text: report conditions on the whole report)")
        captions.append(conditioning(text, data.text, _shard_plan(shards, i) if data.plan else None))
    return CaptionedSource(shards, captions)


def _csv_pairs(data: RenderDataSection, seed: int) -> CaptionedSource:
    """A CSV's pairs; their plan (``data.plan``) is what the entity extractor reads in each report."""
    _check_csv(data.real)
    real = CsvSource(data.real, seed)
    for text, path in zip(real.texts, real.paths, strict=True):
        if not caption(text, data.text):
            raise UserError(f"{data.real.csv}: the report of {path} has an empty IMPRESSION; set data.text: report to use the whole report")
    plans: list[list[dict] | None] = [None] * len(real)
    if data.plan:
        from synthvlp.entities.extractor import EntityExtractor

        mentions = EntityExtractor().extract(real.texts)
        plans = [[{"name": m.canonical, "category": m.category, "assertion": m.assertion, "laterality": m.laterality} for m in found] for found in mentions]
    return CaptionedSource(real, [conditioning(t, data.text, plan) for t, plan in zip(real.texts, plans, strict=True)])


def training_pairs(data: RenderDataSection, seed: int) -> tuple[list[CaptionedSource], list[str], list[str]]:
    """(sources in PairDataset order, each pair's key, each pair's caption), every caption checked non-empty."""
    sources = ([_shard_pairs(data)] if data.shards else []) + ([_csv_pairs(data, seed)] if data.real is not None else [])
    return sources, [k for s in sources for k in s.keys], [c for s in sources for c in s.captions]


class FilmTransform:
    """A training film as (1, size, size) in [-1, 1]: grayscale, area-resized; no flips (laterality is content)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: Image.Image) -> torch.Tensor:
        film = image.convert("L")
        if film.size != (self.size, self.size):
            film = film.resize((self.size, self.size), Image.Resampling.BOX if film.width > self.size else Image.Resampling.BICUBIC)
        return torch.from_numpy(np.asarray(film, dtype=np.float32) / 127.5 - 1.0)[None]


class CaptionTokens:
    """The tokenizer as PairDataset calls it (a list of one caption), padded to its max length."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, captions: list[str]) -> torch.Tensor:
        return self.tokenizer(captions, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids


def build_text_side(settings: RenderModelSection, captions: list[str]):
    """(tokenizer, text encoder): built over the captions' words, converted from a synthvlp CLIP checkpoint's text
    tower (a file; ``synthvlp.clip_text``), loaded from a local HF folder, or the ``init_from`` folder's."""
    from synthvlp.pixel_diffusion import build_text_encoder, build_tokenizer

    if settings.init_from is not None:
        model_dir, tokenizer_dir = latent.text_folders(settings.init_from)
        return _load_text(settings.init_from, "model.init_from", tokenizer_dir, model_dir)
    if settings.text_encoder is None:
        tokenizer = build_tokenizer(captions, settings)
        return tokenizer, build_text_encoder(tokenizer, settings)
    if settings.text_encoder.is_file():
        from synthvlp.clip_text import load_clip_text

        return load_clip_text(settings.text_encoder)
    folder = Path(settings.text_encoder)
    model_dir = folder / "text_encoder" if (folder / "text_encoder").is_dir() else folder
    tokenizer_dir = folder / "tokenizer" if (folder / "tokenizer").is_dir() else folder
    if not (model_dir / "config.json").is_file():
        raise UserError(f"model.text_encoder = {folder}: not a CLIP checkpoint file, and no config.json (or text_encoder/config.json); "
                        "point it at a run's pretrain/checkpoint.pt or a local CLIP text model folder")
    return _load_text(folder, "model.text_encoder", tokenizer_dir, model_dir)


def _load_text(folder: Path, where: str, tokenizer_dir: Path, model_dir: Path):
    from transformers import AutoTokenizer, CLIPTextModel

    try:
        return AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True), CLIPTextModel.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"{where} = {folder}: cannot load a CLIP text model and tokenizer: {exc}") from None


def state_key(config: RenderTrainConfig, files: list[Path]) -> str:
    """Fingerprint of everything the weights depend on: settings (not the operational ones) and the training files.
    Settings added later (``LATER``) count only when set, so states written before they existed still resolve."""
    plain = config.model_dump(mode="json")
    plain["train"] = {k: v for k, v in plain["train"].items() if k not in OPERATIONAL}
    for section, name, default in LATER:
        if plain[section][name] == default:
            del plain[section][name]
    return checkpoint.state_key([plain, [(str(p), p.stat().st_size) for p in files]])


def _data_files(config: RenderTrainConfig) -> list[Path]:
    """The files the weights depend on: training data, a CLIP checkpoint whose text tower conditions them, and the
    folders of ``model.init_from`` and ``model.vae``."""
    clip, model, data = config.model.text_encoder, config.model, config.data
    folders = [f for f in (model.init_from, model.vae) if f is not None]
    return (_shard_paths(data.shards) + ([data.real.csv] if data.real is not None else []) + ([clip] if clip is not None and clip.is_file() else [])
            + [p for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()])


def trains_text_encoder(model: RenderModelSection) -> bool:
    """Whether the text encoder trains with the UNet: a built one always, a CLIP checkpoint's tower never, a
    folder's (``text_encoder`` or ``init_from``) unless ``train_text_encoder: false``."""
    clip_tower = model.text_encoder is not None and model.text_encoder.is_file()
    return (model.text_encoder is None and model.init_from is None) or (model.train_text_encoder and not clip_tower)


def load_codec(model: RenderModelSection) -> latent.LatentCodec | None:
    """The VAE a latent run encodes films with: ``model.vae``, else the ``init_from`` folder's; None in pixel space."""
    if model.vae is not None:
        return latent.LatentCodec(latent.load_vae(model.vae, latent.VAE))
    if model.init_from is not None and latent.has_vae(model.init_from):
        return latent.LatentCodec(latent.load_vae(model.init_from, latent.INIT_FROM))
    return None


def build_or_load_unet(model: RenderModelSection, codec: latent.LatentCodec | None, text_width: int):
    """The UNet to train: the ``init_from`` folder's, or one built from the settings over the VAE's latents or the films."""
    from synthvlp.pixel_diffusion import build_unet

    if model.init_from is not None:
        return latent.load_unet(model.init_from)
    if codec is not None:
        channels, side, _ = codec.shape(model.size, latent.VAE)
        return build_unet(model, text_width, channels, side)
    return build_unet(model, text_width)


def _check_unet(unet, codec: latent.LatentCodec | None, text_width: int, model: RenderModelSection) -> tuple[int, int, int]:
    """The (channels, side, side) the UNet denoises, or a named error when it does not fit the VAE, text encoder or size."""
    where = f"model.init_from = {model.init_from}" if model.init_from is not None else "model"
    shape = codec.shape(model.size, where) if codec is not None else (1, model.size, model.size)
    if unet.config.in_channels != shape[0]:
        given = f"the VAE's {shape[0]} latent channels" if codec is not None else "one grayscale channel (it lists no vae)"
        raise UserError(f"{where}: the UNet takes {unet.config.in_channels} input channels but gets {given}; "
                        "a latent UNet needs the VAE its latents come from (model.vae, or the folder's vae/)")
    if unet.config.cross_attention_dim != text_width:
        raise UserError(f"{where}: the UNet attends to {unet.config.cross_attention_dim}-wide text states but the text encoder gives {text_width}")
    levels = 2 ** (len(unet.config.block_out_channels) - 1)
    if shape[1] % levels:
        raise UserError(f"model.size {model.size}: the UNet sees {shape[1]} px {'latents' if codec else 'films'}, not divisible by its downsampling {levels}")
    return shape


class Denoiser(torch.nn.ModuleDict):
    """The trained parts (``unet``, and ``text_encoder`` when it trains) as one module whose forward is the
    denoising prediction, so DDP wraps one call; its state_dict keys are the parts' names."""

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None, tokens: torch.Tensor) -> torch.Tensor:
        if "text_encoder" in self:
            context = self["text_encoder"](tokens)[0]
        return self["unet"](noisy, timesteps, encoder_hidden_states=context).sample


class DiffusionObjective(Objective):
    """The denoising loss of the UNet (and the text encoder when it trains) on the plan's batches, with EMA
    weights kept alongside; each state also exports ``pipeline/`` and the step's sample sheet."""

    label = "render train"
    columns = LOG_COLUMNS

    def __init__(self, config: RenderTrainConfig) -> None:
        self.config, train = config, config.train
        self.out_dir = Path(train.out_dir)
        self.loop = Loop(self.out_dir, train.seed, train.warmup_steps, train.checkpoint_every, train.keep_checkpoints, False, train.threads,
                         precision=train.precision, precision_setting="train.precision", grad_clip=train.grad_clip, mean_over_ranks=True)
        self.films: tuple[list[str], np.ndarray] | None = None
        self.last_loss = float("nan")

    def state_key(self) -> str:
        return state_key(self.config, _data_files(self.config))

    def build(self, world: World) -> Built:
        from diffusers.training_utils import EMAModel

        config, model, train = self.config, self.config.model, self.config.train
        self.world, self.device = world, world.device
        self.sources, self.keys, captions = training_pairs(config.data, train.seed)
        if model.init_from is not None and model.init_from.resolve().is_relative_to(self.out_dir.resolve()):
            raise UserError(f"model.init_from = {model.init_from} is inside train.out_dir, which this run rewrites; copy the folder out or use another out_dir")
        self.tokenizer, self.text_encoder = build_text_side(model, captions)
        width = self.text_encoder.config.hidden_size
        self.codec = load_codec(model)
        self.unet = build_or_load_unet(model, self.codec, width)
        self.sample_shape = _check_unet(self.unet, self.codec, width, model)
        self.train_text = trains_text_encoder(model)
        self.text_encoder.requires_grad_(self.train_text)
        self.trainable = Denoiser({"unet": self.unet, **({"text_encoder": self.text_encoder} if self.train_text else {})}).to(self.device)
        self.text_encoder.to(self.device)
        if self.codec is not None:
            self.codec.vae.to(self.device)
        self.noise = _noise_schedule(model, self.codec)
        self.dataset = PairDataset(self.sources, FilmTransform(model.size), CaptionTokens(self.tokenizer), train.seed)
        batch = min(train.batch_size, len(self.dataset))
        if batch % world.size:
            raise UserError(f"train.batch_size ({batch}) must be a multiple of the {world.size} torchrun processes: each takes an equal slice")
        self.plan = StepPlan(Recipe(tuple(self.dataset.sizes)), train.seed, batch, 1, world.rank, world.size)
        self.empty = CaptionTokens(self.tokenizer)([""])[0]
        self.ema = EMAModel(self.trainable.parameters(), decay=train.ema_decay, use_ema_warmup=True, power=3 / 4)
        return Built(self.trainable, MODEL_NAME if self.codec is None else LATENT_MODEL_NAME, train.steps, self.plan.batch_size)

    def optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(model.parameters(), lr=self.config.train.lr, weight_decay=self.config.train.weight_decay)

    def restore(self, path: Path, state: dict[str, Any]) -> None:
        if "ema" not in state:
            raise UserError(f"{path}: training state without EMA weights; delete {path.parent} to start afresh")
        self.ema.load_state_dict(state["ema"])
        self.ema.to(self.device)

    def extra_state(self) -> dict[str, Any]:
        return {"ema": self.ema.state_dict()}

    def batches(self, start: int, stop: int) -> Iterator[Inputs]:
        return (self._inputs(step) for step in range(start, stop))

    def _inputs(self, step: int) -> Inputs:
        """This rank's (films, caption tokens, noise, timesteps, latent draw, keys) of step ``step``. Noise, timesteps,
        caption dropout and (in latent space) the standard normal draw of each film's VAE posterior sample are drawn
        for the whole global batch from the step's generator and sliced like the films, so every sample gets the
        draw it gets in one process."""
        train = self.config.train
        items = next(self.plan.micro_batches(step, step + 1))
        batch = collate([self.dataset[item] for item in items])
        mine = slice(self.world.rank * len(items), (self.world.rank + 1) * len(items))
        total = self.plan.batch_size
        generator = torch.Generator().manual_seed(sample_seed(train.seed, f"step-{step}", "render-train"))
        noise = torch.randn((total, *self.sample_shape), generator=generator)[mine]
        timesteps = torch.randint(0, self.noise.config.num_train_timesteps, (total,), generator=generator)[mine]
        dropped = (torch.rand(total, generator=generator) < train.caption_dropout)[mine]
        tokens = torch.where(dropped[:, None], self.empty[None], batch.tokens)
        eps = torch.randn((total, *self.sample_shape), generator=generator)[mine].to(self.device) if self.codec is not None else None
        return batch.images.to(self.device), tokens.to(self.device), noise.to(self.device), timesteps.to(self.device), eps, batch.keys

    def loss(self, model: torch.nn.Module, batch: Inputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The mean squared error of the prediction (noise or velocity) on this rank's slice; DDP averages the gradients."""
        films, tokens, noise, timesteps, eps, _ = batch
        context = None
        if not self.train_text:
            with torch.no_grad():
                context = self.text_encoder(tokens)[0]
        clean = films if self.codec is None else self.codec.encode(films, eps).float()
        noisy = self.noise.add_noise(clean, noise, timesteps)
        predicted = model(noisy, timesteps, context, tokens)
        target = noise if self.noise.config.prediction_type == "epsilon" else self.noise.get_velocity(clean, noise, timesteps)
        return torch.nn.functional.mse_loss(predicted.float(), target.float()), {}

    def diverged(self, loss: float, step: int, batch: Inputs) -> str:
        return f"render train diverged: loss is {loss} at step {step} (films {batch[-1][:4]}..., rank {self.world.rank}); lower train.lr"

    def after_step(self) -> None:
        self.ema.step(self.trainable.parameters())

    def logged(self, values: dict[str, float]) -> None:
        self.last_loss = values["loss"]

    def saved(self, step: int) -> None:
        self.export(step)

    def save(self, steps: int) -> None:
        """Export the pipeline of a run that had nothing left to train and none exported."""
        if not (self.out_dir / "pipeline").is_dir():
            self.export(steps)

    def export(self, step: int) -> Path:
        """Write ``pipeline/`` with the EMA weights (replacing the previous export) and the step's sample sheet."""
        parameters = list(self.trainable.parameters())
        self.ema.store(parameters)
        self.ema.copy_to(parameters)
        try:
            pipeline = self._pipeline()
            pipeline.set_progress_bar_config(disable=True)
            final = self.out_dir / "pipeline"
            staging = self.out_dir / "pipeline.partial"
            shutil.rmtree(staging, ignore_errors=True)
            pipeline.save_pretrained(staging)
            keys, films = self._training_films()
            with atomic_open(staging / TRAINING_FILMS, "wb") as handle:
                np.savez_compressed(handle, keys=np.array(keys), films=films)
            previous = self.out_dir / "pipeline.previous"
            shutil.rmtree(previous, ignore_errors=True)
            if final.exists():
                final.rename(previous)
            staging.rename(final)
            shutil.rmtree(previous, ignore_errors=True)
            self._samples(pipeline, step)
        finally:
            self.ema.restore(parameters)
        return final

    def _pipeline(self):
        """The live parts as a pipeline: ``PixelDiffusionPipeline`` in pixel space, ``StableDiffusionPipeline`` (no
        safety checker) over a VAE. Rendering uses DDIM on the training schedule; a fine-tuned folder keeps its
        timestep spacing. The caption recipe goes into model_index.json (a Stable Diffusion folder gets it only
        when it is not the IMPRESSION alone, which is what the images stage prompts any folder with)."""
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        from synthvlp.pixel_diffusion import PixelDiffusionPipeline

        data, parts = self.config.data, {"unet": self.unet, "text_encoder": self.text_encoder, "tokenizer": self.tokenizer}
        if self.codec is None:
            scheduler = DDIMScheduler.from_config(self.noise.config, clip_sample=True, timestep_spacing="trailing")
            return PixelDiffusionPipeline(scheduler=scheduler, caption_text=data.text, caption_plan=data.plan, **parts)
        spacing = {} if self.config.model.init_from is not None else {"timestep_spacing": "trailing", "steps_offset": 1}  # the offset SD asks for; trailing ignores it
        scheduler = DDIMScheduler.from_config(self.noise.config, clip_sample=False, **spacing)
        pipeline = StableDiffusionPipeline(vae=self.codec.vae, scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                           requires_safety_checker=False, **parts)
        if (data.text, data.plan) != ("impression", False):
            pipeline.register_to_config(caption_text=data.text, caption_plan=data.plan)
        return pipeline

    def _training_films(self) -> tuple[list[str], np.ndarray]:
        """Every training film at the model's size (uint8), read once per process, for the memorisation guard."""
        if self.films is None:
            transform = FilmTransform(self.config.model.size)
            films = np.empty((len(self.dataset), self.config.model.size, self.config.model.size), dtype=np.uint8)
            for index in range(len(self.dataset)):
                source, local = self.dataset.locate(index)
                image, _ = source.load(local)
                films[index] = np.round((transform(image)[0].numpy() + 1) * 127.5).astype(np.uint8)
            self.films = (self.keys, films)
        return self.films

    def _samples(self, pipeline, step: int) -> None:
        train = self.config.train
        if not train.sample_prompts:
            return
        self.trainable.eval()
        generators = [torch.Generator("cpu").manual_seed(i) for i in range(len(train.sample_prompts))]
        images = pipeline(train.sample_prompts, num_inference_steps=train.sample_steps, guidance_scale=train.sample_guidance, generator=generators,
                          output_type="np").images
        self.trainable.train()
        row = np.concatenate([np.round(image.mean(axis=-1) * 255).astype(np.uint8) for image in images], axis=1)
        (self.out_dir / "samples").mkdir(parents=True, exist_ok=True)
        with atomic_open(self.out_dir / "samples" / f"step-{step:08d}.png", "wb") as handle:
            Image.fromarray(row).save(handle, format="PNG")


def _noise_schedule(model: RenderModelSection, codec: latent.LatentCodec | None):
    """The training noise schedule: the ``init_from`` folder's, or DDPM over the settings."""
    from diffusers import DDPMScheduler

    if model.init_from is not None:
        return latent.load_noise(model.init_from)
    return DDPMScheduler(num_train_timesteps=model.train_timesteps, beta_schedule=model.beta_schedule, prediction_type=model.prediction,
                         clip_sample=codec is None)  # latents are not confined to [-1, 1]


def train_renderer(
    config: RenderTrainConfig,
    progress: Callable[[int, float], None] = lambda n, loss: None,
    say: Callable[[str], None] = print,
    export_only: bool = False,
) -> RenderResult:
    """Train (or resume) the renderer and export ``pipeline/``, in one process or under torchrun; on rank 0,
    ``progress(samples, loss)`` after each step (and once with the samples already done when resuming).
    ``export_only`` writes the pipeline of the newest state."""
    objective = DiffusionObjective(config)
    if export_only:
        start = restore_only(objective)
        if start == 0:
            raise UserError(f"{objective.out_dir / 'state' / objective.state_key()}: no training state to export; run synthvlp render train first")
        path = objective.export(start) if objective.world.main else objective.out_dir / "pipeline"
        return RenderResult(start, float("nan"), 0.0, 0.0, start, objective.world.size, len(objective.dataset), path)
    fitted = fit(objective, lambda n: progress(n, objective.last_loss), say)
    return RenderResult(**vars(fitted), training_pairs=len(objective.dataset), pipeline=objective.out_dir / "pipeline")
