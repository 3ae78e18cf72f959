"""Per-sample cost of every stage on this machine, with the embedded backends, for the capacity plan in
docs/scale-out.md. Runs the quickstart config (template reports, phantom images, synthvlp-tiny) at a chosen size
in a temporary run folder, times each stage's own work (no manifest or report writing) and prints a Markdown
table. Run from the repository root:

    .venv/bin/python bench/bench_capacity.py [--samples 1200] [--size 64] [--epochs 1]
    python bench/bench_capacity.py --gpu        # on a CUDA machine; needs torch, diffusers, open_clip only

The pretrain row is per sample-epoch (seconds for one sample seen once), so a run of E epochs over S samples
costs S x E times it. ``--gpu`` times the two GPU-bound costs of a SynCXR-scale run with randomly initialised
weights of the real architectures (speed does not depend on the weights): a Stable Diffusion 1.5 / RoentGen
sized text-to-image pass (512 px, 50 DDIM steps, classifier-free guidance, fp16) and a synthvlp-vit-b-16
pre-training step (bf16 autocast, AdamW).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1200)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (phantom)")
    parser.add_argument("--epochs", type=int, default=1, help="pre-training epochs timed")
    parser.add_argument("--gpu", action="store_true", help="time diffusion and ViT-B/16 pre-training on CUDA instead")
    args = parser.parse_args()
    gpu_costs() if args.gpu else cpu_costs(args)


def cpu_costs(args: argparse.Namespace) -> None:
    from rich.console import Console

    from synthvlp.config import load_config
    from synthvlp.runfolder import prepare_run_folder
    from synthvlp.runner import PER_UNIT_STAGES, Runner

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        overrides = [f"run.out_dir={folder}/run", f"run.n_samples={args.samples}", f"run.shard_size={max(1, args.samples // 4)}",
                     f"images.size={args.size}", f"pretrain.epochs={args.epochs}"]
        config = load_config(REPO / "configs" / "quickstart.yaml", overrides)
        runner = Runner(config, prepare_run_folder(config), console=Console(quiet=True))
        start = time.perf_counter()
        runner.extractor, runner.report_writer  # built once per process (or Ray actor), not per sample
        setup = time.perf_counter() - start
        for stage in (*PER_UNIT_STAGES, "balance", "pretrain"):
            start = time.perf_counter()
            # the stage's own work only: run() would also rewrite the manifest and the run report each time
            runner._run_per_unit(stage) if stage in PER_UNIT_STAGES else runner._run_global(stage)
            seconds = time.perf_counter() - start
            count = _train_samples(runner) * args.epochs if stage == "pretrain" else args.samples
            rows.append((stage, count, seconds))
    load = os.getloadavg()[0]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"Quickstart config, {args.samples} samples, {args.size} px phantom, template reports, synthvlp-tiny "
          f"({args.epochs} epoch(s), batch {config.pretrain.batch_size}, fp32); {os.cpu_count()} CPU cores, torch "
          f"{torch.__version__} with {torch.get_num_threads()} threads; 1-minute load average at the end {load:.1f}; "
          f"peak RSS {peak:,.0f} MiB.\n")
    print("| stage | samples | seconds | ms per sample | samples/s |")
    print("|---|---|---|---|---|")
    print(f"| set-up: entity extractor + report writer, once per process | - | {setup:.1f} | - | - |")
    for stage, count, seconds in rows:
        label = f"{stage} (per sample-epoch)" if stage == "pretrain" else stage
        print(f"| {label} | {count:,} | {seconds:.1f} | {1000 * seconds / count:.2f} | {count / seconds:,.1f} |")


def _train_samples(runner) -> int:
    table = runner.joined_parts()
    return sum(1 for s, split in zip(table.column("selected").to_pylist(), table.column("split").to_pylist(), strict=True) if s and split == "train")


def _cuda_seconds(step, repeats: int) -> float:
    """Best wall time of ``step`` over ``repeats`` runs after one warm-up, synchronised with the GPU."""
    step()
    best = float("inf")
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


@torch.inference_mode()
def _diffusion_seconds(batch: int, steps: int = 50, guidance: float = 7.5) -> float:
    """One text-to-image call as StableDiffusionPipeline makes it: encode prompts (and the empty prompt), run
    ``steps`` UNet passes on the doubled batch with guidance, decode the latents with the VAE."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    device, dtype = torch.device("cuda"), torch.float16
    text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12, hidden_act="quick_gelu")).to(device, dtype).eval()  # CLIP ViT-L/14 text tower
    unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8).to(device, dtype).eval()  # SD 1.5 UNet
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(128, 256, 512, 512), layers_per_block=2).to(device, dtype).eval()
    scheduler = DDIMScheduler()

    def call() -> None:
        ids = torch.randint(0, 49408, (2 * batch, 77), device=device)
        context = text(ids).last_hidden_state
        latents = torch.randn(batch, 4, 64, 64, device=device, dtype=dtype)
        scheduler.set_timesteps(steps)
        for t in scheduler.timesteps:
            noise = unet(torch.cat([latents, latents]), t, encoder_hidden_states=context).sample
            uncond, cond = noise.chunk(2)
            latents = scheduler.step(uncond + guidance * (cond - uncond), t, latents).prev_sample
        vae.decode(latents / 0.18215)

    return _cuda_seconds(call, repeats=2)


def _pretrain_seconds(batch: int) -> float:
    import open_clip

    open_clip.add_model_config(REPO / "synthvlp" / "model_configs" / "synthvlp-vit-b-16.json")
    model = open_clip.create_model("synthvlp-vit-b-16").cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(batch, 3, 224, 224, device="cuda")
    tokens = torch.randint(0, 49408, (batch, 77), device="cuda")
    labels = torch.arange(batch, device="cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            image, text, scale = model(images, tokens)
            logits = scale * image @ text.T
            loss = (torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.T, labels)) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return _cuda_seconds(lambda: [step() for _ in range(5)], repeats=3) / 5


def gpu_costs() -> None:
    name = torch.cuda.get_device_name()
    print(f"{name}, torch {torch.__version__} (CUDA {torch.version.cuda}); random weights, real architectures.\n")
    print("| what | batch | seconds per call | seconds per sample | samples/s |")
    print("|---|---|---|---|---|")
    for batch in (1, 4, 8, 16):
        seconds = _diffusion_seconds(batch)
        print(f"| SD 1.5 / RoentGen-sized, 512 px, 50 DDIM steps, guidance 7.5, fp16 | {batch} | {seconds:.2f} | {seconds / batch:.3f} | {batch / seconds:.2f} |", flush=True)
    for batch in (256, 512):
        seconds = _pretrain_seconds(batch)
        print(f"| synthvlp-vit-b-16 pre-training step, 224 px, bf16 autocast, AdamW | {batch} | {seconds:.3f} | {seconds / batch * 1000:.3f} ms | {batch / seconds:,.0f} |", flush=True)
    print(f"\npeak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
