"""The built-in server under abuse: admission by tokens, per-request timeouts, isolation of bad requests, and a
bounded drain on SIGTERM, with the tiny random Llama (real transformers generation on a CPU)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from serving_harness import free_port
from tiny_lm import build_tiny_lm

from synthvlp.llm.batcher import Batcher
from synthvlp.llm.engine import GenRequest, LocalModel
from synthvlp.serving.health import wait_healthy


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="module")
def local(tiny_model):
    return LocalModel(tiny_model)


def _client(local, **options):
    from fastapi.testclient import TestClient

    from synthvlp.serving.openai_server import create_app

    return TestClient(create_app(local, **options))


def chat(content: str = "hi", **fields) -> dict:
    return {"model": "x", "messages": [{"role": "user", "content": content}], "max_tokens": 4, "temperature": 0, **fields}


def test_prompts_over_the_token_budget_are_refused_before_the_engine(local):
    with _client(local, max_request_tokens=64) as client:
        started = time.perf_counter()
        assert client.post("/v1/chat/completions", json=chat("x" * 1_100_000)).status_code == 413, "over the body limit"
        big = client.post("/v1/chat/completions", json=chat("lungs " * 160_000))  # ~1 MB, within the body limit
        assert big.status_code == 400 and "exceeds this server's per-request budget (--max-request-tokens) of 64 tokens" in big.json()["error"]["message"]
        assert time.perf_counter() - started < 5, "refused without tokenising megabytes"
        over = client.post("/v1/chat/completions", json=chat("The lungs are clear. " * 6, max_tokens=40))
        message = over.json()["error"]["message"]
        assert over.status_code == 400 and message.startswith("prompt of ") and "+ max_tokens 40 exceeds" in message
        assert client.post("/v1/chat/completions", json=chat("hi", max_tokens=40)).status_code == 200
        assert client.get("/stats").json()["completions"] == 1, "refused requests never reached the engine"


def test_the_context_length_bounds_the_budget(local):
    assert local.context_length == 4096
    with _client(local, max_request_tokens=10**6, max_tokens_limit=4096) as client:
        answer = client.post("/v1/completions", json={"prompt": "lungs " * 1000, "max_tokens": 4000})
    assert answer.status_code == 400 and "exceeds the model's context of 4096 tokens" in answer.json()["error"]["message"]


@pytest.mark.parametrize("fields, fragment", [
    ({"seed": 2**70}, "seed must be an integer"),
    ({"seed": "7"}, "seed must be an integer"),
    ({"max_tokens": 10**6}, "max_tokens must be an integer in 1..512"),
    ({"max_tokens": True}, "max_tokens must be an integer"),
    ({"temperature": "hot"}, "temperature must be a number"),
    ({"response_format": "json"}, "response_format must be an object"),
    ({"response_format": {"type": "json_schema", "json_schema": "x"}}, "properties are all strings"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object", "properties": {"a": 3}}}}}, "properties are all strings"),
    ({"messages": [{"role": None, "content": "hi"}]}, "string role and content"),
    ({"n": 2}, "only n=1"),
], ids=lambda v: str(v)[:40])
def test_a_bad_field_is_that_requests_400(local, fields, fragment):
    with _client(local) as client:
        answer = client.post("/v1/chat/completions", json=chat(**fields))
    assert answer.status_code == 400 and fragment in answer.json()["error"]["message"]


def test_bad_requests_in_a_crowd_fail_alone(local):
    """Good and bad requests sent together: every bad one gets its 400, every good one its completion."""
    bad = [chat(seed=2**70), chat(response_format="json"), chat(max_tokens=10**6), chat("x " * 50_000)]
    good = [chat(f"patient {i}", max_tokens=8) for i in range(8)]
    with _client(local, max_request_tokens=256) as client:
        answers: dict[int, httpx.Response] = {}

        def send(i: int, body: dict) -> None:
            answers[i] = client.post("/v1/chat/completions", json=body)

        threads = [threading.Thread(target=send, args=(i, b)) for i, b in enumerate(bad + good)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert [answers[i].status_code for i in range(len(bad))] == [400] * len(bad)
    assert [answers[i].status_code for i in range(len(bad), len(bad) + len(good))] == [200] * len(good)


def test_a_batch_that_fails_is_retried_request_by_request(local, monkeypatch):
    """An engine failure caused by one request (injected: a 'poison' prompt) fails that request only."""
    real = LocalModel.generate

    def generate(self, requests, *args):
        if any(r.prompt == "poison" for r in requests):
            raise RuntimeError("the engine choked on one request")
        return real(self, requests, *args)

    monkeypatch.setattr(LocalModel, "generate", generate)

    async def scenario():
        batcher = Batcher(local, max_batch=8, max_wait_s=0.2)
        await batcher.start()
        try:
            prompts = ["a", "poison", "b", "c"]
            return await asyncio.gather(*(batcher.submit(GenRequest(prompt=p, max_tokens=3)) for p in prompts), return_exceptions=True)
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    assert isinstance(results[1], RuntimeError)
    assert all(not isinstance(results[i], Exception) for i in (0, 2, 3))


def test_a_full_batch_is_answered_and_counted(local):
    """A batch of exactly max_batch requests (the case whose bookkeeping once killed the batcher's worker, so every
    later request waited until its timeout) is answered, counted as full, and the batcher goes on serving."""

    async def scenario():
        batcher = Batcher(local, max_batch=4, max_wait_s=0.5)
        await batcher.start()
        try:
            first = await asyncio.wait_for(asyncio.gather(*(batcher.submit(GenRequest(prompt=p, max_tokens=3)) for p in "abcd")), timeout=30)
            after = await asyncio.wait_for(batcher.submit(GenRequest(prompt="e", max_tokens=3)), timeout=30)
            return first, after, batcher.stats
        finally:
            await batcher.stop()

    first, after, stats = asyncio.run(scenario())
    assert len(first) == 4 and after.completion_tokens <= 3
    assert stats.full_batches == 1 and stats.full_completions == 4 and stats.completions == 5


def test_a_fault_in_the_batchers_bookkeeping_fails_its_batch_and_the_worker_goes_on(local, monkeypatch):
    """Whatever goes wrong after generation (injected: the statistics raise once) answers that batch's requests
    with the error instead of silently stopping the worker, which would leave every later request to time out."""
    real, calls = Batcher._record, []

    def record(self, *args):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected bookkeeping fault")
        return real(self, *args)

    monkeypatch.setattr(Batcher, "_record", record)

    async def scenario():
        batcher = Batcher(local, max_batch=4, max_wait_s=0.0)
        await batcher.start()
        try:
            first = await asyncio.wait_for(batcher.submit(GenRequest(prompt="a", max_tokens=3)), timeout=30)
        except RuntimeError as exc:
            first = exc
        try:
            return first, await asyncio.wait_for(batcher.submit(GenRequest(prompt="b", max_tokens=3)), timeout=30)
        finally:
            await batcher.stop()

    first, second = asyncio.run(scenario())
    assert isinstance(first, RuntimeError) and "injected" in str(first)
    assert second.completion_tokens <= 3


def test_each_row_stops_at_its_own_max_tokens_and_deadline(local):
    short, long = local.generate([GenRequest(prompt="The", max_tokens=3), GenRequest(prompt="The", max_tokens=20)])
    assert short.completion_tokens <= 3 and long.completion_tokens <= 20
    started = time.monotonic()
    late = local.generate([GenRequest(prompt="The", max_tokens=3000, deadline=started + 0.3), GenRequest(prompt="The", max_tokens=5)])
    assert time.monotonic() - started < 5, "the long row stopped at its deadline, not after 3000 tokens"
    assert late[0].finish_reason == "timeout" and late[0].completion_tokens < 3000
    halt = threading.Event()
    halt.set()
    assert local.generate([GenRequest(prompt="The", max_tokens=3000)], halt)[0].completion_tokens <= 1


def test_a_request_past_its_timeout_gets_504_and_frees_the_engine(local):
    with _client(local, request_timeout_s=0.3, max_tokens_limit=3000) as client:
        started = time.perf_counter()
        slow = client.post("/v1/completions", json={"prompt": "The", "max_tokens": 3000, "temperature": 0})
        assert slow.status_code == 504 and "per-request timeout of 0.3 s" in slow.json()["error"]["message"]
        quick = client.post("/v1/completions", json={"prompt": "The", "max_tokens": 3, "temperature": 0})
        assert quick.status_code == 200 and time.perf_counter() - started < 10


def _serve(tiny_model, port: int, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, "-m", "synthvlp.cli", "serve", str(tiny_model), "--port", str(port), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def _in_flight(port: int, body: dict, answers: list) -> threading.Thread:
    def send() -> None:
        try:
            answers.append(httpx.post(f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=300))
        except httpx.HTTPError as exc:
            answers.append(exc)
        answers.append(time.monotonic())

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def _sigterm_during_request(process: subprocess.Popen, port: int, max_tokens: int) -> tuple[list, float]:
    """Send a completion, SIGTERM the server once it is in flight and wait for the answer; returns ([response or
    error, time answered], time signalled)."""
    answers: list = []
    thread = _in_flight(port, {"prompt": "The", "max_tokens": max_tokens, "temperature": 0}, answers)
    deadline = time.monotonic() + 120
    while httpx.get(f"http://127.0.0.1:{port}/stats", timeout=30).json()["in_flight"] < 1:
        assert time.monotonic() < deadline, "the request never reached the server"
        time.sleep(0.05)
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    thread.join(300)
    return answers, signalled


@pytest.mark.slow  # two server processes start: minutes on a busy shared CPU
def test_sigterm_drains_requests_in_flight_within_the_grace_period(tiny_model):
    """Two real `synthvlp serve` processes (started together to save time): with a 120 s grace period a request in
    flight at SIGTERM is answered; with a 1 s one the server exits soon after 1 s, though its request wanted 4000
    tokens."""
    ports = free_port(), free_port()
    patient = _serve(tiny_model, ports[0], "--grace-period", "120", "--max-tokens-limit", "3000", "--request-timeout", "600")
    hasty = _serve(tiny_model, ports[1], "--grace-period", "1", "--max-tokens-limit", "4000", "--request-timeout", "600")
    try:
        for process, port in zip((patient, hasty), ports):
            wait_healthy(process, f"http://127.0.0.1:{port}/health", 300, poll_s=0.2)
        answered, signalled = _sigterm_during_request(patient, ports[0], max_tokens=600)
        assert patient.wait(60) is not None
        assert isinstance(answered[0], httpx.Response) and answered[0].status_code == 200, answered
        assert answered[0].json()["usage"]["completion_tokens"] > 0 and answered[1] > signalled, "answered after SIGTERM"

        cut, signalled = _sigterm_during_request(hasty, ports[1], max_tokens=4000)
        hasty.wait(60)
        assert cut[-1] - signalled < 10, "cut off soon after its 1 s grace period, not when 4000 tokens are done"
        assert cut and not (isinstance(cut[0], httpx.Response) and cut[0].status_code == 200), cut
    finally:
        for process in (patient, hasty):
            if process.poll() is None:
                process.kill()
                process.wait()


def test_a_long_request_yields_the_engine_to_queued_ones(local):
    """Time slicing: with short requests queued, a long one pauses every 64 tokens and resumes after them, so the
    short ones finish long before it; its text is still one whole completion of its max_tokens."""
    finished: list[str] = []

    async def scenario():
        batcher = Batcher(local, max_batch=1, max_wait_s=0.0)
        await batcher.start()
        try:
            async def run(name: str, request: GenRequest):
                result = await batcher.submit(request)
                finished.append(name)
                return result

            long = asyncio.create_task(run("long", GenRequest(prompt="The", max_tokens=300)))
            await asyncio.sleep(0.05)
            shorts = [asyncio.create_task(run(f"short{i}", GenRequest(prompt="The", max_tokens=8))) for i in range(3)]
            return await long, await asyncio.gather(*shorts), batcher.stats
        finally:
            await batcher.stop()

    long, shorts, stats = asyncio.run(scenario())
    assert finished[-1] == "long", finished
    assert long.completion_tokens == 300 or long.finish_reason == "stop"
    assert all(s.completion_tokens <= 8 for s in shorts)
    assert stats.batches > stats.completions, "the long request ran in several slices"


def test_a_lone_long_request_is_not_sliced(local):
    request = GenRequest(prompt="The", max_tokens=100)
    result = local.generate([request], waiting=lambda: False)[0]
    assert result is not None and result.completion_tokens == len(request.generated)
    paused = local.generate([GenRequest(prompt="The", max_tokens=100)], waiting=lambda: True)[0]
    assert paused is None, "with others waiting it pauses after a slice"


def test_batch_mates_keep_their_own_temperature_and_schema(local):
    greedy = GenRequest(prompt="The lungs", max_tokens=12, temperature=0.0)
    alone = local.generate([GenRequest(prompt="The lungs", max_tokens=12, temperature=0.0)])[0]
    mixed = local.generate([GenRequest(prompt="The heart", max_tokens=12, temperature=1.5, seed=3), greedy,
                            GenRequest(prompt="x", max_tokens=16, fields=("a",)), GenRequest(prompt="y", max_tokens=16, fields=("findings", "impression"))])
    assert mixed[1].text == alone.text, "the greedy request was not sampled at its batch-mate's temperature"
    assert set(json.loads(mixed[2].text)) == {"a"} and set(json.loads(mixed[3].text)) == {"findings", "impression"}


def test_each_sampled_request_keeps_its_own_seed_in_a_batch(local):
    """Two sampled requests with different seeds batched together give what each gives alone (each row draws from
    its own generator), and the global torch RNG is left alone."""
    import torch

    def request(seed: int, prompt: str) -> GenRequest:
        return GenRequest(prompt=prompt, max_tokens=12, temperature=1.0, seed=seed)

    alone = [local.generate([request(seed, prompt)])[0].text for seed, prompt in ((1, "The"), (2, "The heart"))]
    assert alone[0] != local.generate([request(2, "The")])[0].text, "different seeds sample different texts"
    state = torch.get_rng_state()
    together = [r.text for r in local.generate([request(1, "The"), request(2, "The heart")])]
    assert together == alone
    assert torch.equal(torch.get_rng_state(), state), "generation did not touch the global RNG"
