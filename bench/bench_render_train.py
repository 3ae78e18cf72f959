"""What one `synthvlp render train` step costs at a config's size, measured on this machine's CPU, and the GPU
memory and time that follow from it (an estimate: no GPU was measured). Each measurement runs in its own child
process, so its peak resident memory is its own. Run from the repo root:

    .venv/bin/python bench/bench_render_train.py configs/render-nih-256.yaml [--batches 1,2] [--steps 2] [--threads 2]

Per batch size it trains ``--steps`` steps (after one warm-up step) of the config's UNet and text encoder on
random films (the cost does not depend on the pixels) and reports seconds per step, the FLOPs of one step
(``torch.utils.flop_counter``: forward and backward) and the process's peak memory. The memory one more film
costs is the slope between the two batch sizes; weights, gradients, AdamW moments and EMA weights are 20 bytes
per parameter. The GPU figures scale those: activations by the batch, time by FLOPs over an assumed sustained
rate (stated in the output).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STATE_BYTES = 4 + 4 + 8 + 4
"""fp32 weights, gradients, AdamW's two moments and the EMA copy, per parameter."""


def worker(config_path: str, batch: int, steps: int, threads: int, precision: str) -> dict:
    """Train ``steps`` steps at ``batch`` films after a warm-up; seconds per step, FLOPs per step, peak memory."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from synthvlp.config import RenderTrainConfig, load_config
    from synthvlp.pixel_diffusion import build_text_encoder, build_tokenizer, build_unet
    from synthvlp.pretrain.diffusion_engine import Denoiser
    from synthvlp.threads import apply

    apply("compute", threads)
    settings = load_config(Path(config_path), model=RenderTrainConfig).model
    torch.manual_seed(0)
    tokenizer = build_tokenizer(["no acute cardiopulmonary process", "cardiomegaly", "pleural effusion"], settings)
    text = build_text_encoder(tokenizer, settings)
    model = Denoiser({"unet": build_unet(settings, settings.text_width), "text_encoder": text})
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    films = torch.randn(batch, 1, settings.size, settings.size)
    tokens = tokenizer(["cardiomegaly"] * batch, padding="max_length", max_length=settings.max_tokens, return_tensors="pt").input_ids
    timesteps = torch.randint(0, settings.train_timesteps, (batch,))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            predicted = model(films, timesteps, None, tokens)
        torch.nn.functional.mse_loss(predicted.float(), films).backward()
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
    return {"batch": batch, "precision": precision, "seconds_per_step": seconds, "cpu_seconds_per_step": cpu_seconds, "flops_per_step": counter.get_total_flops(), "peak_bytes": peak, "parameters": parameters}


def _child(config: str, batch: int, steps: int, threads: int, precision: str) -> dict:
    command = [sys.executable, __file__, config, "--worker", f"{batch},{steps},{threads},{precision}"]
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
    state = small["parameters"] * STATE_BYTES
    flops = small["flops_per_step"] / small["batch"]
    lines += ["", f"Parameters {small['parameters'] / 1e6:.1f}M: weights, gradients, AdamW and EMA {state / 2**30:.2f} GiB.",
              f"Activations (fp32, from the batch {small['batch']} -> {large['batch']} slope): {per_film / 2**20:.0f} MiB per film.",
              f"Estimate at batch {gpu_batch}: {(state + gpu_batch * per_film) / 2**30:.1f} GiB of GPU memory in fp32 "
              f"(bf16 autocast keeps roughly half the activations), plus the CUDA context (~1 GiB)."]
    for rate in sustained_tflops:
        lines.append(f"Estimate at {rate:g} TFLOP/s sustained: {rate * 1e12 / flops:.0f} films/s, {gpu_batch * flops / (rate * 1e12):.2f} s per step of {gpu_batch}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--batches", default="1,2")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--gpu-batch", type=int, default=64)
    parser.add_argument("--sustained-tflops", default="50,150", help="Assumed sustained GPU rates the time estimate is given at.")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        batch, steps, threads, precision = args.worker.split(",")
        print(json.dumps(worker(args.config, int(batch), int(steps), int(threads), precision)))
        return
    batches = [int(b) for b in args.batches.split(",")]
    rows = [_child(args.config, b, args.steps, args.threads, p) for p in args.precisions.split(",") for b in (batches if p == "fp32" else batches[:1])]
    print(report(rows, tuple(float(t) for t in args.sustained_tflops.split(",")), args.gpu_batch))


if __name__ == "__main__":
    main()
