"""What one `synthvlp render train` step costs at a config's size, measured on this machine's CPU, and the GPU
memory and time that follow from it (an estimate: no GPU was measured). Each measurement runs in its own child
process, so its peak resident memory is its own. Run from the repo root:

    .venv/bin/python bench/bench_render_train.py configs/render-nih-256.yaml [--batches 1,2] [--steps 2] [--threads 2]
    .venv/bin/python bench/bench_render_train.py configs/render-nih-64.yaml --compare configs/render-tiny-sd.yaml --rounds 3
    .venv/bin/python bench/bench_render_train.py --sd15-configs runs/sd15-configs
    .venv/bin/python bench/bench_render_train.py configs/render-nih-sd.yaml --meta --sizes 256,512 model.init_from=runs/sd15-configs

Per batch size it trains ``--steps`` steps (after one warm-up step) of the config's trained parts (UNet, and the
text encoder when it trains), on random films (the cost does not depend on the pixels), encoding them with the
config's frozen VAE first in latent space (``model.vae`` or ``model.init_from``, loaded as render train loads them),
and reports seconds per step, the FLOPs of one step (``torch.utils.flop_counter``: forward and backward) and the
process's peak memory. The memory one more film costs is the slope between the two batch sizes; weights,
gradients, AdamW moments and EMA weights are 20 bytes per trained parameter, 4 per frozen one. The GPU figures
scale those: activations by the batch, time by FLOPs over an assumed sustained rate (stated in the output).

``--compare`` times a second config against the first, interleaved round by round (first, second, first, ...;
each in a fresh process), at ``--batches``' first size, with the 1-minute load before and after each.

``--meta`` measures nothing on the CPU: it builds the parts from their configs on PyTorch's meta device (shapes, no
weights, no arithmetic) and counts the FLOPs of one film's step and the bytes of the tensors autograd saves for the
backward pass (activations: each buffer once, however many operations save it or views of it; weights left out),
at each of ``--sizes``. That is how a Stable Diffusion v1.5 fine-tune (860M-parameter UNet) is
sized on a machine that cannot hold it: ``--sd15-configs`` writes that architecture's configs (no weights).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STATE_BYTES = 4 + 4 + 8 + 4
"""fp32 weights, gradients, AdamW's two moments and the EMA copy, per trained parameter."""
CAPTIONS = ["no acute cardiopulmonary process", "cardiomegaly", "pleural effusion"]


def _settings(config_path: str, overrides: list[str], size: int | None = None):
    from synthvlp.config import RenderTrainConfig, load_config

    settings = load_config(Path(config_path), overrides, model=RenderTrainConfig).model
    return settings.model_copy(update={"size": size}) if size else settings


def worker(config_path: str, overrides: list[str], batch: int, steps: int, threads: int, precision: str) -> dict:
    """Train ``steps`` steps at ``batch`` films after a warm-up; seconds per step, FLOPs per step, peak memory."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from synthvlp.pretrain.diffusion_engine import CaptionTokens, Denoiser, build_or_load_unet, build_text_side, load_codec, trains_text_encoder
    from synthvlp.threads import apply

    apply("compute", threads)
    settings = _settings(config_path, overrides)
    torch.manual_seed(0)
    tokenizer, text = build_text_side(settings, CAPTIONS)
    codec = load_codec(settings)
    train_text = trains_text_encoder(settings)
    text.requires_grad_(train_text)
    model = Denoiser({"unet": build_or_load_unet(settings, codec, text.config.hidden_size), **({"text_encoder": text} if train_text else {})})
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    films = torch.randn(batch, 1, settings.size, settings.size)
    eps = torch.randn(batch, *codec.shape(settings.size, "bench")) if codec is not None else None
    tokens = CaptionTokens(tokenizer)(["cardiomegaly"] * batch)
    timesteps = torch.randint(0, 1000, (batch,))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            clean = films if codec is None else codec.encode(films, eps).float()
            context = None
            if not train_text:
                with torch.no_grad():
                    context = text(tokens)[0]
            predicted = model(clean, timesteps, context, tokens)
        torch.nn.functional.mse_loss(predicted.float(), clean).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        step()  # the warm-up step, counted
    began, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    seconds, cpu_seconds = (time.perf_counter() - began) / steps, (time.process_time() - cpu) / steps
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    parameters = sum(p.numel() for p in model.parameters())
    frozen = sum(p.numel() for p in text.parameters()) * (not train_text) + (sum(p.numel() for p in codec.vae.parameters()) if codec else 0)
    return {"batch": batch, "precision": precision, "seconds_per_step": seconds, "cpu_seconds_per_step": cpu_seconds, "flops_per_step": counter.get_total_flops(),
            "peak_bytes": peak, "parameters": parameters, "frozen_parameters": frozen}


def _meta_parts(settings):
    """(text encoder, VAE or None, UNet, tokens per caption) built from configs on the meta device: the
    ``init_from``/``vae`` folders' config files (their weights are never read), or the settings of a built model."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from synthvlp.pixel_diffusion import build_text_encoder, build_tokenizer, build_unet
    from synthvlp.pretrain.latent import vae_folder

    vae_path = settings.vae or (settings.init_from if settings.init_from and (settings.init_from / "vae" / "config.json").is_file() else None)
    with torch.device("meta"):
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(vae_folder(vae_path))) if vae_path else None
        factor = 2 ** (len(vae.config.block_out_channels) - 1) if vae else 1
        channels, side = (vae.config.latent_channels, settings.size // factor) if vae else (1, settings.size)
        if settings.init_from:
            text_config = CLIPTextConfig.from_pretrained(settings.init_from / "text_encoder")
            text = CLIPTextModel(text_config)
            unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(settings.init_from / "unet"))
            tokens = text_config.max_position_embeddings
        else:
            text = build_text_encoder(build_tokenizer(CAPTIONS, settings), settings)
            unet = build_unet(settings, text.config.hidden_size, channels, side) if vae else build_unet(settings, text.config.hidden_size)
            tokens = settings.max_tokens
    return text, vae, unet, tokens, (channels, side, side)


def meta_worker(config_path: str, overrides: list[str], size: int) -> dict:
    """FLOPs of one film's step (trained parts forward and backward; the VAE's encoding apart) and the bytes
    autograd saves for the backward pass, counted on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from synthvlp.pretrain.diffusion_engine import trains_text_encoder

    settings = _settings(config_path, overrides, size)
    text, vae, unet, length, shape = _meta_parts(settings)
    train_text = trains_text_encoder(settings)
    weights = {id(p) for part in (text, vae, unet) if part is not None for p in part.parameters()}
    kept: dict[int, torch.Tensor] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        base = tensor if tensor._base is None else tensor._base  # views of one buffer count once, as the buffer
        if id(base) not in weights:  # a weight (or its transpose) saved for the backward is no activation
            kept[id(base)] = base  # held, so an id is never reused while counting
        return tensor

    films = torch.empty(1, vae.config.in_channels if vae else 1, size, size, device="meta")
    tokens = torch.zeros(1, length, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            clean = vae.encode(films).latent_dist.mean if vae else films
            context = None if train_text else text(tokens)[0]
        frozen_flops = counter.get_total_flops()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            if train_text:
                context = text(tokens)[0]
            predicted = unet(clean, torch.zeros(1, dtype=torch.long, device="meta"), encoder_hidden_states=context).sample
        predicted.float().pow(2).mean().backward()
    trained = sum(p.numel() for p in unet.parameters()) + sum(p.numel() for p in text.parameters()) * train_text
    frozen = sum(p.numel() for p in text.parameters()) * (not train_text) + (sum(p.numel() for p in vae.parameters()) if vae else 0)
    return {"size": size, "latent": list(shape), "trained_parameters": trained, "frozen_parameters": frozen, "train_gflop": (counter.get_total_flops() - frozen_flops) / 1e9,
            "encode_gflop": frozen_flops / 1e9, "saved_gib": sum(t.numel() * t.element_size() for t in kept.values()) / 2**30}


def meta_report(rows: list[dict], sustained_tflops: tuple[float, ...], gpu_batch: int) -> str:
    """The meta-device counts and the GPU estimate that follows from them."""
    lines = ["| size | UNet input | trained / frozen params (M) | GFLOP per film: trained fwd+bwd | + frozen (VAE encode, frozen text) | saved for backward, fp32 (GiB per film) |",
             "|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['size']} | {'x'.join(map(str, r['latent']))} | {r['trained_parameters'] / 1e6:.0f} / {r['frozen_parameters'] / 1e6:.0f} | "
                     f"{r['train_gflop']:,.0f} | {r['encode_gflop']:,.0f} | {r['saved_gib']:.2f} |")
    lines.append("")
    for r in rows:
        state = (r["trained_parameters"] * STATE_BYTES + r["frozen_parameters"] * 4) / 2**30
        flops = (r["train_gflop"] + r["encode_gflop"]) * 1e9
        times = ", ".join(f"{rate * 1e12 / flops:.0f} films/s at {rate:g} TFLOP/s" for rate in sustained_tflops)
        lines.append(f"{r['size']} px, estimate: weights, gradients, AdamW and EMA {state:.1f} GiB + batch {gpu_batch} x {r['saved_gib']:.2f} GiB "
                     f"= {state + gpu_batch * r['saved_gib']:.0f} GiB in fp32 (bf16 autocast keeps roughly half the activations); {times}.")
    return "\n".join(lines)


def _child(config: str, overrides: list[str], batch: int, steps: int, threads: int, precision: str) -> dict:
    command = [sys.executable, __file__, config, *overrides, "--worker", f"{batch},{steps},{threads},{precision}"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(rows: list[dict], sustained_tflops: tuple[float, ...], gpu_batch: int) -> str:
    """The measured table and the GPU estimate that follows from it."""
    lines = ["| batch | precision | wall s/step | CPU s/step (all threads) | GFLOP per film (fwd+bwd) | peak RSS (GiB) |", "|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['batch']} | {r['precision']} | {r['seconds_per_step']:.2f} | {r['cpu_seconds_per_step']:.2f} | "
                     f"{r['flops_per_step'] / r['batch'] / 1e9:.1f} | {r['peak_bytes'] / 2**30:.2f} |")
    fp32 = sorted((r for r in rows if r["precision"] == "fp32"), key=lambda r: r["batch"])
    small, large = fp32[0], fp32[-1]
    per_film = (large["peak_bytes"] - small["peak_bytes"]) / max(1, large["batch"] - small["batch"])
    state = small["parameters"] * STATE_BYTES + small["frozen_parameters"] * 4
    flops = small["flops_per_step"] / small["batch"]
    lines += ["", f"Parameters {small['parameters'] / 1e6:.1f}M trained, {small['frozen_parameters'] / 1e6:.1f}M frozen: weights, gradients, AdamW and EMA {state / 2**30:.2f} GiB.",
              f"Activations (fp32, from the batch {small['batch']} -> {large['batch']} slope): {per_film / 2**20:.0f} MiB per film.",
              f"Estimate at batch {gpu_batch}: {(state + gpu_batch * per_film) / 2**30:.1f} GiB of GPU memory in fp32 "
              f"(bf16 autocast keeps roughly half the activations), plus the CUDA context (~1 GiB)."]
    for rate in sustained_tflops:
        lines.append(f"Estimate at {rate:g} TFLOP/s sustained: {rate * 1e12 / flops:.0f} films/s, {gpu_batch * flops / (rate * 1e12):.2f} s per step of {gpu_batch}.")
    return "\n".join(lines)


def compare(first: tuple[str, list[str]], second: tuple[str, list[str]], batch: int, steps: int, threads: int, rounds: int) -> str:
    """Samples/s of two configs measured alternately, each in a fresh process, with the load around each. The ratio
    is of samples per CPU second (all threads), which a shared machine's load moves less than wall time."""
    rates: dict[int, list[float]] = {0: [], 1: []}
    lines = ["| round | config | trained / frozen params (M) | GFLOP per film | samples/s (wall) | samples per CPU s | load before-after |",
             "|---:|---|---:|---:|---:|---:|---|"]
    for round_ in range(1, rounds + 1):
        for side, (config, overrides) in enumerate((first, second)):
            before = os.getloadavg()[0]
            row = _child(config, overrides, batch, steps, threads, "fp32")
            rates[side].append(batch / row["cpu_seconds_per_step"])
            lines.append(f"| {round_} | {' '.join([config, *overrides])} | {row['parameters'] / 1e6:.2f} / {row['frozen_parameters'] / 1e6:.2f} | "
                         f"{row['flops_per_step'] / batch / 1e9:.2f} | {batch / row['seconds_per_step']:.1f} | {rates[side][-1]:.1f} | {before:.1f}-{os.getloadavg()[0]:.1f} |")
    ratios = [b / a for a, b in zip(rates[0], rates[1], strict=True)]
    lines += ["", f"Medians at batch {batch}, {threads} threads, {steps} steps after a warm-up: {statistics.median(rates[0]):.1f} vs "
              f"{statistics.median(rates[1]):.1f} samples per CPU second; second / first {statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}]."]
    return "\n".join(lines)


def write_sd15_configs(folder: Path) -> None:
    """Stable Diffusion v1.5's architecture (UNet 320-640-1280-1280 with 768-wide cross-attention, VAE
    128-256-512-512 with 4 latent channels, CLIP ViT-L/14's 12-layer text transformer), as configs without weights."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig

    with torch.device("meta"):
        UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8).save_config(folder / "unet")
        AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=512,
                      down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4).save_config(folder / "vae")
    CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
                   hidden_act="quick_gelu", projection_dim=768).save_pretrained(folder / "text_encoder")
    PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1,
                  set_alpha_to_one=False).save_config(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline", "note": "configs only, no weights (bench/bench_render_train.py)",
                                                         **{part: ["diffusers", "-"] for part in ("unet", "vae", "scheduler")}, "text_encoder": ["transformers", "CLIPTextModel"]}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides of the config, as synthvlp render train takes them.")
    parser.add_argument("--batches", default="1,2")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--gpu-batch", type=int, default=64)
    parser.add_argument("--sustained-tflops", default="50,150", help="Assumed sustained GPU rates the time estimate is given at.")
    parser.add_argument("--compare", help="A second config to time against the first, interleaved (its overrides: --compare-set).")
    parser.add_argument("--compare-set", action="append", default=[], help="key.path=value override of the --compare config (repeatable).")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--meta", action="store_true", help="Count FLOPs and saved activations on the meta device instead of training on the CPU.")
    parser.add_argument("--sizes", default="", help="--meta: film sides to count at (default: the config's model.size).")
    parser.add_argument("--sd15-configs", type=Path, help="Write Stable Diffusion v1.5's architecture as configs (no weights) to this folder and exit.")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_intermixed_args(argv)
    if args.sd15_configs:
        write_sd15_configs(args.sd15_configs)
        print(f"wrote {args.sd15_configs}")
        return
    if args.config is None:
        parser.error("a config is needed")
    if args.worker:
        batch, steps, threads, precision = args.worker.split(",")
        print(json.dumps(worker(args.config, args.overrides, int(batch), int(steps), int(threads), precision)))
        return
    rates = tuple(float(t) for t in args.sustained_tflops.split(","))
    if args.meta:
        sizes = [int(s) for s in args.sizes.split(",") if s] or [_settings(args.config, args.overrides).size]
        print(meta_report([meta_worker(args.config, args.overrides, size) for size in sizes], rates, args.gpu_batch))
        return
    batches = [int(b) for b in args.batches.split(",")]
    if args.compare:
        print(compare((args.config, args.overrides), (args.compare, args.compare_set), batches[0], args.steps, args.threads, args.rounds))
        return
    rows = [_child(args.config, args.overrides, b, args.steps, args.threads, p) for p in args.precisions.split(",") for b in (batches if p == "fp32" else batches[:1])]
    print(report(rows, rates, args.gpu_batch))


if __name__ == "__main__":
    main()
