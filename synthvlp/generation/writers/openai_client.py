"""The ``openai`` backend: an async client for any OpenAI-compatible server (vLLM first, ``synthvlp serve`` too).

Built to keep a large remote model saturated and to survive it: ``reports.concurrency`` requests in flight over
all ``base_urls`` (each request goes to the URL with the fewest in flight), connection limits raised to match,
a timeout per request, and retries with exponential backoff and full jitter on 429, 5xx, timeouts, dropped
connections and malformed answers. A URL that just failed sits out its backoff while others take its requests.
Structured output is asked for with ``response_format`` (json_schema); with ``structured_output: auto`` a server
that refuses it is asked for plain ``FINDINGS:/IMPRESSION:`` text from then on.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import Counter

from synthvlp.config import ReportsSection
from synthvlp.generation.prompts import RESPONSE_FORMAT, MalformedAnswer, load_prompts, parse_json, parse_sections
from synthvlp.generation.writers.base import Draft, ReportWriter, WriteRequest, WriterError
from synthvlp.seeding import sample_rng, sample_seed

log = logging.getLogger(__name__)
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAIWriter(ReportWriter):
    name = "openai"

    def __init__(self, settings: ReportsSection) -> None:
        self.settings = settings
        self.prompts = load_prompts(settings.prompts)
        self.json_mode = settings.structured_output != "text"
        self.model = settings.model
        self.stats: Counter[str] = Counter()
        self._urls = [u.rstrip("/") for u in settings.base_urls]
        self._in_flight = dict.fromkeys(self._urls, 0)
        self._cooldown = dict.fromkeys(self._urls, 0.0)
        self._turn = itertools.count()
        self._client = None
        self._slots: asyncio.Semaphore | None = None

    @property
    def version(self) -> str:  # type: ignore[override]
        return self.model

    async def start(self) -> None:
        import httpx

        limit = self.settings.concurrency + 8
        key = os.environ.get(self.settings.api_key_env)
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
            timeout=httpx.Timeout(self.settings.timeout_s, connect=min(10.0, self.settings.timeout_s)),
            headers={"Authorization": f"Bearer {key}"} if key else {},
        )
        self._slots = asyncio.Semaphore(self.settings.concurrency)
        if self.model == "default":
            self.model = await self._first_model()

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def write(self, request: WriteRequest) -> Draft:
        assert self._slots is not None, "start() first"
        async with self._slots:
            return await self._with_retries(request)

    async def _with_retries(self, request: WriteRequest) -> Draft:
        rng = sample_rng(request.run_seed, request.id, "backoff", request.attempt)
        last = ""
        for attempt in range(self.settings.request_retries + 1):
            url = self._pick()
            try:
                return await self._ask(url, request)
            except _Retryable as exc:
                last = str(exc)
                self.stats[f"retry:{exc.kind}"] += 1
                delay = rng.uniform(0, min(self.settings.backoff_max_s, self.settings.backoff_s * 2**attempt))
                self._cooldown[url] = time.monotonic() + delay
                await asyncio.sleep(delay)
        raise WriterError(f"{self.settings.request_retries + 1} tries failed, last: {last}")

    def _pick(self) -> str:
        """Fewest requests in flight among URLs not cooling down after a failure; ties go round the list."""
        now = time.monotonic()
        ready = [u for u in self._urls if self._cooldown[u] <= now] or self._urls
        turn = next(self._turn)
        return min(ready, key=lambda u: (self._in_flight[u], (self._urls.index(u) - turn) % len(self._urls)))

    async def _ask(self, url: str, request: WriteRequest) -> Draft:
        import httpx

        json_mode = self.json_mode
        body = {
            "model": self.model,
            "messages": self.prompts.messages(request.entities, request.feedback, json_mode, self.settings.few_shot),
            "temperature": self.settings.temperature,
            "max_tokens": self.settings.max_tokens,
            "seed": sample_seed(request.run_seed, request.id, "llm", request.attempt) % 2**31,
        }
        if json_mode:
            body["response_format"] = RESPONSE_FORMAT
        self._in_flight[url] += 1
        self.stats["requests"] += 1
        try:
            response = await self._client.post(f"{url}/chat/completions", json=body)
        except httpx.TimeoutException as exc:
            raise _Retryable("timeout", f"{url}: timed out after {self.settings.timeout_s:g} s") from exc
        except httpx.TransportError as exc:
            raise _Retryable("connection", f"{url}: {type(exc).__name__}: {exc}") from exc
        finally:
            self._in_flight[url] -= 1
        if response.status_code in RETRY_STATUS:
            raise _Retryable(str(response.status_code), f"{url}: HTTP {response.status_code}: {response.text[:120]}")
        if response.status_code == 400 and json_mode and self.settings.structured_output == "auto" and _refuses_schema(response.text):
            log.warning("%s refuses response_format json_schema; asking for plain FINDINGS/IMPRESSION text from now on", url)
            self.json_mode = False
            raise _Retryable("no-structured-output", f"{url}: no structured output")
        if response.status_code != 200:
            raise WriterError(f"{url}: HTTP {response.status_code} (not retried): {response.text[:200]}")
        try:
            content = response.json()["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise _Retryable("malformed", f"{url}: response is not a chat completion: {response.text[:80]!r}") from exc
        try:
            findings, impression = parse_json(content) if json_mode else parse_sections(content)
        except MalformedAnswer as exc:
            if not (json_mode and self.settings.structured_output == "auto"):
                raise _Retryable("malformed", str(exc)) from exc
            try:
                findings, impression = parse_sections(content)
            except MalformedAnswer:
                raise _Retryable("malformed", str(exc)) from exc
        return Draft(findings, impression, {"url": url})

    async def _first_model(self) -> str:
        """The model the first answering server lists, for ``reports.model: default``."""
        import httpx

        for url in self._urls:
            for attempt in range(self.settings.request_retries + 1):
                try:
                    response = await self._client.get(f"{url}/models")
                    if response.status_code == 200:
                        return response.json()["data"][0]["id"]
                except (httpx.HTTPError, ValueError, KeyError, IndexError):
                    pass
                await asyncio.sleep(min(self.settings.backoff_max_s, self.settings.backoff_s * 2**attempt))
        raise WriterError(f"reports.base_urls: no server answered GET /models at {self._urls}; start one (synthvlp serve) or set reports.model")


class _Retryable(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _refuses_schema(text: str) -> bool:
    return any(word in text.lower() for word in ("response_format", "json_schema", "structured"))
