"""A small OpenAI-compatible server over a local model: ``synthvlp serve --engine transformers``.

Import it only where it is served (it imports FastAPI).

Speaks the subset report writing needs (``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``,
``/health``, plus ``/stats`` with the batcher's numbers), so the ``openai`` backend and any OpenAI client work
against it unchanged. Concurrent requests are batched by ``Batcher``. It binds 127.0.0.1 unless told otherwise and
can require an API key.

One request cannot stall the others. Before a request reaches the engine it is admitted: bodies over
``max_body_bytes`` get 413; every field is checked, so a bad one (a 2^70 seed, a malformed ``response_format``,
messages the chat template refuses) gets that request a 400; ``max_tokens`` above ``max_tokens_limit`` gets 400;
the prompt is rendered and tokenised and refused with 400 when prompt + ``max_tokens`` exceeds the model's context
or ``max_request_tokens``. An admitted request that is not answered within ``request_timeout_s`` is cut off in the
engine at its next token and answered with 504. While other requests wait, a long request yields the engine every
64 tokens (``Batcher`` time slicing), so it cannot make short ones wait for its end. A batch that fails is
retried request by request, so only the request at fault gets the error. On SIGTERM, uvicorn stops accepting connections and lets the requests in flight
finish for up to ``grace_period_s`` before the process exits. A request whose client disconnects (gave up, timed out) is cancelled: skipped if
still queued, stopped at the next token if generating, so a client's retries never pile up behind work nobody
waits for.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from synthvlp.llm.batcher import Batcher
from synthvlp.llm.engine import GenRequest, GenResult, LocalModel

log = logging.getLogger(__name__)
MAX_SEED = 2**63 - 1


class Refused(Exception):
    """A request this server will not run; ``status`` is the HTTP code to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def create_app(model: LocalModel, max_batch: int = 8, api_key: str | None = None, max_body_bytes: int = 1 << 20,
               max_tokens_limit: int = 512, max_request_tokens: int = 4096, request_timeout_s: float = 60.0,
               model_name: str | None = None) -> Any:
    """The FastAPI app; ``model_name`` is what /v1/models lists (default: the model's folder or file name)."""
    batcher = Batcher(model, max_batch=max_batch)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="synthvlp OpenAI-compatible server", lifespan=lifespan)
    app.state.batcher = batcher
    app.middleware("http")(_guard(api_key, max_body_bytes))
    completions = _Completions(model, batcher, max_body_bytes, max_tokens_limit, max_request_tokens, request_timeout_s)
    _add_routes(app, completions, model_name or model.name, max_batch)
    return app


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


def _guard(api_key: str | None, max_body_bytes: int) -> Callable:
    """The HTTP middleware: the API key (except on /health) and a body size announced over the limit, both refused
    before the body is read."""

    async def guard(request: Request, call_next):
        if request.url.path == "/health":
            return await call_next(request)
        if api_key is not None:
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), api_key.encode()):
                return _error(401, "missing or wrong API key (Authorization: Bearer ...)", "authentication_error")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            return _error(413, f"request body of {length} bytes exceeds the limit of {max_body_bytes}")
        return await call_next(request)

    return guard


class _Completions:
    """One completion request from body to result: parsed, admitted against the token budget, then run in the
    batcher under the per-request timeout; every failure is an error response that concerns this request alone."""

    def __init__(self, model: LocalModel, batcher: Batcher, max_body_bytes: int, max_tokens_limit: int,
                 max_request_tokens: int, request_timeout_s: float) -> None:
        self.model, self.batcher = model, batcher
        self.max_body_bytes, self.max_tokens_limit, self.request_timeout_s = max_body_bytes, max_tokens_limit, request_timeout_s
        self.budget = min(max_request_tokens, model.context_length or max_request_tokens)
        self.why_budget = "the model's context" if self.budget < max_request_tokens else "this server's per-request budget (--max-request-tokens)"

    async def admit(self, gen: GenRequest, text: str) -> GenRequest:
        """Render and count the prompt; refuse it if prompt + max_tokens exceeds the budget. A cheap bound first:
        no token covers more than ``max_token_chars`` characters, so a huge prompt is refused without tokenising."""
        model, budget = self.model, self.budget
        if len(text) // model.max_token_chars + gen.max_tokens > budget:
            raise Refused(f"prompt of at least {len(text) // model.max_token_chars} tokens + max_tokens {gen.max_tokens} exceeds {self.why_budget} of {budget} tokens")
        try:
            rendered, count = await asyncio.to_thread(model.prompt_tokens, gen)
        except Exception as exc:  # noqa: BLE001 - the chat template (Jinja) raises what it likes for messages it refuses
            raise Refused(f"messages cannot be formatted by the model's chat template: {str(exc)[:200]}") from None
        if count + gen.max_tokens > budget:
            raise Refused(f"prompt of {count} tokens + max_tokens {gen.max_tokens} exceeds {self.why_budget} of {budget} tokens")
        gen.prompt, gen.messages = rendered, None
        return gen

    async def __call__(self, request: Request, parse: Callable[[dict], tuple[GenRequest, str]]) -> GenResult | JSONResponse:
        """Parse, admit and run one request, answering every failure with an error that concerns it alone."""
        arrived = time.monotonic()
        try:
            body = await _body(request, self.max_body_bytes)
            gen, text = parse(body)
            gen.max_tokens, gen.temperature, gen.seed = _sampling(body, self.max_tokens_limit)
            gen = await self.admit(gen, text)
        except Refused as refused:
            return _error(refused.status, str(refused))
        gen.deadline = arrived + self.request_timeout_s
        try:
            result = await asyncio.wait_for(_unless_disconnected(request, self.batcher, gen), timeout=max(0.0, gen.deadline - time.monotonic()))
        except asyncio.TimeoutError:
            return _error(504, f"generation did not finish within the server's per-request timeout of {self.request_timeout_s:g} s; "
                               "ask for fewer max_tokens", "timeout_error")
        except Exception:  # noqa: BLE001 - the engine failed on this request alone (its batch-mates were retried)
            log.exception("generation failed")
            return _error(500, "generation failed for this request", "server_error")
        if result is None:
            return _error(499, "client closed the request; its generation was cancelled")
        return result


def _add_routes(app: FastAPI, complete: _Completions, name: str, max_batch: int) -> None:
    """/health, /stats, /v1/models and the two completion endpoints."""

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/stats")
    async def stats() -> dict:
        return complete.batcher.stats.as_dict()

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "synthvlp", "max_batch": max_batch}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        result = await complete(request, _chat_request)
        if isinstance(result, JSONResponse):
            return result
        return _completion("chat.completion", name, result, {"index": 0, "message": {"role": "assistant", "content": result.text}, "finish_reason": result.finish_reason})

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        result = await complete(request, _text_request)
        if isinstance(result, JSONResponse):
            return result
        return _completion("text_completion", name, result, {"index": 0, "text": result.text, "finish_reason": result.finish_reason})


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


async def _body(request: Request, limit: int) -> dict:
    raw = await request.body()
    if len(raw) > limit:
        raise Refused(f"request body of {len(raw)} bytes exceeds the limit of {limit}", 413)
    try:
        body = json.loads(raw)
    except ValueError:
        raise Refused("request body is not JSON") from None
    if not isinstance(body, dict):
        raise Refused("request body must be a JSON object")
    if body.get("n", 1) != 1 or body.get("stream"):
        raise Refused("only n=1 without streaming is supported")
    return body


def _chat_request(body: dict) -> tuple[GenRequest, str]:
    """A chat completion's messages and structured-output fields, and the text the prompt is made of."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
        isinstance(m, dict) and isinstance(m.get("content"), str) and isinstance(m.get("role"), str) for m in messages
    ):
        raise Refused("messages must be a non-empty list of {role, content} with string role and content")
    return GenRequest(messages=messages, fields=_fields(body.get("response_format"))), "".join(m["content"] for m in messages)


def _text_request(body: dict) -> tuple[GenRequest, str]:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise Refused("prompt must be a string (or a list of one string)")
    return GenRequest(prompt=prompt), prompt


def _fields(response_format: Any) -> tuple[str, ...]:
    """The string fields of a json_schema response_format; other schemas are refused with a clear message."""
    if response_format is None:
        return ()
    if not isinstance(response_format, dict):
        raise Refused("response_format must be an object such as {\"type\": \"json_schema\", \"json_schema\": {...}}")
    if response_format.get("type") == "text":
        return ()
    if response_format.get("type") != "json_schema":
        raise Refused(f"response_format type {response_format.get('type')!r} is not supported; use json_schema or text")
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if (not isinstance(properties, dict) or schema.get("type") != "object" or not properties
            or any(not isinstance(p, dict) or p.get("type") != "string" for p in properties.values())):
        raise Refused("response_format json_schema: this engine supports objects whose properties are all strings")
    return tuple(str(k) for k in properties)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _sampling(body: dict, max_tokens_limit: int) -> tuple[int, float, int]:
    """(max_tokens, temperature, seed), each checked: a bad value is this request's 400, never its batch's 500."""
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or min(256, max_tokens_limit)
    if not _integer(max_tokens) or not 1 <= max_tokens <= max_tokens_limit:
        raise Refused(f"max_tokens must be an integer in 1..{max_tokens_limit} (this server's --max-tokens-limit)")
    temperature = body.get("temperature", 1.0)
    if temperature is None:
        temperature = 1.0
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        raise Refused("temperature must be a number in 0..2")
    seed = body.get("seed")
    if seed is None:
        seed = 0
    if not _integer(seed) or not 0 <= seed <= MAX_SEED:
        raise Refused(f"seed must be an integer in 0..{MAX_SEED}")
    return max_tokens, float(temperature), seed


def _completion(kind: str, model: str, result: Any, choice: dict) -> dict:
    usage = {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
             "total_tokens": result.prompt_tokens + result.completion_tokens}
    return {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": kind, "created": int(time.time()), "model": model, "choices": [choice], "usage": usage}


def serve(model: LocalModel, host: str = "127.0.0.1", port: int = 8000, grace_period_s: float = 30.0, **options: Any) -> None:
    """Run the server in the foreground until interrupted; on SIGTERM or Ctrl-C the requests in flight get up to
    ``grace_period_s`` to finish."""
    import uvicorn

    uvicorn.run(create_app(model, **options), host=host, port=port, log_level="warning", timeout_graceful_shutdown=grace_period_s)
