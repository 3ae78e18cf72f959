"""RaSD synthesis throughput: ours vs the public reference (yweibs/RaSD) vs torchio, in one command.

Each (tool, case) runs in a fresh subprocess so peak memory is its own: peak RSS minus the RSS after imports and
set-up. Peers run under their own interpreter (``--peer-python``, a venv with torch, torchio, SimpleITK, scipy)
from a checkout of the reference outside this repository (``--peer-root``). Besides seconds per sample, each worker
reports label volume fractions and an intensity histogram, so a speed-up that comes from doing less shows.

    python bench/bench_rasd.py --peer-python /work/peer-venvs/rasd/bin/python --peer-root /work/peers/RaSD

``--downstream DATA`` instead runs the transfer check: a 2D RaSD pre-training, then lung segmentation fine-tuned
from it and from scratch at 10% and 100% of the training labels, fixed split, several seeds (see ``downstream``).

    python bench/bench_rasd.py --downstream ../shared/data/covid-lungs
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {"3d": {"size": 128, "ndim": 3, "labels": 8}, "2d": {"size": 512, "ndim": 2, "labels": 16}}
BINS = 10


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn, repeats: int) -> tuple[float, list]:
    """Best of ``repeats`` timed calls after a warm-up: other jobs share the cores, and the minimum is the
    estimate least inflated by them (the median is printed alongside in the raw output)."""
    fn()  # warm-up: allocator, thread pool, lazy kernels
    seconds, outputs = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        outputs.append(fn())
        seconds.append(time.perf_counter() - start)
    print(f"timings {[round(s, 3) for s in seconds]} median {statistics.median(seconds):.3f}", file=sys.stderr)
    return min(seconds), outputs


def _stats(torch, labels: list, images: list, num_labels: int) -> dict:
    out = {}
    if labels:
        fractions = [torch.bincount(lab.flatten().long(), minlength=num_labels).float() / lab.numel() for lab in labels]
        ordered = torch.stack([f.sort(descending=True).values for f in fractions])
        out["label_fractions_sorted"] = ordered.mean(0).tolist()
    if images:
        hist = [torch.histc(img.float(), BINS, 0.0, 1.0) / img.numel() for img in images]
        out["histogram"] = torch.stack(hist).mean(0).tolist()
    return out


def worker_ours(case: dict, repeats: int, label_file: str) -> dict:
    import torch

    from synthvlp.rasd import AppearanceConfig, FieldsConfig, RandAppearance, RandLabelMap, RaSDSynthesizer

    shape = (case["size"],) * case["ndim"]
    fields = FieldsConfig(num_labels=case["labels"])
    label_map, appearance = RandLabelMap(fields, shape, seed=0), RandAppearance(AppearanceConfig(), seed=0)
    synth = RaSDSynthesizer(fields, AppearanceConfig(), shape, seed=0)
    fixed = label_map(1)
    torch.save(fixed, label_file)
    base = _rss_mib()
    t_label, labels = _timed(lambda: label_map(1), repeats)
    t_app, _ = _timed(lambda: appearance(fixed, case["labels"]), repeats)
    t_whole, pairs = _timed(lambda: synth(1), repeats)
    stats = _stats(torch, [lab for _, lab in pairs], [img for img, _ in pairs], case["labels"])
    return {"label": t_label, "appearance": t_app, "whole": t_whole, "peak_mib": _peak_mib() - base, **stats}


def worker_reference(case: dict, repeats: int, label_file: str, peer_root: str) -> dict:
    import numpy as np
    import torch

    sys.path.insert(0, str(Path(peer_root) / ("gendata" if case["ndim"] == 3 else "pretrain2d")))
    from utils.dataloader_gen_online import DatasetGEN3D  # the reference's generator (2D or 3D by folder)
    from utils.gen_img import labels_to_image
    from utils.gen_lab import draw_perlin

    size, ndim, k = case["size"], case["ndim"], case["labels"]
    gen = DatasetGEN3D(in_shape=(size,), num_label=k)
    shape = gen.in_shape

    def label_map():  # DatasetGEN3D.gen_lab_img without its appearance call
        lab = draw_perlin(out_shape=(k, 1, *shape), scales=(size // 8, size // 4), max_std=1)
        flow = draw_perlin(out_shape=(k, ndim, *shape), scales=(size // 16, size // 8, size // 4), max_std=size // 16)
        return torch.argmax(gen.stn(lab, flow), dim=0)[:, np.newaxis].type(torch.float32)

    fixed = torch.load(label_file).float()
    base = _rss_mib()
    t_label, labels = _timed(label_map, repeats)
    t_app, _ = _timed(lambda: labels_to_image(fixed, k), repeats)
    t_whole, pairs = _timed(gen.gen_lab_img, repeats)
    stats = _stats(torch, [lab for _, lab in pairs], [img for img, _ in pairs], k)
    return {"label": t_label, "appearance": t_app, "whole": t_whole, "peak_mib": _peak_mib() - base, **stats}


def worker_torchio(case: dict, repeats: int, label_file: str) -> dict:
    import math

    import torch
    import torchio as tio

    labels = torch.load(label_file)[0]  # (1, *spatial)
    if case["ndim"] == 2:
        labels = labels.unsqueeze(-1)  # torchio is 3D: a 2D image is (C, W, H, 1)
    subject = tio.Subject(label=tio.LabelMap(tensor=labels))
    chain = tio.Compose(
        [
            tio.RandomLabelsToImage(label_key="label", image_key="image", mean=[(0.0, 1.0)] * case["labels"]),
            tio.RandomBiasField(),
            tio.RandomNoise(std=(0.05, 0.4)),
            tio.RandomBlur(std=(0.0, 1.0)),
            tio.RescaleIntensity(out_min_max=(0, 1)),
            tio.RandomGamma(log_gamma=(math.log(0.5), math.log(1.5))),
        ]
    )
    base = _rss_mib()
    t_app, outputs = _timed(lambda: chain(subject)["image"].data, repeats)
    t_intensity, _ = _timed(lambda: chain.transforms[0](subject), repeats)
    stats = _stats(torch, [], outputs, case["labels"])
    return {"appearance": t_app, "intensity_only": t_intensity, "peak_mib": _peak_mib() - base, **stats}


def run_worker(args: argparse.Namespace) -> None:
    try:  # ours and the peers get the same pools; a peer's interpreter has no synthvlp
        from synthvlp.threads import apply

        apply("compute", args.threads)
    except ImportError:
        import torch

        torch.set_num_threads(args.threads)
    case = CASES[args.case]
    if args.worker == "ours":
        result = worker_ours(case, args.repeats, args.label_file)
    elif args.worker == "reference":
        result = worker_reference(case, args.repeats, args.label_file, args.peer_root)
    else:
        result = worker_torchio(case, args.repeats, args.label_file)
    print("RESULT " + json.dumps(result))


def spawn(python: str, worker: str, case: str, repeats: int, args: argparse.Namespace, label_file: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    cmd = [python, __file__, "--worker", worker, "--case", case, "--repeats", str(repeats)]
    cmd += ["--threads", str(args.threads), "--label-file", label_file, "--peer-root", args.peer_root]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    print(f"{worker} {case}: " + " | ".join(line for line in done.stderr.splitlines() if line.startswith("timings")))
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"{worker} {case} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    # the machine is shared: the 1-minute load average after each worker says how quiet the run was
    return {**json.loads(lines[-1][len("RESULT ") :]), "load_after": os.getloadavg()[0]}


def table(results: dict, threads: int) -> str:
    rows = [
        f"Seconds per sample (best of the timed repeats), batch 1, CPU, torch.set_num_threads({threads}); peak = "
        "RSS above the interpreter after imports and set-up.",
        "",
        "| case | step | ours (s) | reference (s) | torchio (s) | ref / ours | torchio / ours "
        "| peak MiB ours / ref / torchio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in results:
        ours, ref, tio_ = results[case]["ours"], results[case]["reference"], results[case]["torchio"]
        peaks = f"{ours['peak_mib']:.0f} / {ref['peak_mib']:.0f} / {tio_['peak_mib']:.0f}"
        for step in ("label", "appearance", "whole"):
            theirs = tio_.get(step)
            rows.append(
                f"| {case} | {step} | {ours[step]:.3f} | {ref[step]:.3f} | "
                f"{'-' if theirs is None else f'{theirs:.3f}'} | {ref[step] / ours[step]:.1f}x | "
                f"{'-' if theirs is None else f'{theirs / ours[step]:.1f}x'} | {peaks if step == 'whole' else ''} |"
            )
        rows.append(f"| {case} | torchio RandomLabelsToImage alone | | | {tio_['intensity_only']:.3f} | | | |")
    loads = ", ".join(f"{case} {tool} {r['load_after']:.1f}" for case in results for tool, r in results[case].items())
    rows += ["", f"1-minute load average after each worker (2 cores, shared): {loads}."]
    rows += ["", "Distribution check (same settings; mean over the timed samples):", ""]
    for case in results:
        ours, ref, tio_ = results[case]["ours"], results[case]["reference"], results[case]["torchio"]
        fmt = lambda values: " ".join(f"{v:.2f}" for v in values)  # noqa: E731
        rows += [
            f"- {case} label volume fractions, sorted: ours {fmt(ours['label_fractions_sorted'])}; "
            f"reference {fmt(ref['label_fractions_sorted'])}",
            f"- {case} intensity histogram ({BINS} bins on [0, 1]): ours {fmt(ours['histogram'])}; "
            f"reference {fmt(ref['histogram'])}; torchio chain {fmt(tio_['histogram'])}",
        ]
    return "\n".join(rows)


def downstream(args: argparse.Namespace) -> str:
    """Dice of RaSD-initialised vs scratch fine-tuning; mean and 95% t-interval over seeds."""
    import math

    import numpy as np

    from rasd_transfer import finetune_dice, pretrain  # bench/rasd_transfer.py: this check's own small loop

    from synthvlp.evaluation.segmentation_data import load_segmentation_csv
    from synthvlp.rasd import BackboneConfig, FieldsConfig, RaSDConfig, StreamConfig
    from synthvlp.threads import apply

    apply("compute", args.threads)
    size, start = args.size, time.perf_counter()
    backbone = BackboneConfig(name="unet", out_channels=32, channels=(16, 32, 64, 128))
    config = RaSDConfig(
        fields=FieldsConfig(num_labels=8),
        stream=StreamConfig(spatial_size=(size, size), batch_size=8, refresh_fraction=0.25, seed=0),
        backbone=backbone,
    )
    net, losses = pretrain(config, args.pretrain_steps)
    init = net.state_dict()
    first, last = np.mean(losses[:20]), np.mean(losses[-20:])
    print(f"pretrained {args.pretrain_steps} steps in {time.perf_counter() - start:.0f} s: {first:.3f} -> {last:.3f}")
    data = load_segmentation_csv(Path(args.downstream) / "index.csv", size)
    order = np.random.default_rng(0).permutation(len(data.images))  # the fixed split
    test, train = data.subset(order[: args.test_size]), data.subset(order[args.test_size :])
    results: dict[tuple[str, int], list[float]] = {}
    for percent in (10, 100):
        for seed in args.seeds:
            count = max(1, round(len(train.images) * percent / 100))
            subset = train.subset(np.random.default_rng(seed).permutation(len(train.images))[:count])
            for name, weights in (("scratch", None), ("rasd", init)):
                dice = finetune_dice(backbone, weights, subset, test, steps=args.finetune_steps, seed=seed)
                results.setdefault((name, percent), []).append(dice)
                print(f"{percent}% seed {seed} {name}: Dice {dice:.4f}", flush=True)

    def summary(values: list[float]) -> str:
        mean = float(np.mean(values))
        if len(values) < 2:
            return f"{mean:.3f}"
        t95 = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78}.get(len(values), 1.96)
        half = t95 * float(np.std(values, ddof=1)) / math.sqrt(len(values))
        return f"{mean:.3f} [{mean - half:.3f}, {mean + half:.3f}]"

    rows = [
        f"Lung segmentation Dice on {len(test.images)} fixed test images ({size}x{size}), mean [95% t-interval] over "
        f"seeds {args.seeds}; MONAI UNet {backbone.channels}, {args.finetune_steps} fine-tuning steps of batch 8. "
        f"RaSD: {args.pretrain_steps} steps of 2D pre-training (K=8, batch 8); torch threads {args.threads}.",
        "",
        "| training labels | scratch | RaSD init | per-seed scratch / RaSD |",
        "|---|---|---|---|",
    ]
    for percent in (10, 100):
        scratch, rasd = results[("scratch", percent)], results[("rasd", percent)]
        per_seed = ", ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(scratch, rasd))
        count = max(1, round(len(train.images) * percent / 100))
        rows.append(f"| {percent}% ({count}) | {summary(scratch)} | {summary(rasd)} | {per_seed} |")
    rows.append(f"\nWall time {time.perf_counter() - start:.0f} s.")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer-python", default="/work/peer-venvs/rasd/bin/python")
    parser.add_argument("--peer-root", default="/work/peers/RaSD")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats-3d", type=int, default=5)
    parser.add_argument("--repeats-2d", type=int, default=10)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    parser.add_argument("--downstream", metavar="DATA", help="run the transfer check on DATA/index.csv instead")
    parser.add_argument("--size", type=int, default=96, help="downstream image size")
    parser.add_argument("--test-size", type=int, default=60, help="downstream fixed test images")
    parser.add_argument("--pretrain-steps", type=int, default=1500)
    parser.add_argument("--finetune-steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--worker", choices=["ours", "reference", "torchio"], help=argparse.SUPPRESS)
    parser.add_argument("--case", choices=list(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--label-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args)
        return
    if args.downstream:
        text = downstream(args)
        print(text)
        if args.out:
            args.out.write_text(text + "\n")
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            repeats = args.repeats_3d if case == "3d" else args.repeats_2d
            label_file = str(Path(tmp) / f"{case}.pt")
            results[case] = {"ours": spawn(sys.executable, "ours", case, repeats, args, label_file)}
            for peer in ("reference", "torchio"):
                results[case][peer] = spawn(args.peer_python, peer, case, repeats, args, label_file)
            timings = {tool: {k: v for k, v in r.items() if isinstance(v, float)} for tool, r in results[case].items()}
            print(f"{case}: {json.dumps(timings)}", flush=True)
    text = table(results, args.threads)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
