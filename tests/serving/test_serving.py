"""The built-in OpenAI-compatible server and the openai client, on loopback with a tiny random Llama."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pyarrow.parquet as pq
import pytest
from serving_harness import ServerProcess
from tiny_lm import build_tiny_lm

from synthvlp.config import load_config
from synthvlp.entities import EntityExtractor, load_vocabulary
from synthvlp.errors import UserError
from synthvlp.generation.planner import plan_run
from synthvlp.generation.reports import write_reports
from synthvlp.generation.writers.openai_client import OpenAIWriter

EXTRACTOR = EntityExtractor(load_vocabulary())


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    process = ServerProcess(tiny_model, tmp_path_factory.mktemp("server")).start()
    yield process
    process.kill()


def settings(url, n=8, **reports):
    values = {"backend": "openai", "base_urls": [f"{url}/v1"], "max_retries": 0, "few_shot": 0, "max_tokens": 16,
              "concurrency": 8, "timeout_s": 20, "request_retries": 2, "backoff_s": 0.05, "backoff_max_s": 0.2, **reports}
    overrides = [f"run.n_samples={n}", f"reports={json.dumps(values)}"]
    return load_config(None, overrides)


def test_server_speaks_the_openai_api_and_enforces_limits(server):
    models = httpx.get(f"{server.url}/v1/models").json()
    assert models["data"][0]["id"].startswith("tiny-lm")
    chat = {"model": "x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}}}
    answer = httpx.post(f"{server.url}/v1/chat/completions", json=chat, timeout=30).json()
    assert set(json.loads(answer["choices"][0]["message"]["content"])) == {"a"}, "structured output is always valid JSON of the schema"
    text = httpx.post(f"{server.url}/v1/completions", json={"prompt": "FINDINGS:", "max_tokens": 3, "temperature": 0}, timeout=30).json()
    assert text["object"] == "text_completion" and text["usage"]["completion_tokens"] <= 3
    assert httpx.post(f"{server.url}/v1/chat/completions", json={**chat, "max_tokens": 10**6}).status_code == 400
    assert httpx.post(f"{server.url}/v1/chat/completions", content=b"x" * (2 << 20)).status_code == 413
    nested = {**chat, "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}}}
    assert "all strings" in httpx.post(f"{server.url}/v1/chat/completions", json=nested).json()["error"]["message"]


def test_a_request_whose_client_gives_up_is_cancelled(server):
    """A client that times out disconnects; its generation stops at the next token instead of running to 4000
    tokens, and the next request is answered at once instead of queueing behind it."""
    before = server.stats()
    long = {"model": "x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4000, "temperature": 0}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{server.url}/v1/chat/completions", json=long, timeout=1.0)
    deadline = time.monotonic() + 60
    while server.stats()["cancelled"] == before["cancelled"] and time.monotonic() < deadline:
        time.sleep(0.1)
    short = httpx.post(f"{server.url}/v1/chat/completions", json={**long, "max_tokens": 4}, timeout=60)
    assert short.status_code == 200 and short.json()["usage"]["completion_tokens"] <= 4
    after = server.stats()
    assert after["cancelled"] - before["cancelled"] == 1 and after["completions"] - before["completions"] == 1
    assert after["completion_tokens"] - before["completion_tokens"] < 2000, after  # stopped long before 4000 tokens


def test_serve_refuses_an_empty_or_non_model_path(tmp_path):
    from synthvlp.llm.engine import check_model_path

    with pytest.raises(UserError, match="model path is empty"):
        check_model_path("")
    with pytest.raises(UserError, match="not a Hugging Face model folder"):
        check_model_path(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="not a .gguf"):
        check_model_path(tmp_path / "notes.txt")


def test_concurrent_requests_are_batched_and_every_sample_comes_back(server):
    config = settings(server.url, n=16)
    plan = plan_run(config, load_vocabulary())
    before = server.stats()["completions"]
    writer = OpenAIWriter(config.reports)
    table = write_reports(config, plan, EXTRACTOR, writer=writer)
    assert table.column("id").to_pylist() == plan.column("id").to_pylist()
    assert writer.stats["requests"] == 16 and table.column("report_attempts").to_pylist() == [1] * 16
    stats = server.stats()
    assert stats["completions"] - before == 16
    assert max(int(size) for size in stats["sizes"]) > 1, stats


def test_retries_on_injected_500s_timeouts_and_garbled_json(server):
    server.faults("500", "garbled", "stall", "pass")
    try:
        config = settings(server.url, n=6, timeout_s=1.5, request_retries=8, concurrency=2)
        writer = OpenAIWriter(config.reports)
        table = write_reports(config, plan_run(config, load_vocabulary()), EXTRACTOR, writer=writer)
    finally:
        server.faults("pass")
    assert table.num_rows == 6 and table.column("findings").null_count == 0
    assert writer.stats["retry:500"] > 0 and writer.stats["retry:malformed"] > 0 and writer.stats["retry:timeout"] > 0, writer.stats


def test_server_without_structured_output_gets_plain_text_requests(server):
    server.faults("text-only")
    try:
        config = settings(server.url, n=4, concurrency=1)
        writer = OpenAIWriter(config.reports)
        table = write_reports(config, plan_run(config, load_vocabulary()), EXTRACTOR, writer=writer)
    finally:
        server.faults("pass")
    assert writer.json_mode is False and writer.stats["retry:no-structured-output"] == 1
    assert set(table.column("findings").to_pylist()) == {"The lungs are clear."}


def test_synthvlp_run_with_the_openai_backend_writes_manifest_columns_and_report(server, write_config, tmp_path):
    from rich.console import Console

    from synthvlp.runfolder import prepare_run_folder
    from synthvlp.runner import Runner

    reports = json.loads(settings(server.url).reports.model_dump_json())
    config = load_config(write_config(tmp_path / "run", reports={**reports, "max_retries": 1}, run={"n_samples": 6, "shard_size": 4}))
    runner = Runner(config, prepare_run_folder(config), console=Console(quiet=True))
    runner.run(["plan", "reports"])
    manifest = pq.read_table(runner.run_dir / "manifest.parquet").to_pylist()
    assert [r["id"] for r in manifest] == [f"s{i:08d}" for i in range(6)]
    assert all(r["report_generator"].startswith("openai@tiny-lm") and r["report_attempts"] in (1, 2) for r in manifest)
    assert not list((runner.run_dir / "parts" / "reports").glob("journal-*")), "journals are removed once the unit is committed"
    report = (runner.run_dir / "report.md").read_text()
    assert "| attempts | reports |" in report and "Verified" in report


def test_api_key_is_required_when_set_but_not_for_health(tiny_model):
    from fastapi.testclient import TestClient

    from synthvlp.llm.engine import LocalModel
    from synthvlp.serving.openai_server import create_app

    with TestClient(create_app(LocalModel(tiny_model), api_key="sekret")) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer sekret"}).status_code == 200


class RecordingWriter(OpenAIWriter):
    """Notes which samples it was asked to write."""

    def __init__(self, settings):
        super().__init__(settings)
        self.asked: set[str] = set()

    async def write(self, request):
        self.asked.add(request.id)
        return await super().write(request)


def test_killed_server_restarted_loses_and_duplicates_nothing(server, tiny_model, tmp_path):
    """SIGKILL the server mid-run: the run fails naming what is kept; after a restart the rerun asks only for the
    missing samples and the result has every sample exactly once, finished ones unchanged. (Runs last: it
    replaces the module's server process.)"""
    config = settings(server.url, n=16, concurrency=2, request_retries=1)
    plan = plan_run(config, load_vocabulary())
    journal = tmp_path / "journal.jsonl"
    errors: list[str] = []

    def run() -> None:
        try:
            write_reports(config, plan, EXTRACTOR, journal=journal, writer=OpenAIWriter(config.reports))
        except UserError as exc:
            errors.append(str(exc))

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 120
    while worker.is_alive() and time.monotonic() < deadline and (not journal.exists() or len(journal.read_text().splitlines()) < 4):
        time.sleep(0.05)
    server.kill()
    worker.join(120)
    assert errors and "rerun to resume" in errors[0]
    kept = {json.loads(line)["id"]: json.loads(line) for line in journal.read_text().splitlines()}
    assert 4 <= len(kept) < 16

    server.start()  # same port, fresh process
    writer = RecordingWriter(config.reports)
    table = write_reports(config, plan, EXTRACTOR, journal=journal, writer=writer)
    ids = table.column("id").to_pylist()
    assert ids == plan.column("id").to_pylist() and len(set(ids)) == 16  # 0 lost, 0 duplicated
    assert writer.asked == set(ids) - set(kept)
    rows = {r["id"]: r for r in table.to_pylist()}
    assert all(rows[k]["findings"] == v["findings"] for k, v in kept.items())
