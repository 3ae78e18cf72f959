"""Phantom films refined by a diffusion renderer trained on real films (SDEdit), measured for realism (issue 15).

The phantom's discriminator AUC stays near 1.0 however its ranges are tuned (BENCHMARKS.md, issue 15), while a
pixel-space renderer trained on real NIH films (issue 16) learns their texture but draws no masks. This bench
asks whether the two combine: each phantom film is noised part of the way along the renderer's schedule
(``--strengths``) and denoised by it with the film's own IMPRESSION as prompt, so the layout (and the masks drawn
with it) should survive while the texture becomes the real films'. Strength 0 is the phantom film itself, the
peer every other row is read against.

For each strength it reports the realism protocol of ``synthvlp render realism`` (discriminator AUC over its
seeds, the three distances as ratios to real-vs-real) and how much of the film survived: the mean correlation
of each refined film with its phantom film. Whether findings survive is not measured, only seen on the sheet.
It writes ``refine.md`` and ``sheet.png`` (phantom films, then one row per strength). Run from the repository
root, on a run rendered at the pipeline's size:

    PYTHONPATH=$PWD .venv/bin/python bench/refine_realism.py --run runs/x --pipeline runs/render-nih-64/pipeline \\
        --real ../shared/data/nih-real-256 --out bench/out/refine --strengths 0 0.3 0.5 0.7
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def phantom_films(run: Path, limit: int) -> tuple[np.ndarray, list[str], list[str]]:
    """Up to ``limit`` films of ``run``'s image shards in [0, 1] at their own size, their captions and keys."""
    from synthvlp.generation.realism.films import shard_paths, to_film
    from synthvlp.store import read_shard

    films, captions, keys = [], [], []
    for shard in shard_paths(run):
        for sample in read_shard(shard):
            image = Image.open(io.BytesIO(sample["png"]))
            films.append(to_film(image, image.width))  # 8- and 16-bit PNGs alike, as the realism command reads them
            captions.append(sample["txt"].decode())
            keys.append(str(sample["__key__"]))
            if len(films) == limit:
                return np.stack(films), captions, keys
    return np.stack(films), captions, keys


def refine(pipeline, films: np.ndarray, prompts: list[str], strength: float, steps: int, guidance: float, batch: int) -> np.ndarray:
    """``films`` through the pipeline's image-to-image path; film ``i``'s noise is seeded by ``i`` alone."""
    import torch

    out = []
    for start in range(0, len(films), batch):
        chunk = slice(start, start + batch)
        generators = [torch.Generator("cpu").manual_seed(i) for i in range(start, min(start + batch, len(films)))]
        result = pipeline(prompt=prompts[chunk], num_inference_steps=steps, guidance_scale=guidance, generator=generators,
                          image=films[chunk], strength=strength)
        out.append(result.images[..., 0])
    return np.concatenate(out)


def as_films(images: np.ndarray, keys: list[str], size: int):
    """``Films`` at ``size`` with the realism command's held-out rule, resized as it resizes rendered films."""
    from synthvlp.generation.realism.films import Films, _hashed_held_out, to_film

    resized = [to_film(Image.fromarray(np.round(image * 255).astype(np.uint8)), size) for image in images]
    return Films(np.stack(resized), np.array([_hashed_held_out(k) for k in keys]), keys)


def sheet(rows: list[np.ndarray], count: int = 10) -> Image.Image:
    """One row of ``count`` films per array (the phantom's first), side by side."""
    return Image.fromarray(np.round(np.concatenate([np.concatenate(list(r[:count]), axis=1) for r in rows], axis=0) * 255).astype(np.uint8))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a phantom run (or shard folder) rendered at the pipeline's size")
    parser.add_argument("--pipeline", type=Path, required=True, help="a folder `synthvlp render train` wrote (its pipeline/)")
    parser.add_argument("--real", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.0, 0.3, 0.5, 0.7])
    parser.add_argument("--films", type=int, default=500)
    parser.add_argument("--size", type=int, default=256, help="both sets are compared at this size, as `render realism --size`")
    parser.add_argument("--steps", type=int, default=20, help="the schedule's steps at strength 1 (strength s runs s x steps)")
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    import torch

    from synthvlp.captions import conditioning
    from synthvlp.generation.realism import measure
    from synthvlp.generation.realism.films import load_real
    from synthvlp.pixel_diffusion import PixelDiffusionPipeline

    torch.set_num_threads(args.threads)
    pipeline = PixelDiffusionPipeline.from_pretrained(args.pipeline)
    pipeline.set_progress_bar_config(disable=True)
    phantom, captions, keys = phantom_films(args.run, args.films)
    prompts = [conditioning(c, pipeline.config.caption_text, None) for c in captions]
    real = load_real(args.real, args.size)
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [f"{len(phantom)} phantom films of {args.run} at {phantom.shape[1]} px, refined by {args.pipeline} "
             f"({args.steps}-step schedule, guidance {args.guidance}); realism against {len(real.images)} real films at {args.size} px.", "",
             "| strength | discriminator AUC (mean ± sd) | histogram (ratio to real-real) | spectrum | contrast | correlation with the phantom film | refine s |",
             "|---:|---|---|---|---|---:|---:|"]
    rows = [phantom]
    for strength in args.strengths:
        start = time.perf_counter()
        refined = phantom if strength == 0 else refine(pipeline, phantom, prompts, strength, args.steps, args.guidance, args.batch)
        seconds = time.perf_counter() - start
        result = measure(real, as_films(refined, keys, args.size))
        kept = np.mean([np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(phantom, refined, strict=True)])
        ratios = [f"{ours:.4f} ({ours / floor:.1f}x)" for ours, floor in result.distances.values()]
        lines.append(f"| {strength:.2f} | {result.auc_mean:.3f} ± {result.auc_sd:.3f} | " + " | ".join(ratios) + f" | {kept:.3f} | {seconds:.0f} |")
        print(lines[-1], flush=True)
        if strength:
            rows.append(refined)
    (args.out / "refine.md").write_text("\n".join(lines) + f"\n\nload average at the end: {os.getloadavg()[0]:.1f}\n")
    sheet(rows).save(args.out / "sheet.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
