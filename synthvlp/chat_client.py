"""An async client for OpenAI-compatible chat servers (vLLM first, ``synthvlp serve`` too), shared by the report
writer and the image judge.

Built to keep a large remote model saturated and to survive it: ``concurrency`` requests in flight over all
``base_urls`` (each request goes to the URL with the fewest in flight), connection limits raised to match, a
timeout per request, and retries with exponential backoff and full jitter on 429, 5xx, timeouts, dropped
connections and answers the caller's parser rejects. A URL that just failed sits out its backoff while others
take its requests. A request that timed out is retried with its timeout doubled (up to ``MAX_TIMEOUT_GROWTH``
times ``timeout_s``), so a server whose batches take longer than ``timeout_s`` still answers instead of every
try being abandoned (``synthvlp serve`` cancels the generation of an abandoned try).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Protocol, TypeVar

import numpy as np

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
MAX_TIMEOUT_GROWTH = 8
"""A timed-out request's later tries wait up to this many times ``timeout_s``."""
T = TypeVar("T")


class ChatEndpoint(Protocol):
    """The connection settings a client needs (``config.ChatEndpointSection``)."""

    base_urls: list[str]
    model: str
    api_key_env: str
    concurrency: int
    timeout_s: float
    request_retries: int
    backoff_s: float
    backoff_max_s: float


class ChatError(RuntimeError):
    """A request that failed for good (retries spent, or an error that retrying cannot fix)."""


class Retry(Exception):
    """Raised by a caller's parser or bad-request hook: this answer is unusable, ask again (after a backoff)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def refuses_structured_output(error_text: str) -> bool:
    """Whether an HTTP 400 body says the server does not do ``response_format`` json_schema."""
    return any(word in error_text.lower() for word in ("response_format", "json_schema", "structured"))


class ChatClient:
    """POSTs chat completions with load balancing and retries; ``stats`` counts requests and retries by kind."""

    def __init__(self, settings: ChatEndpoint, on_bad_request: Callable[[str, str], None] | None = None) -> None:
        """``on_bad_request(url, body)`` sees every HTTP 400 first and may raise ``Retry`` after adjusting what
        ``make_body`` will send (e.g. drop ``response_format`` for a server without structured output)."""
        self.settings = settings
        self.model = settings.model
        self.stats: Counter[str] = Counter()
        self.on_bad_request = on_bad_request
        self._urls = [u.rstrip("/") for u in settings.base_urls]
        self._in_flight = dict.fromkeys(self._urls, 0)
        self._cooldown = dict.fromkeys(self._urls, 0.0)
        self._turn = itertools.count()
        self._client = None
        self._slots: asyncio.Semaphore | None = None

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

    async def complete(self, make_body: Callable[[], dict], parse: Callable[[str], T], rng: np.random.Generator) -> tuple[T, str]:
        """(parsed answer, URL that gave it). ``make_body`` is called per try (so a hook may change the request);
        ``parse`` turns the message content into the answer or raises ``Retry``; ``rng`` draws the backoffs."""
        assert self._slots is not None, "start() first"
        async with self._slots:
            last = ""
            timeout = self.settings.timeout_s
            for attempt in range(self.settings.request_retries + 1):
                url = self.pick()
                try:
                    return parse(await self._ask(url, make_body(), timeout)), url
                except Retry as exc:
                    last = str(exc)
                    self.stats[f"retry:{exc.kind}"] += 1
                    if exc.kind == "timeout":
                        timeout = min(2 * timeout, MAX_TIMEOUT_GROWTH * self.settings.timeout_s)
                    delay = rng.uniform(0, min(self.settings.backoff_max_s, self.settings.backoff_s * 2**attempt))
                    self._cooldown[url] = time.monotonic() + delay
                    await asyncio.sleep(delay)
            raise ChatError(f"{self.settings.request_retries + 1} tries failed, last: {last}")

    def pick(self) -> str:
        """Fewest requests in flight among URLs not cooling down after a failure; ties go round the list."""
        now = time.monotonic()
        ready = [u for u in self._urls if self._cooldown[u] <= now] or self._urls
        turn = next(self._turn)
        return min(ready, key=lambda u: (self._in_flight[u], (self._urls.index(u) - turn) % len(self._urls)))

    async def _ask(self, url: str, body: dict, timeout: float | None = None) -> str:
        import httpx

        timeout = timeout or self.settings.timeout_s
        self._in_flight[url] += 1
        self.stats["requests"] += 1
        try:
            response = await self._client.post(f"{url}/chat/completions", json={"model": self.model, **body},
                                                timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)))
        except httpx.TimeoutException as exc:
            raise Retry("timeout", f"{url}: timed out after {timeout:g} s") from exc
        except httpx.TransportError as exc:
            raise Retry("connection", f"{url}: {type(exc).__name__}: {exc}") from exc
        finally:
            self._in_flight[url] -= 1
        if response.status_code in RETRY_STATUS:
            raise Retry(str(response.status_code), f"{url}: HTTP {response.status_code}: {response.text[:120]}")
        if response.status_code == 400 and self.on_bad_request is not None:
            self.on_bad_request(url, response.text)
        if response.status_code != 200:
            raise ChatError(f"{url}: HTTP {response.status_code} (not retried): {response.text[:200]}")
        try:
            return response.json()["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise Retry("malformed", f"{url}: response is not a chat completion: {response.text[:80]!r}") from exc

    async def _first_model(self) -> str:
        """The model the first answering server lists, for ``model: default``."""
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
        raise ChatError(f"base_urls: no server answered GET /models at {self._urls}; start one (synthvlp serve) or set the model name")
