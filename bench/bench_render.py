"""Image rendering throughput: the phantom renderer at 256 and 512 px against the walking skeleton's procedural
renderer (the peer), and a tiny diffusers pipeline (the same tiny Stable Diffusion the tests build) beside them.
Each measurement runs in its own child process so its peak resident memory is its own. Run from the repo root:

    .venv/bin/python bench/bench_render.py [--threads 2] [--images 40] [--sizes 64,256,512]

Prints a Markdown table; ratios are phantom / procedural at the same size, measured in this command.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLANS = [
    [],
    [("pleural effusion", "left")],
    [("pneumothorax", "right"), ("nodule", "left")],
    [("cardiomegaly", None), ("pulmonary edema", None)],
    [("consolidation", "right"), ("atelectasis", "left")],
    [("emphysema", None), ("pacemaker", None)],
]


def _entities(plan):
    return [{"name": n, "category": "ABNORMALITY", "assertion": "present", "laterality": s} for n, s in plan]


def worker(backend: str, size: int, images: int, threads: int | None, steps: int) -> dict:
    """Render ``images`` images (after one warm-up) and report images/s and this process's peak memory
    (``threads`` None keeps the pools as the caller set them)."""
    import numpy as np

    from synthvlp.threads import apply

    if threads is not None:
        apply("compute", threads)
    if backend == "phantom":
        from synthvlp.generation import phantom

        def one(i: int) -> None:
            phantom.render(_entities(PLANS[i % len(PLANS)]), size, np.random.default_rng(i))
    elif backend == "procedural":
        import procedural  # bench/procedural.py: the walking skeleton's renderer, kept only as this peer

        def one(i: int) -> None:
            procedural.render(_entities(PLANS[i % len(PLANS)]), size, np.random.default_rng(i))
    else:
        sys.path.insert(0, str(REPO / "tests"))
        from test_diffusion import _tiny_pipeline

        from synthvlp.config import DiffusersSection
        from synthvlp.generation.diffusion import DiffusionRenderer

        folder = Path(tempfile.mkdtemp())
        _tiny_pipeline(folder)
        renderer = DiffusionRenderer(DiffusersSection(path=folder, steps=steps, device="cpu", batch_size=4))

        def one(i: int) -> None:
            renderer.render(["Left pleural effusion."] * 4, list(range(i, i + 4)), size)

        images = max(images // 4, 1)
    one(0)
    start = time.perf_counter()
    for i in range(images):
        one(i + 1)
    elapsed = time.perf_counter() - start
    count = images * (4 if backend == "diffusers" else 1)
    return {"images_per_s": count / elapsed, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--sizes", default="64,256,512")
    parser.add_argument("--steps", type=int, default=10, help="denoising steps of the tiny diffusers pipeline")
    parser.add_argument("--diffusers-images", type=int, default=8, help="images per diffusers measurement (batches of 4)")
    parser.add_argument(
        "--diffusers-sizes", default="64",
        help="sizes for the tiny pipeline; its VAE downsamples only 2x, so attention over 128^2+ latents is far "
        "costlier than RoentGen's 64^2 latents at 512 px and would not be a fair figure",
    )  # fmt: skip
    parser.add_argument("--worker", nargs=2, metavar=("BACKEND", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.images, args.threads, args.steps)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        result = {}
        backends = ["phantom", "procedural"] + (["diffusers"] if str(size) in args.diffusers_sizes.split(",") else [])
        for backend in backends:
            count = args.diffusers_images if backend == "diffusers" else args.images
            command = [sys.executable, __file__, "--worker", backend, str(size), "--images", str(count), "--threads", str(args.threads), "--steps", str(args.steps)]
            out = subprocess.run(command, check=True, capture_output=True, text=True, env=env, cwd=REPO).stdout
            result[backend] = json.loads(out.strip().splitlines()[-1])
        rows.append((size, result))
    print(f"threads: {args.threads}; images per measurement: {args.images} (tiny diffusers: {args.diffusers_images}, {args.steps} steps, batch 4)\n")
    print("| size | phantom img/s | procedural img/s (peer) | phantom / peer | tiny diffusers img/s | peak MB phantom / procedural / diffusers |")
    print("|---|---|---|---|---|---|")
    for size, r in rows:
        p, q, d = r["phantom"], r["procedural"], r.get("diffusers")
        speed, peak = (f"{d['images_per_s']:.2f}", f"{d['peak_mb']:.0f}") if d else ("-", "-")
        print(f"| {size} | {p['images_per_s']:.1f} | {q['images_per_s']:.1f} | {p['images_per_s'] / q['images_per_s']:.2f} | {speed} | {p['peak_mb']:.0f} / {q['peak_mb']:.0f} / {peak} |")


if __name__ == "__main__":
    main()
