"""BENCHMARKS.md's runner tables, generated from the runner's JSON files, so a claim cannot drift from its evidence.

The newest file per (case, label) in ``bench/results`` becomes one row; the table replaces whatever stands
between the ``<!-- bench-runner:start -->`` and ``<!-- bench-runner:end -->`` markers. ``--check`` rewrites
nothing and exits 1 when BENCHMARKS.md differs from what the JSON files say (the default test suite runs it).

    python bench/tables.py            # rewrite the table in BENCHMARKS.md
    python bench/tables.py --check
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parent
START, END = "<!-- bench-runner:start -->", "<!-- bench-runner:end -->"


def newest(folder: Path) -> list[dict]:
    """The newest record per (case, label), ordered by case then label."""
    chosen: dict[tuple[str, str], dict] = {}
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        key = (record["case"], record["label"])
        if key not in chosen or record["started"] > chosen[key]["started"]:
            chosen[key] = record | {"file": path.name}
    return [chosen[k] for k in sorted(chosen)]


def _number(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def row(record: dict) -> str:
    s = record["summary"]
    sides = " / ".join(f"{side} {_number(v)}" for side, v in s["side_medians"].items())
    if s["target"] is None:
        verdict = "no target"
    else:
        verdict = f"{'<=' if s['at_most'] else '>='} {s['target']:g}: " + ("**met**" if s["met"] else "**missed**")
    m = record["machine"]
    git = m["git"]["revision"] + ("+" if m["git"]["dirty"] else "")
    load = f"{s['load_range'][0]:.1f}-{s['load_range'][1]:.1f} (nice {m['nice']})"
    threads = f"{m['threads_compute']}/{m['threads_small']}" + (f", OMP_WAIT_POLICY={m['env']['OMP_WAIT_POLICY']}" if m["env"].get("OMP_WAIT_POLICY") else "")
    name = record["case"] + (f" ({record['label']})" if record["label"] else "") + (" [smoke size]" if record["size"] == "smoke" else "")
    return (f"| {name} | {s['unit']}: {sides} | {s['ratio_name']} **{s['ratio_median']:.2f}** "
            f"[{s['ratio_min']:.2f}-{s['ratio_max']:.2f}], {len(s['ratios'])} rounds | {verdict} | {load} | {threads} | "
            f"{git}, {record['started'][:16]}Z | `{record['file']}` |")


def table(records: list[dict]) -> str:
    lines = [
        START,
        "| case | side medians | ratio median [min-max] | target | load (1-min, before-after) | threads compute/small | revision, UTC | evidence (bench/results) |",
        "|---|---|---|---|---|---|---|---|",
        *(row(r) for r in records),
        END,
    ]
    return "\n".join(lines)


def render(document: str, records: list[dict]) -> str:
    """``document`` with the runner table between the markers replaced (markers must be present)."""
    head, marker, rest = document.partition(START)
    if not marker or END not in rest:
        raise SystemExit(f"BENCHMARKS.md has no {START} ... {END} block")
    return head + table(records) + rest.split(END, 1)[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=BENCH / "results")
    parser.add_argument("--doc", type=Path, default=BENCH.parent / "BENCHMARKS.md")
    parser.add_argument("--check", action="store_true", help="Exit 1 if the document is not what the JSON files say.")
    args = parser.parse_args(argv)
    document = args.doc.read_text()
    wanted = render(document, newest(args.results))
    if args.check:
        if wanted != document:
            print(f"{args.doc} is out of date with {args.results}; run python bench/tables.py")
            return 1
        return 0
    args.doc.write_text(wanted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
