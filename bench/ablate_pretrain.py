"""Which pre-training settings let a model learn a run's data: train variants on the same shards, score each.

Every variant trains with ``synthvlp.pretrain.engine.train`` on the run's ``dataset/train-*.tar`` (its config plus
the variant's overrides) and is scored on the run's test split: zero-shot mean AUC over ``plan.findings``
(CheXzero prompt pairs, the evaluate stage's code) and the pointing game over the phantom masks with both map
kinds. ``--supervised`` variants instead train the image tower alone with a linear head on the labels (BCE),
the ceiling any image-text objective can reach with that tower and budget. Results append to a JSONL file, one
line per variant, so an interrupted sweep keeps what it finished.

    .venv/bin/python bench/ablate_pretrain.py runs/quickstart --out bench/out/ablate.jsonl \\
        --variant vit-pairs "pretrain.model=synthvlp-tiny pretrain.lr=0.0003" \\
        --variant cnn-labels "pretrain.model=synthvlp-cnn-tiny pretrain.targets=labels" \\
        --supervised vit "synthvlp-tiny" --supervised cnn "synthvlp-cnn-tiny"
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from synthvlp.config import load_config
from synthvlp.evaluation.benchmarks import load_benchmark
from synthvlp.evaluation.grounding import ground_set
from synthvlp.evaluation.inference import MAP_KINDS, ImageTextEngine
from synthvlp.evaluation.zeroshot import mean_auc_interval, score_classes
from synthvlp.models import build_clip
from synthvlp.pretrain.engine import train


def score(checkpoint: Path, run: Path, classes: list[str], seed: int) -> dict:
    """Zero-shot AUC per class and mean, pointing game per map kind, on the run's test split."""
    engine = ImageTextEngine.from_checkpoint(checkpoint)
    test = load_benchmark("shards", sorted((run / "dataset").glob("test-*.tar")), classes=classes)
    probabilities = engine.zero_shot_probabilities(engine.encode_images(len(test), test.open), classes)
    aucs = {r.name: round(r.auc, 3) for r in score_classes(probabilities, test.labels, classes, 0, seed)}
    mean = mean_auc_interval(probabilities, test.labels, classes, 10, 200, seed)
    pointing = {}
    for kind in MAP_KINDS if test.regions else ():
        _, summary = ground_set(engine, test, bootstrap=0, kind=kind)
        pointing[kind] = {s["label"]: [round(s["pointing"], 3), round(s["chance"], 3)] for s in summary}
    return {"mean_auc": round(mean["mean_auc"], 3), "mean_auc_ci": [round(v, 3) for v in mean["mean_auc_ci"]], "auc": aucs, "pointing": pointing}


def clip_variant(run: Path, name: str, overrides: list[str], scratch: Path) -> dict:
    config = load_config(run / "config.yaml", ["pretrain.tensorboard=false", *overrides])
    began = time.perf_counter()
    result = train(config.pretrain, sorted((run / "dataset").glob("train-*.tar")), scratch / name, config.run.seed, say=lambda _: None)
    seconds = time.perf_counter() - began
    return {"variant": name, "kind": "clip", "overrides": overrides, "steps": result.steps, "train_s": round(seconds),
            "samples_per_s": round(result.samples_per_second, 1), "final_loss": round(result.final_loss, 3),
            **score(scratch / name / "checkpoint.pt", run, list(config.plan.findings), config.run.seed)}


def supervised_variant(run: Path, name: str, model_name: str, steps: int, lr: float, batch: int) -> dict:
    """The image tower of ``model_name`` plus a linear head, trained on the labels with BCE (the same budget)."""
    from sklearn.metrics import roc_auc_score

    config = load_config(run / "config.yaml")
    classes = list(config.plan.findings)
    torch.manual_seed(config.run.seed)
    clip, train_transform, eval_transform, _ = build_clip(model_name)
    data = {split: load_benchmark("shards", sorted((run / "dataset").glob(f"{split}-*.tar")), classes=classes) for split in ("train", "test")}
    images = [data["train"].open(i).convert("RGB") for i in range(len(data["train"]))]
    labels = torch.tensor(np.nan_to_num(data["train"].labels), dtype=torch.float32)
    visual = clip.visual
    head = torch.nn.Linear(visual.output_dim, len(classes))
    optimiser = torch.optim.AdamW([*visual.parameters(), *head.parameters()], lr=lr, weight_decay=0.1)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.06)
    rng = np.random.default_rng(config.run.seed)
    began = time.perf_counter()
    for _ in range(steps):
        pick = rng.integers(0, len(images), batch)
        batch_images = torch.stack([train_transform(images[i]) for i in pick])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(visual(batch_images)), labels[pick])
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
        schedule.step()
    seconds = time.perf_counter() - began
    visual.eval()
    test = data["test"]
    with torch.no_grad():
        scores = torch.sigmoid(head(torch.cat([visual(torch.stack([eval_transform(test.open(i).convert("RGB")) for i in range(b, min(b + 128, len(test)))]))
                                               for b in range(0, len(test), 128)]))).numpy()
    aucs = {c: round(float(roc_auc_score(test.labels[:, k], scores[:, k])), 3) for k, c in enumerate(classes)}
    return {"variant": name, "kind": "supervised", "model": model_name, "steps": steps, "lr": lr, "train_s": round(seconds),
            "mean_auc": round(float(np.mean(list(aucs.values()))), 3), "auc": aucs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="A run folder with exported shards (dataset/train-*.tar, test-*.tar).")
    parser.add_argument("--out", type=Path, default=Path("bench/out/ablate.jsonl"))
    parser.add_argument("--variant", nargs=2, action="append", default=[], metavar=("NAME", "OVERRIDES"), help="A CLIP variant: its config overrides, space-separated.")
    parser.add_argument("--supervised", nargs=2, action="append", default=[], metavar=("NAME", "MODEL"), help="A supervised ceiling of a model's image tower.")
    parser.add_argument("--steps", type=int, default=300, help="Steps of the supervised variants.")
    parser.add_argument("--lr", type=float, default=1e-3, help="Learning rate of the supervised variants.")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    scratch = args.out.parent / "ablate-checkpoints"
    for name, overrides in args.variant:
        line = clip_variant(args.run, name, overrides.split(), scratch)
        _append(args.out, line)
    for name, model_name in args.supervised:
        _append(args.out, supervised_variant(args.run, name, model_name, args.steps, args.lr, 64))


def _append(path: Path, line: dict) -> None:
    print(json.dumps(line), flush=True)
    with open(path, "a") as handle:
        handle.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
