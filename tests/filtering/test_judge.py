"""The multimodal-LLM judge against a real HTTP server that reads the images it is sent.

The stand-in vision model rejects an image whose left half is brighter than its right half (a flipped film,
which every pixel check passes) and answers through the OpenAI chat format, with injected server errors and an
optional refusal of ``response_format``, so the judge's whole path is exercised: data URLs, the client's
retries, JSON and text verdicts, and the filter stage's columns.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time

import numpy as np
import pytest
from fastapi import FastAPI, Request  # module level: the handlers' string annotations resolve here
from fastapi.responses import JSONResponse
from PIL import Image

from synthvlp.chat_client import Retry
from synthvlp.config import JudgeSection, load_config
from synthvlp.filtering.checks import check_samples
from synthvlp.filtering.judge import judge_images, parse_verdict


def _app(state: dict):
    app = FastAPI()

    @app.get("/v1/models")
    def models():
        return {"data": [{"id": "fake-vlm"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        state["requests"].append(body)
        if state["fail_next"] > 0:
            state["fail_next"] -= 1
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
        if state["refuse_schema"] and "response_format" in body:
            return JSONResponse({"error": {"message": "response_format json_schema is not supported"}}, status_code=400)
        parts = body["messages"][1]["content"]
        url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
        pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))), dtype=np.float32)
        half = pixels.shape[1] // 2
        flipped = pixels[:, :half].mean() > pixels[:, half:].mean() + 10
        if "response_format" in body:
            content = json.dumps({"verdict": "reject" if flipped else "pass", "reason": "flipped film" if flipped else "looks fine"})
        else:
            content = "REJECT: the film looks flipped." if flipped else "PASS, a plausible radiograph."
        return {"choices": [{"message": {"role": "assistant", "content": content}}]}

    return app


@pytest.fixture(scope="module")
def server():
    import uvicorn

    state = {"requests": [], "fail_next": 0, "refuse_schema": False}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    instance = uvicorn.Server(uvicorn.Config(_app(state), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    while not instance.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/v1", state
    instance.should_exit = True
    thread.join(timeout=5)


def _images() -> np.ndarray:
    """Four 32x32 images: 0 and 2 normal (darker left), 1 and 3 flipped (brighter left)."""
    ramp = np.tile(np.linspace(0.2, 0.8, 32, dtype=np.float32), (32, 1))
    return np.stack([ramp, ramp[:, ::-1], ramp, ramp[:, ::-1]])


def _settings(url: str, **extra) -> JudgeSection:
    return JudgeSection(base_urls=[url], backoff_s=0.01, backoff_max_s=0.05, **extra)


def test_parse_verdict_reads_json_and_text_and_retries_otherwise():
    assert parse_verdict('{"verdict": "reject", "reason": "no lungs"}') == (False, "no lungs")
    assert parse_verdict("Verdict: PASS. Plausible film.")[0] is True
    with pytest.raises(Retry, match="no pass/reject"):
        parse_verdict("I am not sure.")


def test_judge_rejects_what_the_model_rejects_and_survives_server_errors(server):
    url, state = server
    state.update(requests=[], fail_next=2, refuse_schema=False)
    passed, reasons = judge_images(_settings(url), _images(), ["Normal chest.", None, None, None])
    assert passed.tolist() == [True, False, True, False]
    assert reasons[1] == "flipped film"
    assert len(state["requests"]) == 6  # 4 images + 2 retried 503s
    first = next(r for r in state["requests"] if r["messages"][1]["content"][0]["type"] == "text")
    assert first["messages"][1]["content"][0]["text"] == "Report: Normal chest." and first["model"] == "fake-vlm"
    assert first["response_format"]["json_schema"]["name"] == "image_verdict"


def test_judge_falls_back_to_text_when_the_server_refuses_the_schema(server):
    url, state = server
    state.update(requests=[], fail_next=0, refuse_schema=True)
    passed, reasons = judge_images(_settings(url), _images(), None)
    assert passed.tolist() == [True, False, True, False]
    assert reasons[1].startswith("REJECT")
    assert "response_format" not in state["requests"][-1]


def test_filter_stage_records_the_judge_check(server, tmp_path):
    url, state = server
    state.update(requests=[], fail_next=0, refuse_schema=False)
    config = load_config(None, ["images.size=32", "filter.min_dynamic_range=0.05"])
    config.filter.judge = _settings(url)
    pngs = {}
    for i, pixels in enumerate(_images()):
        buffer = io.BytesIO()
        Image.fromarray(np.round(pixels * 255).astype(np.uint8)).save(buffer, format="PNG")
        pngs[f"s{i}"] = buffer.getvalue()
    rows = [{"id": k, "findings": "The lungs are clear. No effusion.", "impression": "No acute disease.", "planned_entities": [],
             "extracted_entities": []} for k in pngs]
    table, _ = check_samples(config, rows, pngs, tmp_path)
    assert table.column("filter_judge_verdict").to_pylist() == ["pass", "reject", "pass", "reject"]
    assert table.column("filter_judge_score").to_pylist() == [1.0, 0.0, 1.0, 0.0]
    assert table.column("reject_reasons").to_pylist()[1] == "judge"
