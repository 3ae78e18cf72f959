"""A tiny randomly initialised Stable Diffusion folder (RoentGen's layout: vae/, unet/, text_encoder/, tokenizer/,
scheduler/), built from configs and saved with save_pretrained, so the diffusers backend and the latent
fine-tuning of ``synthvlp render train`` run a real pipeline on a CPU in seconds."""

from __future__ import annotations

from pathlib import Path

SIZE = 32
"""Image side the folder renders at; its VAE downsamples 2x, so the UNet sees 16 px latents."""
MAX_TOKENS = 32  # the tiny tokenizer has no merges: one token per character


def byte_alphabet() -> list[str]:
    """The 256 printable stand-ins for bytes that byte-level BPE tokenizers (CLIP's included) work on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(extra))]


def build_tiny_sd(folder: Path) -> Path:
    """Save a tiny ``StableDiffusionPipeline`` (no safety checker) to ``folder``; returns ``folder``."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)  # weight init only; rendering uses per-sample generators
    chars = byte_alphabet()
    vocab = {t: i for i, t in enumerate(["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)])}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=MAX_TOKENS)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=MAX_TOKENS, bos_token_id=0, eos_token_id=1, pad_token_id=1,
        )
    )  # fmt: skip
    unet = UNet2DConditionModel(
        sample_size=SIZE // 2, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4,
    )  # fmt: skip
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4,
        sample_size=SIZE,
    )  # fmt: skip
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, steps_offset=1)
    pipeline = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipeline.save_pretrained(folder)
    return folder
