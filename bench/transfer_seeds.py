"""Synthetic-only recipes scored on every film of a real set, over seeds, paired by seed (issue 15, transfer).

A synthetic-only model never sees a real film, so all of a real set can score it, not only its test split: the
975 films of nih-real-256 give each of the SynCXR table's 11 classes at least 10 positives (its 156 test films
give 5 of them), so a class's AUC and the mean over classes are far less noisy than on the test split. Each
run's checkpoint is scored by ``synthvlp evaluate``; runs of different recipes pair by their seed.

The floor is a distribution, not one model: a recipe's architecture randomly initialised with ``--floor-seeds``
seeds (0, 1, ...) and scored the same way. One random-init model's mean AUC over 11 classes varies with its seed
about twice as much as a trained model's (on nih-real-256: sd 0.065 over 40 seeds, 0.41-0.63), so the floor
of a run's own seed, as the run's evaluate stage scores it, cannot say whether that run learned anything.
Recipes may train different models (a 64 px and a 128 px tower, say): each model gets its own floor, and each
recipe is set against its own.

The table gives, per class, each recipe's mean AUC over its seeds and each floor's over its seeds (with the range
of the middle 95% of floor seeds). Under it, each recipe's mean AUC over classes (95% t-interval over seeds) is
set against its floor's mean (Welch's 95% interval of the difference and its p), and each later recipe against
the first, seed by seed: the mean paired difference, its 95% t-interval, how many seeds are higher and the exact
two-sided sign-flip p (every assignment of signs to the paired differences).

Scores are cached under ``--out/scores/<recipe>/<run>/`` and ``--out/floors/<model>/seed-<k>/`` (a rerun rescoring
nothing already scored); the table goes to ``--out/transfer.md`` and a strip plot of every model's mean AUC
(each recipe's seeds beside the floors') to ``--out/transfer.png``. A run of a seed the first recipe lacks is
scored but not paired. Run from the repository root (about 25 s a run and 6 s a floor on one busy core):

    PYTHONPATH=$PWD .venv/bin/python bench/transfer_seeds.py --real ../shared/data/nih-real-256 --out bench/out/transfer \\
        --recipe classic runs/t/s2-classic runs/t/s3-classic --recipe projection runs/t/s2-projection runs/t/s3-projection
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from scipy import stats

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from synthvlp.evaluation.harness import benchmark_folders, mean_auc, read_csv, t_interval  # noqa: E402


@dataclass(frozen=True)
class Scores:
    """One model's zero-shot AUCs on the real set: per class, and the mean over the classes counted."""

    seed: int
    auc: dict[str, float]
    mean: float


def paired(first: list[float], second: list[float]) -> dict[str, float]:
    """``second - first`` seed by seed: mean, 95% t-interval, seeds higher, and the exact two-sided sign-flip p
    (the share of the 2^n sign assignments whose mean is at least as far from zero as the observed one)."""
    d = np.asarray(second) - np.asarray(first)
    mean, low, high = t_interval(list(d))
    flips = np.array([np.mean(d * np.array(signs)) for signs in itertools.product((1.0, -1.0), repeat=len(d))])
    p = float(np.mean(np.abs(flips) >= abs(d.mean()) - 1e-12))
    return {"mean": mean, "low": low, "high": high, "higher": int((d > 0).sum()), "n": len(d), "p": p}


def above_floor(trained: list[float], floor: list[float]) -> dict[str, float]:
    """Trained means minus the floor's: the difference of means with Welch's 95% interval and two-sided p."""
    test = stats.ttest_ind(trained, floor, equal_var=False)
    low, high = test.confidence_interval(0.95)
    return {"mean": float(np.mean(trained) - np.mean(floor)), "low": float(low), "high": float(high), "p": float(test.pvalue)}


def run_config(run: Path) -> dict:
    """The config a run saved (its seed and model are read from it)."""
    config = run / "config.yaml"
    if not config.is_file():
        raise SystemExit(f"{run}: no config.yaml; give run folders (each with pretrain/checkpoint.pt)")
    return yaml.safe_load(config.read_text())


def read_scores(folder: Path, seed: int) -> Scores:
    """The scores ``synthvlp evaluate`` (or ``evaluate_set``) wrote into ``folder``'s one benchmark folder."""
    [table] = benchmark_folders(folder)
    return Scores(seed, {row["name"]: float(row["auc"]) for row in read_csv(table / "zeroshot.csv")}, mean_auc(table)[0])


def score(run: Path, seed: int, real: Path, benchmark: str, split: str | None, folder: Path, threads: int) -> Scores:
    """The checkpoint of ``run`` (trained with ``seed``) scored on ``real`` by ``synthvlp evaluate`` (cached in
    ``folder``)."""
    if not (folder / "results.md").is_file():
        command = [sys.executable, "-m", "synthvlp.cli", "evaluate", str(run / "pretrain" / "checkpoint.pt"), "--benchmark", benchmark,
                   "--data", str(real), "--out", str(folder), "--seed", str(seed), "--threads", str(threads)]
        subprocess.run(command + (["--split", split] if split else []), check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return read_scores(folder, seed)


def floor_scores(run: Path, real: Path, benchmark: str, split: str | None, seeds: range, folder: Path) -> list[Scores]:
    """Random-init models of ``run``'s architecture, one per seed, scored on ``real`` with the run's evaluate
    settings (no grounding or bootstrap: only the AUCs are read), each cached in ``folder/seed-<k>``."""
    from synthvlp.checkpoints import ClipCheckpoint, load
    from synthvlp.config import load_config
    from synthvlp.evaluation.benchmarks import load_benchmark
    from synthvlp.evaluation.harness import evaluate_set
    from synthvlp.evaluation.inference import ImageTextEngine

    settings = load_config(run / "config.yaml").evaluate.model_copy(update={"grounding": False, "bootstrap": 0})
    record, labelled = None, None
    for seed in seeds:
        out = folder / f"seed-{seed}"
        if not (out / "done").is_file():
            if record is None:
                record = load(run / "pretrain" / "checkpoint.pt", ClipCheckpoint)
                labelled = load_benchmark(benchmark, real)
                labelled = labelled.only_split(split) if split else labelled
            engine = ImageTextEngine.from_checkpoint(record, random_init_seed=seed)
            evaluate_set(engine, labelled, settings.classes or labelled.classes, settings, out / benchmark, seed=seed)
            (out / "done").touch()
    return [read_scores(folder / f"seed-{seed}", seed) for seed in seeds]


def _paired_text(result: dict[str, float]) -> str:
    return f"{result['mean']:+.3f} ({result['low']:+.3f} to {result['high']:+.3f}) | {result['higher']} of {result['n']} | {result['p']:.3f}"


def floor_title(model: str, floors: dict[str, list[Scores]]) -> str:
    """A floor's column title; the model is named only when recipes train more than one."""
    return f"random-init {model if len(floors) > 1 else 'floor'} ({len(floors[model])} seeds)"


def report(recipes: dict[str, list[Scores]], floors: dict[str, list[Scores]], models: dict[str, str]) -> str:
    """The per-class table, each recipe against its model's floor and each later recipe against the first, as
    Markdown. ``floors`` maps a model to its random-init scores, ``models`` a recipe to the model it trains."""
    names = list(recipes)
    classes = list(next(iter(floors.values()))[0].auc)
    lines = ["| class | " + " | ".join(f"{n} ({len(recipes[n])} seeds)" for n in names) + " | "
             + " | ".join(floor_title(m, floors) for m in floors) + " |",
             "|---|" + "---:|" * (len(names) + len(floors))]
    for c in classes:
        cells = [f"{np.mean([s.auc[c] for s in recipes[n]]):.3f}" for n in names]
        for floor in floors.values():
            aucs = [s.auc[c] for s in floor]
            cells.append(f"{np.mean(aucs):.3f} ({np.percentile(aucs, 2.5):.3f}-{np.percentile(aucs, 97.5):.3f})")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    cells = [f"**{np.mean([s.mean for s in recipes[n]]):.3f}**" for n in names]
    for floor in floors.values():
        means = [s.mean for s in floor]
        cells.append(f"{np.mean(means):.3f} (sd {np.std(means, ddof=1):.3f}; 95% of seeds {np.percentile(means, 2.5):.3f}-{np.percentile(means, 97.5):.3f})")
    lines.append("| **mean over classes** | " + " | ".join(cells) + " |")
    lines += ["", "| recipe | mean AUC (95% t-interval over seeds) | above its floor's mean (Welch 95% interval) | Welch p |",
              "|---|---|---|---:|"]
    for n in names:
        means = [s.mean for s in recipes[n]]
        floor_means = [s.mean for s in floors[models[n]]]
        if len(means) < 2:  # no spread to test: say where the one run falls among the floor's seeds
            below = np.mean(np.array(floor_means) < means[0])
            lines.append(f"| {n} | {means[0]:.3f} (one seed) | {means[0] - np.mean(floor_means):+.3f} (above {below:.0%} of the floor's seeds) | - |")
            continue
        mean, low, high = t_interval(means)
        gap = above_floor(means, floor_means)
        lines.append(f"| {n} | {mean:.3f} ({low:.3f}-{high:.3f}) | {gap['mean']:+.3f} ({gap['low']:+.3f} to {gap['high']:+.3f}) | {gap['p']:.3f} |")
    first = {s.seed: s for s in recipes[names[0]]}
    pairs = [(n, [s for s in recipes[n] if s.seed in first]) for n in names[1:]]
    if any(common for _, common in pairs):
        lines += ["", f"| recipe | paired with {names[0]}, seed by seed: difference (95% t-interval) | seeds higher | sign-flip p |",
                  "|---|---|---:|---:|"]
        for n, common in pairs:
            if common:
                lines.append(f"| {n} | " + _paired_text(paired([first[s.seed].mean for s in common], [s.mean for s in common])) + " |")
    return "\n".join(lines) + "\n"


def plot(recipes: dict[str, list[Scores]], floors: dict[str, list[Scores]], path: Path, title: str) -> None:
    """Every model's mean AUC as a point, one column per recipe and one per floor, with each column's mean and
    95% t-interval over seeds as a bar: whether a recipe's seeds sit above the floor's spread reads at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from synthvlp.store import save_png

    # each floor's model (named when there are several) on a line of its own, or the long names overlap
    labels = {m: "\n".join(["random init", *([m] if len(floors) > 1 else []), f"({len(f)} seeds)"]) for m, f in floors.items()}
    columns = [*recipes.items(), *((labels[m], f) for m, f in floors.items())]
    figure, axis = plt.subplots(figsize=(1.6 * len(columns) + 1.5, 4))
    jitter = np.random.default_rng(0)
    for x, (name, scores) in enumerate(columns):
        means = [s.mean for s in scores]
        colour = "grey" if x >= len(recipes) else f"C{x}"
        axis.scatter(x + jitter.uniform(-0.12, 0.12, len(means)), means, s=14, color=colour, alpha=0.7, zorder=2)
        if len(means) > 1:
            mean, low, high = t_interval(means)
            axis.errorbar(x + 0.25, mean, yerr=[[mean - low], [high - mean]], fmt="o", color="black", capsize=4, zorder=3)
    axis.axhline(0.5, color="black", linestyle="--", linewidth=0.8)
    axis.set_xticks(range(len(columns)), [name for name, _ in columns])
    axis.set(ylabel="mean zero-shot AUC over classes", title=title)
    figure.tight_layout()
    save_png(figure, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", nargs="+", action="append", required=True, metavar=("NAME", "RUN"),
                        help="a recipe's name, then its run folders (one per seed); repeat for each recipe, the first is the reference")
    parser.add_argument("--real", type=Path, required=True, help="the real set (a benchmark folder or label file)")
    parser.add_argument("--benchmark", default="nih", help="its benchmark adapter")
    parser.add_argument("--split", help="score one split only (default: every film, as no run here trained on them)")
    parser.add_argument("--floor-seeds", type=int, default=20, help="random-init models in the floor (seeds 0 to N-1)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.floor_seeds < 2:
        parser.error("--floor-seeds: at least 2, for a spread")
    recipes: dict[str, list[Scores]] = {}
    models: dict[str, str] = {}  # recipe -> the model its runs train
    references: dict[str, Path] = {}  # model -> the first run training it, whose checkpoint the floor re-initialises
    for name, *runs in args.recipe:
        if not runs:
            parser.error(f"--recipe {name}: give its run folders after the name")
        configs = [run_config(Path(run)) for run in runs]
        seeds = [int(config["run"]["seed"]) for config in configs]
        if len({Path(run).name for run in runs}) < len(runs) or len(set(seeds)) < len(runs):
            parser.error(f"--recipe {name}: two of its runs share a folder name or a seed; give one run per seed")
        trained = {config["pretrain"]["model"] for config in configs}
        if len(trained) > 1:
            parser.error(f"--recipe {name}: its runs train {sorted(trained)}; one recipe is one model, so one floor")
        models[name] = trained.pop()
        references.setdefault(models[name], Path(runs[0]))
        recipes[name] = [score(Path(run), seed, args.real, args.benchmark, args.split, args.out / "scores" / name / Path(run).name, args.threads)
                         for run, seed in zip(runs, seeds, strict=True)]
        print(f"{name}: scored {len(runs)} runs", flush=True)
    import torch

    torch.set_num_threads(args.threads)
    floors = {model: floor_scores(run, args.real, args.benchmark, args.split, range(args.floor_seeds), args.out / "floors" / model)
              for model, run in references.items()}
    text = report(recipes, floors, models)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "transfer.md").write_text(text)
    plot(recipes, floors, args.out / "transfer.png", f"Zero-shot on {args.real.name}{f' ({args.split})' if args.split else ''}: each point a model")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
