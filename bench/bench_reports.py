"""Report-writing throughput: the openai client against `synthvlp serve --engine transformers`, vs the server's
own ceiling, in one command.

The server is started through the real CLI on 127.0.0.1. For each client concurrency the reports stage writes
``--samples`` reports (one attempt each, so reports/s is requests/s) and the server's batch statistics are read
before and after. The ceiling is the server's completions per second of generate time in full batches
(``max_batch`` requests), i.e. what it does when never starved; the client at its best concurrency should reach
at least 0.9 of it. Peak memory: client ru_maxrss and the server's VmHWM.

    python bench/bench_reports.py                      # tiny random Llama built from a config (seconds to build)
    python bench/bench_reports.py --model path/to/SmolLM2-135M-Instruct.Q4_1.gguf --samples 32
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from synthvlp.serving.health import NotHealthy, wait_healthy

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="HF folder or .gguf; default builds the tiny random Llama of the tests")
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, help="Also write the Markdown table here.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args.samples, [int(c) for c in args.concurrency.split(",")], args.max_batch, args.max_tokens, Path(tmp), args.model)
    text = _markdown(args, result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)


def measure(samples: int, concurrency: list[int], max_batch: int, max_tokens: int, folder: Path, model: Path | None = None) -> dict:
    """Start the server on a free port, write ``samples`` reports at each client concurrency, stop the server.

    Returns the rows, the server's ceiling, the best client rate and both processes' peak memory."""
    model = model or _tiny_model(folder / "tiny-lm")
    port = _free_port()
    server = _start_server(model, port, max_batch, folder / "server.log")
    try:
        rows, ceiling, server_peak = _measure(port, samples, concurrency, max_batch, max_tokens)
    finally:
        server.terminate()
        server.wait(30)
    best = max(rows, key=lambda r: r["reports_per_s"])
    return {"rows": rows, "ceiling": ceiling, "best_per_s": best["reports_per_s"], "best_concurrency": best["concurrency"],
            "client_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "server_peak_mib": server_peak}


def _free_port() -> int:
    with socket.socket() as probe:  # other benchmarks and tests on the machine may hold any fixed port
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _tiny_model(folder: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from tiny_lm import build_tiny_lm

    return build_tiny_lm(folder)


def _start_server(model: Path, port: int, max_batch: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "synthvlp.cli", "serve", str(model), "--port", str(port), "--max-batch", str(max_batch)]
    process = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        wait_healthy(process, f"http://127.0.0.1:{port}/health", timeout_s=900)
    except NotHealthy as exc:
        process.kill()
        raise SystemExit(f"server {exc}: {log.read_text()[-2000:]}") from None
    return process


def _measure(port: int, samples: int, concurrency: list[int], max_batch: int, max_tokens: int) -> tuple[list[dict], float, float]:
    from synthvlp.config import load_config
    from synthvlp.entities import EntityExtractor, load_vocabulary
    from synthvlp.generation.planner import plan_run
    from synthvlp.generation.reports import write_reports
    from synthvlp.generation.writers.openai_client import OpenAIWriter

    base = f"http://127.0.0.1:{port}"
    vocab = load_vocabulary()
    extractor = EntityExtractor(vocab)
    rows = []
    for run, level in enumerate([0, *concurrency]):
        reports = {"backend": "openai", "base_urls": [f"{base}/v1"], "max_retries": 0, "max_tokens": max_tokens,
                   "concurrency": max(1, level), "timeout_s": 600}  # prompts: the packaged ones
        n = max_batch if level == 0 else samples  # run 0 warms the server up
        config = load_config(None, [f"run.n_samples={n}", f"run.seed={run}", f"reports={json.dumps(reports)}"])
        plan = plan_run(config, vocab)
        before = httpx.get(f"{base}/stats").json()
        cpu, started = time.process_time(), time.perf_counter()
        write_reports(config, plan, extractor, writer=OpenAIWriter(config.reports))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        after = httpx.get(f"{base}/stats").json()
        if level == 0:
            continue
        batches = after["batches"] - before["batches"]
        busy = after["busy_s"] - before["busy_s"]
        rows.append({"concurrency": level, "reports_per_s": n / seconds, "seconds": seconds, "client_cpu_s": cpu,
                     "mean_batch": (after["completions"] - before["completions"]) / max(1, batches), "busy_share": busy / seconds})
    stats = httpx.get(f"{base}/stats").json()
    return rows, stats["ceiling_per_s"] or 0.0, _server_peak_mib(port)


def _server_peak_mib(port: int) -> float:
    """VmHWM of the process listening on ``port`` (found through /proc, Linux only)."""
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True).stdout
    pid = out.split("pid=")[1].split(",")[0] if "pid=" in out else None
    if pid is None:
        return float("nan")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _markdown(args, result: dict) -> str:
    rows, ceiling = result["rows"], result["ceiling"]
    load = os.getloadavg()
    lines = [
        "# Report writing: openai client vs the built-in server's ceiling",
        "",
        f"Command: `python bench/bench_reports.py --samples {args.samples} --concurrency {args.concurrency} --max-batch {args.max_batch} --max-tokens {args.max_tokens}`"
        + (f" `--model {args.model}`" if args.model else " (tiny random Llama from tests/tiny_lm.py)"),
        f"Machine: {os.cpu_count()} CPU cores; 1-minute load average {load[0]:.1f} at the end.",
        "",
        "| concurrency | reports/s | seconds | client CPU s | mean batch | server busy share | vs ceiling |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['concurrency']} | {r['reports_per_s']:.2f} | {r['seconds']:.1f} | {r['client_cpu_s']:.1f} | {r['mean_batch']:.1f} | {r['busy_share']:.2f} | {r['reports_per_s'] / ceiling:.2f} |")
    lines += [
        "",
        f"Server ceiling (completions per second of generate time in full batches of {args.max_batch}): {ceiling:.2f}/s.",
        f"Best client concurrency {result['best_concurrency']}: {result['best_per_s']:.2f} reports/s = {result['best_per_s'] / ceiling:.2f} of the ceiling (target >= 0.9).",
        f"Peak memory: client {result['client_peak_mib']:.0f} MiB (ru_maxrss), server {result['server_peak_mib']:.0f} MiB (VmHWM).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
