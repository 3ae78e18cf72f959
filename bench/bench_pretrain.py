"""Pre-training throughput: our engine vs ``open_clip_train.main`` on the same model, batch and shards, one command.

Three measurements, each in its own subprocess under ``/usr/bin/time`` (peak RSS is that process's own):

- ``ours``: ``python -m synthvlp.cli pretrain`` (the real entry point) for ``--steps`` steps;
- ``open_clip_train``: ``open_clip_train.main`` on the same samples (extracted to PNG files + a CSV, because its
  webdataset loader fails with webdataset 1.x), after registering our model configs (open_clip only scans its
  own folder), with the same batch, lr, warm-up and precision, for one epoch of ``--steps`` batches;
- ``data only``: our data pipeline (shard index, decode, augment, tokenise, collate) iterated without a model.

Training speed is the steady state: samples / summed step times over steps after ``--warmup`` (both loops log a
per-step time that includes waiting for data). Without ``--shards`` it writes synthetic shards first.

    python bench/bench_pretrain.py --model synthvlp-tiny --batch 64 --steps 30
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

FINDINGS = ["cardiomegaly", "pleural effusion", "pneumothorax", "consolidation", "edema", "atelectasis", "nodule", "no acute findings"]


def write_shards(folder: Path, n: int, size: int, per_shard: int = 400) -> list[Path]:
    """Random smooth grey images with short finding captions, as WebDataset shards."""
    from PIL import Image

    from synthvlp.store import write_shard

    rng = np.random.default_rng(0)
    paths = []
    for start in range(0, n, per_shard):
        samples = []
        for i in range(start, min(n, start + per_shard)):
            pixels = np.kron(rng.random((size // 8, size // 8)), np.ones((8, 8))) * 255
            buffer = io.BytesIO()
            Image.fromarray(pixels.astype(np.uint8)).save(buffer, "PNG")
            text = "FINDINGS: " + ", ".join(rng.choice(FINDINGS, 2, replace=False)) + "."
            samples.append({"__key__": f"b{i:08d}", "png": buffer.getvalue(), "txt": text.encode()})
        path = folder / f"train-{len(paths):06d}.tar"
        write_shard(path, samples)
        paths.append(path)
    return paths


def extract_for_csv(shards: list[Path], folder: Path) -> Path:
    """The same samples as PNG files plus a CSV, for open_clip_train's csv loader: its webdataset loader fails
    with webdataset 1.x (KeyError 'fname' in ``group_by_keys_nothrow``)."""
    from synthvlp.store import read_shard

    (folder / "png").mkdir(parents=True, exist_ok=True)
    csv_path = folder / "train.csv"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filepath", "title"])
        for shard in shards:
            for sample in read_shard(shard):
                path = folder / "png" / f"{sample['__key__']}.png"
                path.write_bytes(sample["png"])
                writer.writerow([str(path), sample["txt"].decode()])
    return csv_path


def timed(command: list[str], folder: Path, name: str) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, combined output) of one subprocess."""
    rss_file = folder / f"{name}.rss"
    began = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *command], capture_output=True, text=True)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"{name} failed:\n{done.stderr[-4000:]}")
    return wall, int(rss_file.read_text().split()[-1]) / 1024, done.stdout + done.stderr


def steady(step_seconds: list[float], batch: int, warmup: int) -> float:
    kept = step_seconds[warmup:]
    return batch * len(kept) / sum(kept)


def run_ours(args, shards: list[Path], folder: Path, workers: int) -> dict:
    config = {
        "run": {"out_dir": str(folder / f"ours-w{workers}"), "seed": 0},
        "pretrain": {
            "model": args.model, "shards": [str(s) for s in shards], "batch_size": args.batch, "max_steps": args.steps, "lr": 1e-3,
            "warmup_steps": 5, "threads": args.threads, "workers": workers, "checkpoint_every": 10**6, "tensorboard": False, "precision": "fp32",
        },
    }
    path = folder / f"ours-w{workers}.yaml"
    path.write_text(yaml.safe_dump(config))
    wall, rss, _ = timed([sys.executable, "-m", "synthvlp.cli", "pretrain", str(path)], folder, f"ours-w{workers}")
    with open(folder / f"ours-w{workers}" / "pretrain" / "log.csv") as handle:
        rows = list(csv.DictReader(handle))
    seconds = [args.batch / float(r["samples_per_s"]) for r in rows]
    wait = sum(float(r["data_wait_s"]) for r in rows[args.warmup :])
    return {"samples_s": steady(seconds, args.batch, args.warmup), "wall": wall, "rss": rss, "data_wait_share": wait / sum(seconds[args.warmup :])}


def run_open_clip(args, shards: list[Path], folder: Path, workers: int, extract: bool = True) -> dict:
    """open_clip_train.main on ``shards`` (extracted to ``folder/csv`` first unless ``extract`` is False)."""
    table = extract_for_csv(shards, folder / "csv") if extract else folder / "csv" / "train.csv"
    argv = [
        "--train-data", str(table), "--dataset-type", "csv", "--csv-separator", ",", "--csv-img-key", "filepath", "--csv-caption-key", "title",
        "--model", args.model, "--batch-size", str(args.batch), "--epochs", "1", "--lr", "1e-3", "--wd", "0.1", "--warmup", "5",
        "--precision", "fp32", "--workers", str(workers), "--log-every-n-steps", "1", "--logs", str(folder / f"oc-w{workers}"),
        "--name", "bench", "--save-frequency", "0", "--seed", "0", "--report-to", "",
    ]
    script = (  # synthvlp first, so open_clip's process gets the same OpenMP wait policy as ours (synthvlp.threads)
        "import sys, synthvlp, torch, open_clip; torch.set_num_threads(%d); "
        "from synthvlp.models import MODEL_CONFIG_DIR; open_clip.add_model_config(MODEL_CONFIG_DIR); "
        "from open_clip_train.main import main; main(sys.argv[1:])" % args.threads
    )
    wall, rss, output = timed([sys.executable, "-c", script, *argv], folder, f"oc-w{workers}")
    log = (folder / f"oc-w{workers}" / "bench" / "out.log").read_text()
    seconds = [float(x) for x in re.findall(r"Batch \(t\): ([0-9.]+)", log)]
    if not seconds:
        sys.exit(f"no step times in open_clip_train's log:\n{log[-2000:]}\n{output[-2000:]}")
    return {"samples_s": steady(seconds, args.batch, args.warmup), "wall": wall, "rss": rss, "steps": len(seconds)}


def run_data_only(args, shards: list[Path], folder: Path, workers: int) -> dict:
    script = f"""
import time, torch
torch.set_num_threads({args.threads})
from synthvlp.config import PretrainSection
from synthvlp.pretrain.engine import build_model, build_dataset, _Batches
from synthvlp.pretrain.data import collate
from synthvlp.pretrain.sampling import StepPlan
settings = PretrainSection(model={args.model!r}, batch_size={args.batch}, workers={workers})
_, transform, tokenizer = build_model(settings)
dataset, recipe = build_dataset(settings, {[str(s) for s in shards]!r}, transform, tokenizer, 0)
plan = StepPlan(recipe, 0, {args.batch}, 1, 0, 1)
loader = torch.utils.data.DataLoader(dataset, batch_sampler=_Batches(plan, 0, {args.steps}), num_workers={workers}, collate_fn=collate)
times, last = [], time.perf_counter()
for batch in loader:
    now = time.perf_counter(); times.append(now - last); last = now
print("STEPS", ",".join(f"{{t:.6f}}" for t in times))
"""
    wall, rss, output = timed([sys.executable, "-c", script], folder, f"data-w{workers}")
    seconds = [float(t) for t in re.search(r"STEPS (.*)", output).group(1).split(",")]
    return {"samples_s": steady(seconds, args.batch, args.warmup), "wall": wall, "rss": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="synthvlp-tiny")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5, help="Leading steps left out of the steady-state rate.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1], help="DataLoader workers to measure.")
    parser.add_argument("--shards", help="Glob of WebDataset shards (default: synthetic shards written to a temp folder).")
    parser.add_argument("--image-size", type=int, default=64, help="Side of the generated images.")
    parser.add_argument("--out", type=Path, help="Write the results as JSON here.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-pretrain-") as tmp:
        folder = Path(tmp)
        n = args.steps * args.batch
        shards = [Path(p) for p in sorted(glob.glob(args.shards))] if args.shards else write_shards(folder, n, args.image_size)
        rows = []
        for workers in args.workers:
            rows.append(("ours (synthvlp pretrain)", workers, run_ours(args, shards, folder, workers)))
            rows.append(("open_clip_train.main", workers, run_open_clip(args, shards, folder, workers)))
            rows.append(("our data pipeline alone", workers, run_data_only(args, shards, folder, workers)))
    print(f"model {args.model}, global batch {args.batch}, {args.steps} steps (first {args.warmup} excluded), fp32, {args.threads} threads")
    print("| loop | workers | samples/s (steady) | wall s | peak RSS MiB |")
    print("|---|---|---|---|---|")
    for name, workers, result in rows:
        print(f"| {name} | {workers} | {result['samples_s']:.1f} | {result['wall']:.1f} | {result['rss']:.0f} |")
    for workers in args.workers:
        ours, peer, data = (r for n_, w, r in rows if w == workers)
        print(f"workers {workers}: ours / open_clip_train = {ours['samples_s'] / peer['samples_s']:.2f}x; "
              f"data pipeline / step consumption = {data['samples_s'] / ours['samples_s']:.1f}x; our loop waited for data {ours['data_wait_share']:.0%} of the time")
    if args.out:
        args.out.write_text(json.dumps([{"loop": n_, "workers": w, **r} for n_, w, r in rows], indent=1))


if __name__ == "__main__":
    main()
