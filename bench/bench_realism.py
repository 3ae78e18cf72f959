"""Realism of the phantom renderer against real films, and its speed beside a peer renderer checkout.

1. Renders a run with this checkout (the quickstart config at ``--size`` px with ``images.phantom`` from
   ``--phantom``, projection by default; plan + reports + images stages),
   with ``--appearance``'s ranges if given (a ``synthvlp render calibrate`` fragment),
   then measures it against ``--real`` with the fixed protocol of ``synthvlp render realism`` (discriminator AUC
   over 5 seeds, distances beside real-vs-real) and writes the table, figures, interleaved sheet and the probes' block map to ``--out``.
2. Times ``phantom.render`` (the projection renderer here) at ``--size`` px on one thread for this checkout and,
   if given, a peer checkout
   (``--peer-root``, e.g. ``git archive <rev>`` of the previous renderer unpacked in a scratch folder): each in its
   own child process, in interleaved rounds, so both see the same load. Rates are per second of the child's CPU
   time (what one free core would give) and of wall time.

Run from the repository root:

    .venv/bin/python bench/bench_realism.py --real ../shared/data/nih-real-256 --out /tmp/realism [--peer-root DIR] [--appearance FRAGMENT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from bench_render import PLANS, _entities  # the same six plans as the rendering benchmark (bench/ is on sys.path)

REPO = Path(__file__).resolve().parent.parent


def speed_worker(size: int, images: int, offset: int) -> dict:
    """Render ``images`` images (after one warm-up) with the ``synthvlp`` on ``sys.path``; CPU and wall seconds."""
    import numpy as np

    from synthvlp.generation import phantom

    def one(i: int) -> None:
        phantom.render(_entities(PLANS[i % len(PLANS)]), size, np.random.default_rng(i))

    one(offset)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(images):
        one(offset + i + 1)
    return {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall, "images": images}


def _speed(roots: dict[str, Path], size: int, images: int, rounds: int) -> dict[str, dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    totals = {name: {"cpu_s": 0.0, "wall_s": 0.0, "images": 0} for name in roots}
    for round_ in range(rounds):
        for name, root in roots.items():
            command = [sys.executable, __file__, "--speed-worker", str(size), str(images), str(round_ * 1000)]
            out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=root, env={**env, "PYTHONPATH": str(root)}).stdout
            for key, value in json.loads(out.strip().splitlines()[-1]).items():
                totals[name][key] += value
    return totals


def _render_run(out: Path, size: int, samples: int, renderer: str, appearance: Path | None) -> float:
    run = out / "run"
    command = [sys.executable, "-m", "synthvlp.cli", "run", "configs/quickstart.yaml", f"run.out_dir={run}",
               f"images.size={size}", f"images.phantom={renderer}", f"run.n_samples={samples}", "--stages", "plan,reports,images"]  # fmt: skip
    if appearance is not None:
        ranges = yaml.safe_load(appearance.read_text())["images"]["appearance"]
        command.append(f"images.appearance={json.dumps(ranges)}")
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=REPO.parent / "shared" / "data" / "nih-real-256")
    parser.add_argument("--out", type=Path, default=Path("/tmp/realism-bench"))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--phantom", choices=("projection", "classic"), default="projection", help="images.phantom of the measured run")
    parser.add_argument("--appearance", type=Path, help="a `synthvlp render calibrate` fragment whose images.appearance the measured run uses")
    parser.add_argument("--peer-root", type=Path, help="a checkout of the peer renderer (e.g. the previous revision)")
    parser.add_argument("--speed-images", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-realism", action="store_true")
    parser.add_argument("--speed-worker", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.speed_worker:
        print(json.dumps(speed_worker(*args.speed_worker)))
        return
    sys.path.insert(0, str(REPO))
    from synthvlp.generation.realism import cell_map, interleaved_sheet, load_real, load_rendered, measure
    from synthvlp.store import save_png

    args.out.mkdir(parents=True, exist_ok=True)
    if not args.skip_realism:
        seconds = _render_run(args.out, args.size, args.samples, args.phantom, args.appearance)
        print(f"rendered {args.samples} samples at {args.size} px (plan + reports + images stages) in {seconds:.0f} s")
        real, rendered = load_real(args.real, args.size), load_rendered(args.out / "run", args.size, args.samples)
        result = measure(real, rendered)
        (args.out / "realism.json").write_text(json.dumps(result.as_dict(), indent=2) + "\n")
        interleaved_sheet(real.images, rendered.images).save(args.out / "sheet.png")
        save_png(cell_map(result.probes.cell_auc), args.out / "blocks.png", dpi=100)
        print(result.table())
        print(f"sheet: {args.out / 'sheet.png'}; load average after realism: {os.getloadavg()[0]:.1f}\n")
    roots = {"this checkout": REPO} | ({"peer": args.peer_root.resolve()} if args.peer_root else {})
    totals = _speed(roots, args.size, args.speed_images, args.rounds)
    print(f"Speed at {args.size} px, one thread, {args.rounds} interleaved rounds of {args.speed_images} images "
          f"(load average at the end {os.getloadavg()[0]:.1f}):\n")
    print("| renderer | img/s per CPU second | img/s wall |")
    print("|---|---:|---:|")
    for name, t in totals.items():
        print(f"| {name} | {t['images'] / t['cpu_s']:.1f} | {t['images'] / t['wall_s']:.1f} |")


if __name__ == "__main__":
    main()
