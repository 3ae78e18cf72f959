"""Filter throughput: each check's images/s, vectorised (ours) against a one-image-at-a-time loop (the peer),
near-duplicate search against brute-force pairwise comparison, and the whole filter stage on quickstart-sized
shards against the images stage that feeds it. Run from the repository root:

    .venv/bin/python bench/bench_filters.py [--images 2048] [--size 256]

Prints a Markdown table (ratios are ours / peer, measured in this process) and the peak resident memory.
"""

from __future__ import annotations

import argparse
import io
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from synthvlp.config import RunConfig, load_config
from synthvlp.encoders import GradientEncoder
from synthvlp.filtering.dedupe import image_duplicates
from synthvlp.filtering.image_checks import contrast, decode_batch, dynamic_range, image_scores, image_signatures, nonfinite_share, saturation
from synthvlp.generation import phantom
from synthvlp.threads import apply


def timed(function, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def phantom_pngs(n: int, size: int) -> list[bytes]:
    """``n`` phantom films (no findings, seeds 0..n-1) as PNG bytes."""
    pngs = []
    for i in range(n):
        buffer = io.BytesIO()
        Image.fromarray(phantom.render([], size, np.random.default_rng(i)).image).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    return pngs


def decode_and_check(pngs: list[bytes], size: int) -> float:
    """Seconds for ours: decode the batch, then every image check on it."""
    settings = RunConfig().filter
    start = time.perf_counter()
    image_scores(decode_batch(pngs, size), settings)
    return time.perf_counter() - start


def duplicates_ours(pngs: list[bytes], size: int) -> float:
    """Seconds for ours: near-duplicate search over the decoded batch's signatures (decoding not timed)."""
    signatures = image_signatures(decode_batch(pngs, size).pixels)
    start = time.perf_counter()
    image_duplicates(signatures, 0.999)
    return time.perf_counter() - start


def duplicates_brute(pngs: list[bytes], size: int) -> float:
    """Seconds for the peer: the same signatures compared pairwise in a Python loop."""
    signatures = image_signatures(decode_batch(pngs, size).pixels)
    start = time.perf_counter()
    brute_force_duplicates(signatures, 0.999)
    return time.perf_counter() - start


def per_image_checks(pngs: list[bytes], size: int, settings=None) -> float:
    """Seconds for the peer: decode and score one image at a time, as a straightforward loop would."""
    settings = settings or RunConfig().filter
    start = time.perf_counter()
    for data in pngs:
        image = Image.open(io.BytesIO(data))
        pixels = np.asarray(image, dtype=np.float32) / 255.0
        _ = (image.size == (size, size), np.isfinite(pixels).all(), pixels.std() >= settings.min_std)
        _ = ((pixels <= 0) | (pixels >= 1)).mean() <= settings.max_saturated
        low, high = np.percentile(pixels, [1, 99])
        _ = high - low >= settings.min_dynamic_range
    return time.perf_counter() - start


def per_image_scores(flat: np.ndarray) -> None:
    for row in flat:
        _ = np.isfinite(row).all(), row.std(), ((row <= 0) | (row >= 1)).mean(), np.percentile(row, [1, 99])


def brute_force_duplicates(signatures: np.ndarray, threshold: float) -> None:
    kept: list[np.ndarray] = []
    for row in signatures:
        if not any(float(row @ other) >= threshold for other in kept):
            kept.append(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    apply("compute", args.threads)
    settings = RunConfig().filter
    pngs = phantom_pngs(args.images, args.size)
    n = len(pngs)
    rows: list[tuple[str, float, float | None, str]] = []

    batch = decode_batch(pngs, args.size)
    flat = batch.pixels.reshape(n, -1)
    t_decode = timed(lambda: decode_batch(pngs, args.size), 1)
    t_checks = timed(lambda: image_scores(batch, settings))
    t_peer = per_image_checks(pngs, args.size, settings)
    rows.append(("decode + all image checks", n / (t_decode + t_checks), n / t_peer, "per-image loop (PIL decode + numpy)"))
    rows.append(("PNG decode alone", n / t_decode, None, ""))
    rows.append(("all image checks (decoded)", n / t_checks, n / timed(lambda: per_image_scores(flat), 1), "same checks, one image at a time"))
    for name, check in (("finite", nonfinite_share), ("contrast", contrast), ("saturation", saturation), ("dynamic_range", dynamic_range)):
        rows.append((f"check: {name}", n / timed(lambda check=check: check(flat)), None, ""))
    rows.append(("signatures (16x16)", n / timed(lambda: image_signatures(batch.pixels)), None, ""))
    rows.append(("exemplar features (gradient)", n / timed(lambda: GradientEncoder().encode(batch.pixels), 1), None, ""))
    signatures = image_signatures(batch.pixels)
    t_dedupe = timed(lambda: image_duplicates(signatures, 0.999))
    t_brute = timed(lambda: brute_force_duplicates(signatures[:512], 0.999), 1)
    rows.append(("near-duplicate search", n / t_dedupe, 512 / t_brute, "pairwise Python loop (512 images)"))

    from rich.console import Console

    from synthvlp.runfolder import prepare_run_folder
    from synthvlp.runner import Runner

    with tempfile.TemporaryDirectory() as folder:
        config = load_config(Path("configs/quickstart.yaml"), [f"run.out_dir={folder}/run"])
        runner = Runner(config, prepare_run_folder(config), console=Console(quiet=True))
        runner.run(("plan", "reports"))
        start = time.perf_counter()
        runner.run(("images",))
        t_images = time.perf_counter() - start
        start = time.perf_counter()
        runner.run(("filter",))
        t_filter = time.perf_counter() - start
        samples = config.run.n_samples
    rows.append((f"filter stage, {samples} quickstart samples", samples / t_filter, samples / t_images, "images stage feeding it"))

    print(f"{n} phantom films at {args.size}x{args.size}, {args.threads} threads\n")
    print("| what | ours (images/s) | peer (images/s) | ratio | peer |")
    print("|---|---|---|---|---|")
    for what, ours, peer, peer_name in rows:
        ratio = f"{ours / peer:.1f}x" if peer else "-"
        print(f"| {what} | {ours:,.0f} | {f'{peer:,.0f}' if peer else '-'} | {ratio} | {peer_name} |")
    print(f"\npeak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
