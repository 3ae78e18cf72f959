"""Sim-to-real lung segmentation: a small U-Net trained only on rendered films and the renderer's exact lung-field
masks, scored on real films with human lung masks (issue 15, transfer).

Every row is scored on the same real test films: the frontal films of ``covid-lungs`` (its 12 lateral films are
left out), split by case into two halves once (``real_split``). Rows:

- ``classic`` / ``projection``: trained on films of that phantom renderer (``images.phantom``), drawn from the
  quickstart's entity plans, with ``lung_mask`` of the film's own ``Body`` as the label (lung fields minus the
  heart silhouette: the convention of the human masks; docs/rendering.md);
- ``real``: the ceiling, the same network trained on the other real half;
- ``fixed mask (real)``: the floor, one mask for every film: the mean training-half human mask, thresholded where
  it scores best on the training half; ``fixed mask (<renderer>)``: the mean rendered mask at 0.5.

Each trained row uses the same network, step budget, augmentation (random affine, gamma, contrast, blur, noise)
and per-film standardisation, for several seeds; the table gives the mean Dice over seeds, their spread, and a
percentile bootstrap 95% CI over test films of the seed-averaged per-film Dice. Renders with the ``synthvlp`` on
``sys.path``, so a peer renderer is measured by running this file with that checkout first on ``PYTHONPATH``.

Run from the repository root (niced; at 64 px its nine trainings took 33 s each on 2 idle cores, up to 10 minutes
each on cores shared with other training):

    PYTHONPATH=$PWD .venv/bin/python bench/lung_transfer.py --real ../shared/data/covid-lungs --out bench/out/lungs
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from synthvlp.bootstrap import percentile_bootstrap
from synthvlp.evaluation.segmentation_data import SegmentationSet, dice_per_image, load_segmentation_csv

REPO = Path(__file__).resolve().parent.parent
RENDERERS = ("classic", "projection")


def case_of(filename: str) -> str:
    """The case a covid-lungs film belongs to, as its original file name shows it (the collection has no patient
    column): a study number (``16660_3_1``), an article's figure prefix (``jkms-35-e79-g001-l-b``,
    ``41182_2020_203_Fig4_HTML``) or a case name without its day, view or serial suffix
    (``covid-19-pneumonia-58-day-3``). Hashed names (one figshare deposit) carry no case and stand alone."""
    stem = Path(filename).stem.lower()
    if m := re.fullmatch(r"(\d+)_\d+_\d+", stem):
        return m.group(1)
    if m := re.match(r"(jkms-\d+-e\d+|kjr-\d+-e\d+|\d+_\d+_\d+)", stem):
        return m.group(1)
    stem = re.sub(r"-(day|pa|admission|\d+-hours|\d+-days).*$", "", stem)
    return re.sub(r"(-\d+)-\d$", r"\1", stem)


@dataclass
class RealSplit:
    """The fixed real split: ``train`` (ceiling and fixed-mask fit) and ``test`` (every row's score)."""

    train: SegmentationSet
    test: SegmentationSet
    test_names: list[str]
    lateral_left_out: int


def real_split(root: Path, size: int, out: Path, seed: int = 0) -> RealSplit:
    """Frontal covid-lungs films split by case into halves (cases in a seeded order, the test half filled to
    half the films); each half written as an index CSV under ``out`` and read at ``size`` px."""
    with open(root / "index.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    frontal = [row for row in rows if row["view"] != "L"]
    film_cases = [case_of(row["original_filename"]) for row in frontal]
    cases = sorted(set(film_cases))
    order = np.random.default_rng(seed).permutation(len(cases))
    test_cases: set[str] = set()
    for i in order:
        if sum(case in test_cases for case in film_cases) >= len(frontal) / 2:
            break
        test_cases.add(cases[i])
    halves = {}
    for name in ("train", "test"):
        keep = [row for row, case in zip(frontal, film_cases, strict=True) if (case in test_cases) == (name == "test")]
        path = out / f"real-{name}.csv"
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "mask"])
            writer.writerows([(root.resolve() / row["image"], root.resolve() / row["mask"]) for row in keep])
        halves[name] = (load_segmentation_csv(path, size), sorted(str(root.resolve() / row["image"]) for row in keep))
    return RealSplit(halves["train"][0], halves["test"][0], halves["test"][1], len(rows) - len(frontal))


def plans(n: int, seed: int = 0) -> list[list[dict]]:
    """``n`` entity plans drawn as the quickstart run draws them (its findings pool, 0-2 findings a film)."""
    from synthvlp.config import load_config
    from synthvlp.entities import load_vocabulary
    from synthvlp.generation.planner import plan_run

    config = load_config(REPO / "configs/quickstart.yaml", [f"run.n_samples={n}", f"run.seed={seed}"])
    return plan_run(config, load_vocabulary()).column("planned_entities").to_pylist()


def render_lungs(renderer: str, entities: list[dict], size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(film in [0, 1], lung mask) of one sample drawn by ``renderer`` exactly as the pipeline draws it (no report
    text: each finding's default severity). The classic renderer returns no ``Body``: it is rebuilt from the same
    generator children its ``render`` spawns (``tests/generation/test_lung_mask.py`` checks it is the film's)."""
    from synthvlp.generation import phantom
    from synthvlp.generation.phantom import classic
    from synthvlp.generation.phantom.lungmask import lung_mask

    if renderer == "projection":
        projection = phantom.project(entities, size, rng)
        return phantom.develop(projection).astype(np.float32), lung_mask(projection.body)
    if renderer != "classic":
        raise ValueError(f"renderer {renderer!r}: expected one of {RENDERERS}")
    film = classic.render(entities, size, copy.deepcopy(rng)).image.astype(np.float32) / 255.0
    return film, lung_mask(classic_body(entities, size, rng))


def classic_body(entities: list[dict], size: int, rng: np.random.Generator):
    """The classic renderer's ``Body`` for ``render(entities, size, rng)``: the first two of its four children."""
    from synthvlp.generation.phantom.classic.anatomy import build_body, draw_anatomy
    from synthvlp.generation.phantom.scene import read_scene

    anatomy_rng, pose_rng, _, _ = rng.spawn(4)
    return build_body(draw_anatomy(read_scene(entities, ""), anatomy_rng), size, pose_rng)


def rendered_set(renderer: str, n: int, size: int) -> SegmentationSet:
    """``n`` films of ``renderer`` with their lung masks, sample i drawn from ``default_rng(i)``."""
    films, masks = zip(*(render_lungs(renderer, e, size, np.random.default_rng(i)) for i, e in enumerate(plans(n))), strict=True)
    return SegmentationSet(torch.from_numpy(np.stack(films)).unsqueeze(1), torch.from_numpy(np.stack(masks)).long().unsqueeze(1))


def augment(images: torch.Tensor, masks: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random draw on film and mask: affine (scale 0.85-1.15, +-6 degrees, +-8% shift); then on the film
    only gamma 0.6-1.6, contrast 0.7-1.3 and offset +-0.15, a Gaussian blur up to 1 px per 64 px and noise up to
    0.04."""
    n, size = images.shape[0], images.shape[-1]

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=gen)

    scale, angle = uniform(0.85, 1.15), uniform(-0.1, 0.1)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(angle) / scale, -torch.sin(angle) / scale
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(angle) / scale, torch.cos(angle) / scale
    theta[:, :, 2] = 0.16 * (torch.rand(n, 2, generator=gen) - 0.5)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, align_corners=False)
    masks = F.grid_sample(masks.float(), grid, mode="nearest", align_corners=False).long()
    view = (n, 1, 1, 1)
    images = images.clamp(0, 1) ** uniform(0.6, 1.6).view(view)
    images = (images * uniform(0.7, 1.3).view(view) + uniform(-0.15, 0.15).view(view)).clamp(0, 1)
    sigma = float(uniform(0.0, size / 64)[0]) + 1e-3  # one blur width per batch: a single separable kernel
    reach = max(3, int(3 * sigma))  # three sigmas: 3 taps either side up to 64 px, more above
    taps = torch.arange(-reach, reach + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    images = F.conv2d(F.pad(images, (reach, reach, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    images = F.conv2d(F.pad(images, (0, 0, reach, reach), mode="replicate"), kernel.view(1, 1, -1, 1))
    images = images + uniform(0.0, 0.04).view(view) * torch.randn(images.shape, generator=gen)
    return images, masks


def standardise(images: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit spread per film: what the network sees, for every row alike."""
    flat = images.flatten(1)
    return ((flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True).clamp_min(1e-3)).view_as(images)


def build_net(seed: int) -> torch.nn.Module:
    """A small MONAI U-Net (16-128 channels, three downsamplings, one residual unit a level)."""
    from monai.networks.nets import UNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet(spatial_dims=2, in_channels=1, out_channels=2, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=1)


def train(data: SegmentationSet, steps: int, seed: int, batch_size: int = 16, lr: float = 2e-3) -> torch.nn.Module:
    """Cross-entropy plus soft foreground Dice, AdamW with a cosine schedule, augmented batches."""
    gen = torch.Generator().manual_seed(seed)
    net = build_net(seed)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    net.train()
    for _ in range(steps):
        rows = torch.randint(0, len(data.images), (batch_size,), generator=gen)
        images, masks = augment(data.images[rows], data.masks[rows], gen)
        logits = net(standardise(images))
        fg = logits.softmax(1)[:, 1]
        truth = masks[:, 0].float()
        soft_dice = 1 - (2 * (fg * truth).sum((1, 2)) + 1) / (fg.sum((1, 2)) + truth.sum((1, 2)) + 1)
        loss = F.cross_entropy(logits, masks[:, 0]) + soft_dice.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return net.eval()


def predict(net: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([net(standardise(chunk)) for chunk in images.split(32)])


def fixed_mask_logits(mask: np.ndarray, n: int) -> torch.Tensor:
    """Logits that predict ``mask`` for each of ``n`` films (what ``dice_per_image`` scores)."""
    fg = torch.from_numpy(mask.astype(np.float32))
    return torch.stack([1 - fg, fg]).unsqueeze(0).expand(n, -1, -1, -1)


def best_fixed_mask(train: SegmentationSet) -> tuple[np.ndarray, float]:
    """The mean training mask thresholded where its mean Dice on the training films is highest."""
    mean = train.masks[:, 0].float().mean(0).numpy()
    scored = [(float(dice_per_image(fixed_mask_logits(mean >= t, len(train.masks)), train.masks).mean()), t) for t in np.arange(0.05, 1.0, 0.05)]
    _, threshold = max(scored)
    return mean >= threshold, float(threshold)


def summarise(name: str, per_seed: list[np.ndarray], rng: np.random.Generator) -> dict:
    """Mean and spread over seeds of the mean Dice, and the bootstrap CI over films of the seed-averaged Dice."""
    means = [float(d.mean()) for d in per_seed]
    pooled = np.mean(per_seed, axis=0)
    ci = percentile_bootstrap(lambda rows: float(pooled[rows].mean()), len(pooled), 1000, rng)
    return {"row": name, "seeds": len(per_seed), "mean": float(np.mean(means)), "sd": float(np.std(means, ddof=1)) if len(means) > 1 else 0.0,
            "min": min(means), "max": max(means), "ci": [float(ci.low), float(ci.high)], "per_seed": means}


def sheet(path: Path, real: RealSplit, logits: torch.Tensor, count: int = 12) -> None:
    """PNG of (real film | human mask | prediction) triples for the first ``count`` test films, three to a row, at
    least 192 px a tile (not for the repo: the films keep their CC BY / NC-SA licences)."""
    from PIL import Image

    triples = []
    for i in range(min(count, len(real.test.images))):
        parts = (real.test.images[i, 0].numpy(), real.test.masks[i, 0].numpy(), logits[i].argmax(0).numpy())
        triples.append(np.concatenate([np.pad(p.astype(np.float32), 1, constant_values=0.5) for p in parts], 1))
    triples += [np.full_like(triples[0], 0.5)] * (-len(triples) % 3)
    grid = np.concatenate([np.concatenate(triples[i : i + 3], 1) for i in range(0, len(triples), 3)], 0)
    image = Image.fromarray((grid * 255).astype(np.uint8))
    scale = max(1, 192 // real.test.images.shape[-1])
    image.resize((image.width * scale, image.height * scale), Image.NEAREST).save(path)


def transfer_table(real_root: Path, size: int, out: Path, *, renderers: tuple[str, ...] = RENDERERS, films: int = 800,
                   steps: int = 600, seeds: tuple[int, ...] = (0, 1, 2)) -> list[dict]:
    """Every row of the benchmark at ``size`` px; writes ``results-<size>.json`` and the sheet under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    real = real_split(real_root, size, out)
    n_test = len(real.test.images)
    print(f"{size} px: real train {len(real.train.images)}, test {n_test} films ({real.lateral_left_out} lateral left out)", flush=True)
    rows, timings = [], {}
    mask, threshold = best_fixed_mask(real.train)
    rows.append(summarise(f"fixed mask (real train mean >= {threshold:.2f})", [dice_per_image(fixed_mask_logits(mask, n_test), real.test.masks).numpy()], rng))
    sets = {"real": real.train}
    for renderer in renderers:
        started = time.perf_counter()
        sets[renderer] = rendered_set(renderer, films, size)
        timings[f"render {renderer}"] = time.perf_counter() - started
        mean_mask = sets[renderer].masks[:, 0].float().mean(0).numpy() >= 0.5
        rows.append(summarise(f"fixed mask ({renderer} mean >= 0.5)", [dice_per_image(fixed_mask_logits(mean_mask, n_test), real.test.masks).numpy()], rng))
        print(f"  rendered {films} {renderer} films in {timings[f'render {renderer}']:.0f} s", flush=True)
    for name in (*renderers, "real"):
        started, per_seed = time.perf_counter(), []
        for seed in seeds:
            net = train(sets[name], steps, seed)
            logits = predict(net, real.test.images)
            per_seed.append(dice_per_image(logits, real.test.masks).numpy())
            if name == "projection" and seed == seeds[0]:
                sheet(out / f"sheet-projection-{size}.png", real, logits)
        timings[f"train {name}"] = time.perf_counter() - started
        rows.append(summarise(f"trained on {name}" + (" (other half)" if name == "real" else f" ({films} films)"), per_seed, rng))
        print(f"  {rows[-1]['row']}: {rows[-1]['mean']:.3f} +- {rows[-1]['sd']:.3f} ({timings[f'train {name}']:.0f} s)", flush=True)
    result = {"size": size, "films": films, "steps": steps, "seeds": list(seeds), "test_films": n_test, "train_films": len(real.train.images),
              "lateral_left_out": real.lateral_left_out, "rows": rows, "seconds": timings}
    (out / f"results-{size}.json").write_text(json.dumps(result, indent=1))
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| row | seeds | Dice mean | sd over seeds | seed min-max | 95% CI (films) |", "|---|---|---|---|---|---|"]
    for r in rows:
        spread = f"{r['min']:.3f}-{r['max']:.3f}" if r["seeds"] > 1 else "-"
        sd = f"{r['sd']:.3f}" if r["seeds"] > 1 else "-"
        lines.append(f"| {r['row']} | {r['seeds']} | {r['mean']:.3f} | {sd} | {spread} | {r['ci'][0]:.3f}-{r['ci'][1]:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", type=Path, required=True, help="the covid-lungs folder (index.csv, images/, masks/)")
    parser.add_argument("--out", type=Path, default=REPO / "bench/out/lungs")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64])
    parser.add_argument("--renderers", nargs="+", choices=RENDERERS, default=list(RENDERERS))
    parser.add_argument("--films", type=int, default=800, help="rendered training films per renderer")
    parser.add_argument("--steps", type=int, default=600, help="training steps (batch 16) of every trained row")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    for size in args.sizes:
        rows = transfer_table(args.real, size, args.out, renderers=tuple(args.renderers), films=args.films, steps=args.steps, seeds=tuple(range(args.seeds)))
        table = f"### {size} px\n\n{markdown(rows)}\n"
        (args.out / f"table-{size}.md").write_text(table)
        print(table, flush=True)


if __name__ == "__main__":
    main()
