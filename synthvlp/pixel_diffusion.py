"""A text-to-image diffusion pipeline in pixel space (grayscale films, no VAE), and the parts it is built from.

Stable Diffusion denoises in a VAE's latent space; a renderer trained from scratch on a few hundred films at
64-256 px does not need one, and training a VAE first would double the work. ``PixelDiffusionPipeline`` is a
``DiffusionPipeline`` (``save_pretrained``/``from_pretrained``, model_index.json, one folder per part) whose UNet
denoises the film itself, so ``images.backend: diffusers`` loads it like a RoentGen folder. It lives in the core
because two stages use it: ``synthvlp render train`` builds and trains it, the images stage renders with it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from diffusers import DDIMScheduler, DiffusionPipeline, ImagePipelineOutput, UNet2DConditionModel
from diffusers.utils.torch_utils import randn_tensor

from synthvlp.config import RenderModelSection

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
WORD = re.compile(r"\w+|[^\w\s]")
"""What the built tokenizer treats as one token: a word or one punctuation mark (its pre-tokenizer's rule)."""


def encode_prompts(text_encoder, tokenizer, prompts: Sequence[str], device: torch.device) -> torch.Tensor:
    """The text encoder's last hidden states for ``prompts``, padded to the tokenizer's max length (SD's habit,
    so training and rendering see the same sequence length)."""
    tokens = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt")
    return text_encoder(tokens.input_ids.to(device))[0]


class PixelDiffusionPipeline(DiffusionPipeline):
    """UNet + scheduler + text encoder + tokenizer; renders ``(n, size, size, 1)`` films in [0, 1].

    ``caption_text`` and ``caption_plan`` record what the prompts were built from in training (``data.text``,
    ``data.plan``; ``synthvlp.captions``); they are saved in ``model_index.json`` so the images stage builds its
    prompts the same way. Folders written before they existed load with the defaults, which they were trained with.
    """

    model_cpu_offload_seq = "text_encoder->unet"

    def __init__(self, unet: UNet2DConditionModel, scheduler: DDIMScheduler, text_encoder, tokenizer,
                 caption_text: str = "impression", caption_plan: bool = False) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer)
        self.register_to_config(caption_text=caption_text, caption_plan=caption_plan)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 2.0,
        height: int | None = None,
        width: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "np",
        image: np.ndarray | torch.Tensor | None = None,
        strength: float = 1.0,
    ) -> ImagePipelineOutput:
        """Text-to-image films, or with ``image`` ((n, height, width) films in [0, 1]) image-to-image as diffusers'
        img2img pipelines do it (SDEdit): each film is noised to the level ``strength`` of the schedule names and
        denoised from there, so 0 returns it unchanged and 1 all but ignores it
        (the schedule's first step keeps a trace, as in diffusers). A rendered film keeps its layout while the
        denoiser, trained on real films, gives it their texture; findings it has not learned may be painted over
        (bench/refine_realism.py)."""
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength {strength} is outside [0, 1]")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        n = len(prompts)
        negatives = [""] * n if negative_prompt is None else ([negative_prompt] * n if isinstance(negative_prompt, str) else list(negative_prompt))
        size = self.unet.config.sample_size
        height, width = height or size, width or size
        device, dtype = self._execution_device, self.unet.dtype
        guided = guidance_scale > 1.0
        context = encode_prompts(self.text_encoder, self.tokenizer, negatives + prompts if guided else prompts, device).to(dtype)
        noise = randn_tensor((n, self.unet.config.in_channels, height, width), generator=generator, device=device, dtype=dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        if image is None:
            films = noise * self.scheduler.init_noise_sigma
        else:
            clean = torch.as_tensor(np.asarray(image), dtype=dtype, device=device).reshape(noise.shape) * 2 - 1
            timesteps = timesteps[num_inference_steps - min(round(num_inference_steps * strength), num_inference_steps):]
            films = self.scheduler.add_noise(clean, noise, timesteps[:1].repeat(n)) if len(timesteps) else clean
        for t in self.progress_bar(timesteps):
            model_input = torch.cat([films, films]) if guided else films
            output = self.unet(self.scheduler.scale_model_input(model_input, t), t, encoder_hidden_states=context).sample
            if guided:
                unconditional, conditional = output.chunk(2)
                output = unconditional + guidance_scale * (conditional - unconditional)
            films = self.scheduler.step(output, t, films, generator=generator).prev_sample
        images = ((films.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
        if output_type == "pil":
            return ImagePipelineOutput(images=self.numpy_to_pil(images))
        return ImagePipelineOutput(images=images)


def build_unet(settings: RenderModelSection, text_width: int, in_channels: int = 1, sample_size: int | None = None) -> UNet2DConditionModel:
    """The UNet the settings describe, cross-attention where asked: in pixel space by default (one channel in and
    out, ``settings.size``), or over a VAE's latents (``in_channels`` latent channels at ``sample_size``)."""
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in settings.attention)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(settings.attention))
    return UNet2DConditionModel(
        sample_size=sample_size or settings.size, in_channels=in_channels, out_channels=in_channels, block_out_channels=tuple(settings.channels),
        down_block_types=down, up_block_types=up, layers_per_block=settings.layers_per_block,
        cross_attention_dim=text_width, norm_num_groups=settings.groups,
        attention_head_dim=tuple(c // settings.head_dim for c in settings.channels),  # diffusers reads it as heads per level
    )  # fmt: skip


def build_tokenizer(captions: Sequence[str], settings: RenderModelSection):
    """A word-level tokenizer over the captions' words (lower-cased; rarer than ``vocab_min_count`` -> [UNK]).

    Reports use a few hundred distinct words, so whole-word tokens keep a caption short (a byte-level tokenizer
    without merges spends a token per character) and need no pretrained vocabulary files.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    counts = Counter(word for caption in captions for word in WORD.findall(caption.lower()))
    words = sorted(w for w, c in counts.items() if c >= settings.vocab_min_count)
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *words])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="[BOS] $A [EOS]", special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, model_max_length=settings.max_tokens, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]",
    )  # fmt: skip


def build_text_encoder(tokenizer, settings: RenderModelSection):
    """A small CLIP text transformer sized by the settings, over ``tokenizer``'s vocabulary."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=settings.text_width, intermediate_size=4 * settings.text_width,
            num_hidden_layers=settings.text_layers, num_attention_heads=settings.text_heads, max_position_embeddings=settings.max_tokens,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        )
    )  # fmt: skip

