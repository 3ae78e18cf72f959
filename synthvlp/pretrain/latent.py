"""What ``synthvlp render train`` starts from on disk: a Stable Diffusion folder to fine-tune (``model.init_from``,
RoentGen's recipe) and a frozen VAE whose latent space the UNet denoises (``model.vae``).

Stable Diffusion denoises a VAE's latents (4 channels, 8x smaller than the image), scaled by
``vae.config.scaling_factor`` to about unit variance; RoentGen fine-tuned SD's UNet and text encoder on MIMIC-CXR
films encoded that way and kept the VAE. A run built from scratch can use a VAE too, but only a pretrained local
one: a VAE trained from nothing needs its own run (reconstruction, perceptual and adversarial losses) before a UNet
can learn its latents, and Stable Diffusion's reconstructs grayscale films (fed as three equal channels) well
enough that RoentGen left it frozen. Every missing part is a ``UserError`` naming the setting and the folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from synthvlp.errors import UserError

INIT_FROM, VAE = "model.init_from", "model.vae"


def _index(folder: Path) -> dict:
    """``folder``'s model_index.json, or a named error saying what ``model.init_from`` wants."""
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise UserError(f"{INIT_FROM} = {folder}: no model_index.json; point it at a Stable Diffusion folder saved with save_pretrained "
                        "(model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)")
    try:
        return json.loads(index_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{index_file}: not valid JSON ({exc})") from None


def _part(folder: Path, part: str, config: str, purpose: str) -> Path:
    """``folder/part`` if it is listed in model_index.json and holds ``config``, else a named error."""
    if part not in _index(folder) or not (folder / part / config).is_file():
        raise UserError(f"{INIT_FROM} = {folder}: no {part}/ (with {config}, listed in model_index.json); {purpose}")
    return folder / part


def _load(kind, folder: Path, part: str, config: str, purpose: str):
    """``kind.from_pretrained`` of ``folder/part``, or a named error."""
    path = _part(folder, part, config, purpose)
    try:
        return kind.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"{INIT_FROM} = {folder}: cannot load {part}/: {exc}") from None


def load_unet(folder: Path):
    """The UNet of a Stable Diffusion (or pixel-space synthvlp) pipeline folder."""
    from diffusers import UNet2DConditionModel

    return _load(UNet2DConditionModel, folder, "unet", "config.json", "fine-tuning trains the folder's UNet2DConditionModel")


def load_noise(folder: Path):
    """The folder's noise schedule (its scheduler/ config, read as DDPM's): what its UNet was trained with."""
    from diffusers import DDPMScheduler

    return _load(DDPMScheduler, folder, "scheduler", "scheduler_config.json", "its noise schedule is the one the UNet was trained with")


def text_folders(folder: Path) -> tuple[Path, Path]:
    """(text_encoder/, tokenizer/) of a pipeline folder."""
    hint = "fine-tuning keeps the text encoder the UNet was trained with"
    return _part(folder, "text_encoder", "config.json", hint), _part(folder, "tokenizer", "tokenizer_config.json", hint)


def has_vae(folder: Path) -> bool:
    """Whether a pipeline folder lists a VAE (a latent-space pipeline) in its model_index.json."""
    spec = _index(folder).get("vae")
    return isinstance(spec, list) and spec[0] is not None


def vae_folder(path: Path) -> Path:
    """The folder holding a VAE's config.json: a pipeline folder's vae/, else ``path`` itself."""
    return path / "vae" if (path / "vae" / "config.json").is_file() else path


def load_vae(path: Path, where: str):
    """A frozen ``AutoencoderKL`` from its own folder (config.json) or a pipeline folder's vae/."""
    from diffusers import AutoencoderKL

    folder = vae_folder(path)
    if not (folder / "config.json").is_file():
        raise UserError(f"{where} = {path}: no vae/config.json (nor config.json); latent training needs the VAE its latents come from: "
                        f"set {VAE} to a local AutoencoderKL folder (or a Stable Diffusion folder with vae/)")
    try:
        vae = AutoencoderKL.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"{where} = {path}: cannot load an AutoencoderKL from {folder}: {exc}") from None
    return vae.requires_grad_(False).eval()


class LatentCodec:
    """Films to the scaled latents a latent UNet denoises, through a frozen VAE."""

    def __init__(self, vae) -> None:
        self.vae = vae
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)  # the downsampling StableDiffusionPipeline assumes
        self.channels = vae.config.latent_channels

    def shape(self, size: int, where: str) -> tuple[int, int, int]:
        """(channels, side, side) of a ``size`` film's latent, or a named error when the VAE cannot downsample it."""
        if size % self.factor:
            raise UserError(f"model.size {size} is not divisible by {self.factor}, the VAE's downsampling ({where})")
        return self.channels, size // self.factor, size // self.factor

    @torch.no_grad()
    def encode(self, films: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """A draw from the VAE's posterior of ``films`` ((n, 1, s, s) in [-1, 1], repeated to its input channels),
        ``mean + std * eps`` with the caller's ``eps`` (so the draw is seeded like the noise), times scaling_factor."""
        posterior = self.vae.encode(films.expand(-1, self.vae.config.in_channels, -1, -1)).latent_dist
        return (posterior.mean + posterior.std * eps.to(posterior.mean.dtype)) * self.vae.config.scaling_factor
