"""A small OpenAI-compatible server over a local model: ``synthvlp serve --engine transformers``.

Import it only where it is served (it imports FastAPI).

Speaks the subset report writing needs (``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``,
``/health``, plus ``/stats`` with the batcher's numbers), so the ``openai`` backend and any OpenAI client work
against it unchanged. Concurrent requests are batched by ``Batcher``. It binds 127.0.0.1 unless told otherwise,
can require an API key, and refuses bodies over ``max_body_bytes`` and completions over ``max_tokens_limit``.
A request whose client disconnects (gave up, timed out) is cancelled: skipped if still queued, stopped at the
next token if generating, so a client's retries never pile up behind work nobody waits for.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from synthvlp.generation.writers.hf_local import Batcher, GenRequest, GenResult, LocalModel


def create_app(model: LocalModel, max_batch: int = 8, api_key: str | None = None, max_body_bytes: int = 1 << 20,
               max_tokens_limit: int = 4096, model_name: str | None = None) -> Any:
    """The FastAPI app; ``model_name`` is what /v1/models lists (default: the model's folder or file name)."""
    batcher = Batcher(model, max_batch=max_batch)
    name = model_name or model.name

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="synthvlp OpenAI-compatible server", lifespan=lifespan)
    app.state.batcher = batcher

    def error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if request.url.path == "/health":
            return await call_next(request)
        if api_key is not None:
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), api_key.encode()):
                return error(401, "missing or wrong API key (Authorization: Bearer ...)", "authentication_error")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            return error(413, f"request body of {length} bytes exceeds the limit of {max_body_bytes}")
        return await call_next(request)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/stats")
    async def stats() -> dict:
        return batcher.stats.as_dict()

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "synthvlp", "max_batch": max_batch}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body, problem = await _body(request, max_body_bytes)
        if problem:
            return error(400 if problem != "too large" else 413, problem)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
            return error(400, "messages must be a non-empty list of {role, content} with string content")
        fields, problem = _fields(body.get("response_format"))
        if problem:
            return error(400, problem)
        gen, problem = _gen(body, max_tokens_limit, messages=messages, fields=fields)
        if problem:
            return error(400, problem)
        result = await _unless_disconnected(request, batcher, gen)
        if result is None:
            return error(499, "client closed the request; its generation was cancelled")
        return _completion("chat.completion", name, result, {"index": 0, "message": {"role": "assistant", "content": result.text}, "finish_reason": result.finish_reason})

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        body, problem = await _body(request, max_body_bytes)
        if problem:
            return error(400 if problem != "too large" else 413, problem)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            return error(400, "prompt must be a string (or a list of one string)")
        gen, problem = _gen(body, max_tokens_limit, prompt=prompt)
        if problem:
            return error(400, problem)
        result = await _unless_disconnected(request, batcher, gen)
        if result is None:
            return error(499, "client closed the request; its generation was cancelled")
        return _completion("text_completion", name, result, {"index": 0, "text": result.text, "finish_reason": result.finish_reason})

    return app


async def _unless_disconnected(request: Request, batcher: Batcher, gen: GenRequest) -> GenResult | None:
    """The batcher's answer to ``gen``, or None when the client disconnects first (the generation is cancelled).

    The disconnect is awaited on the request's receive channel, which ends in ``http.disconnect`` once the body
    has been read (polling ``is_disconnected`` does not see it through the HTTP middleware)."""
    answer = asyncio.ensure_future(batcher.submit(gen))
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not answer.done():
            answer.cancel()
            await asyncio.gather(answer, gone, return_exceptions=True)
    return None if answer.cancelled() else answer.result()


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _body(request: Request, limit: int) -> tuple[dict, str | None]:
    raw = await request.body()
    if len(raw) > limit:
        return {}, "too large"
    try:
        body = json.loads(raw)
    except ValueError:
        return {}, "request body is not JSON"
    if not isinstance(body, dict):
        return {}, "request body must be a JSON object"
    if body.get("n", 1) != 1 or body.get("stream"):
        return {}, "only n=1 without streaming is supported"
    return body, None


def _fields(response_format: Any) -> tuple[tuple[str, ...], str | None]:
    """The string fields of a json_schema response_format; other schemas are refused with a clear message."""
    if response_format is None or response_format.get("type") == "text":
        return (), None
    if response_format.get("type") != "json_schema":
        return (), f"response_format type {response_format.get('type')!r} is not supported; use json_schema or text"
    schema = (response_format.get("json_schema") or {}).get("schema") or {}
    properties = schema.get("properties") or {}
    if schema.get("type") != "object" or not properties or any(p.get("type") != "string" for p in properties.values()):
        return (), "response_format json_schema: this engine supports objects whose properties are all strings"
    return tuple(properties), None


def _gen(body: dict, max_tokens_limit: int, **what: Any) -> tuple[GenRequest, str | None]:
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 256
    temperature = body.get("temperature", 1.0)
    if not isinstance(max_tokens, int) or not 1 <= max_tokens <= max_tokens_limit:
        return GenRequest(), f"max_tokens must be an integer in 1..{max_tokens_limit}"
    if not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        return GenRequest(), "temperature must be in 0..2"
    seed = body.get("seed") if isinstance(body.get("seed"), int) else 0
    return GenRequest(max_tokens=max_tokens, temperature=float(temperature), seed=seed, **what), None


def _completion(kind: str, model: str, result: Any, choice: dict) -> dict:
    usage = {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
             "total_tokens": result.prompt_tokens + result.completion_tokens}
    return {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": kind, "created": int(time.time()), "model": model, "choices": [choice], "usage": usage}


def serve(model: LocalModel, host: str = "127.0.0.1", port: int = 8000, **options: Any) -> None:
    """Run the server in the foreground until interrupted."""
    import uvicorn

    uvicorn.run(create_app(model, **options), host=host, port=port, log_level="warning")
