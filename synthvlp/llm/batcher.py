"""Batching for the local LLM engine: requests that arrive together become one ``LocalModel.generate`` call.

The requests come from the concurrent verification loops in-process (the ``transformers`` report writer) or from
HTTP clients (``synthvlp serve``); one ``generate`` call over many is where a GPU or a many-core CPU gets its
throughput.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field

from synthvlp.llm.engine import GenRequest, GenResult, LocalModel

log = logging.getLogger(__name__)


@dataclass
class BatchStats:
    """What the engine did: the ceiling is completions per second of generate time in full batches; requests
    cancelled by their client count in ``cancelled`` (not ``completions``), their tokens in ``completion_tokens``;
    ``in_flight`` counts requests submitted and not yet answered."""

    in_flight: int = 0
    batches: int = 0
    completions: int = 0
    cancelled: int = 0
    completion_tokens: int = 0
    busy_s: float = 0.0
    full_batches: int = 0
    full_completions: int = 0
    full_busy_s: float = 0.0
    sizes: dict[int, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        ceiling = self.full_completions / self.full_busy_s if self.full_busy_s else None
        mean = self.completions / self.busy_s if self.busy_s else None
        return {**self.__dict__, "ceiling_per_s": ceiling, "busy_rate_per_s": mean}


class Batcher:
    """Collects up to ``max_batch`` requests (waiting at most ``max_wait_s`` after the first) per generate call.
    Generation runs in a worker thread, so the event loop keeps accepting requests meanwhile.

    Time slicing: while requests are queued, a running batch pauses its unfinished plain requests after
    ``slice_tokens`` tokens and puts them back at the end of the queue, so a long request shares the engine with
    short ones instead of making them wait for its end. Without a queue nothing is paused, so a lone stream of
    long requests pays no re-reading of prompts."""

    def __init__(self, model: LocalModel, max_batch: int = 8, max_wait_s: float = 0.01, slice_tokens: int = 64) -> None:
        self.model, self.max_batch, self.max_wait_s, self.slice_tokens = model, max_batch, max_wait_s, slice_tokens
        self.stats = BatchStats()
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._halt = threading.Event()

    async def start(self) -> None:
        self._halt.clear()
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Cancel waiting requests and cut the running batch short at its next token, so stopping is prompt."""
        self._halt.set()
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None

    async def submit(self, request: GenRequest) -> GenResult:
        """The result of ``request``; if the caller stops waiting (its task is cancelled), so does generation."""
        future = asyncio.get_running_loop().create_future()
        self.stats.in_flight += 1
        try:
            await self._queue.put((request, future))
            return await future
        except asyncio.CancelledError:
            request.cancel.set()
            self.stats.cancelled += 1
            raise
        finally:
            self.stats.in_flight -= 1

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch:
                timeout = deadline - time.monotonic()
                if timeout <= 0 and self._queue.empty():
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), max(timeout, 0)) if timeout > 0 else self._queue.get_nowait())
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
            live = [(r, f) for r, f in batch if not f.cancelled() and not r.cancel.is_set()]
            try:
                await self._serve(live)
            except Exception as exc:  # noqa: BLE001 - a fault in the bookkeeping fails this batch, never the worker
                log.exception("batcher: a batch failed outside generation")
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)

    async def _serve(self, live: list) -> None:
        """Generate one batch and answer (or requeue) each request; an engine failure retries them one by one."""
        if not live:
            return
        started = time.perf_counter()
        try:
            results = await asyncio.to_thread(self.model.generate, [r for r, _ in live], self._halt, self._waiting, self.slice_tokens)
        except Exception:  # noqa: BLE001 - one bad request must not fail its batch-mates: retry each alone
            await self._one_by_one(live)
            return
        self._record(len(live), results, time.perf_counter() - started)
        for (request, future), result in zip(live, results, strict=True):
            self._deliver(request, future, result)

    def _waiting(self) -> bool:
        """Whether requests are queued (read from the generating thread; a stale answer only moves a pause)."""
        return self._queue is not None and not self._queue.empty()

    def _deliver(self, request: GenRequest, future: asyncio.Future, result: GenResult | None) -> None:
        """Answer a finished request; put a paused one back at the end of the queue for its next slice."""
        if future.done():
            return
        if result is None:
            self._queue.put_nowait((request, future))
        else:
            future.set_result(result)

    async def _one_by_one(self, batch: list) -> None:
        """Generate each request of a failed batch on its own; only the ones that fail again get the error."""
        for request, future in batch:
            if future.done():
                continue
            try:
                result = (await asyncio.to_thread(self.model.generate, [request], self._halt, self._waiting, self.slice_tokens))[0]
            except Exception as exc:  # noqa: BLE001 - reported to that request's caller
                if not future.done():
                    future.set_exception(exc)
                continue
            self._deliver(request, future, result)

    def _record(self, size: int, results: list[GenResult | None], seconds: float) -> None:
        """Count a batch; a paused request (None) counts once it finishes, a cancelled one in ``cancelled``."""
        finished = [r for r in results if r is not None]
        completed = sum(r.finish_reason != "cancelled" for r in finished)
        s = self.stats
        s.batches += 1
        s.completions += completed
        s.completion_tokens += sum(r.completion_tokens for r in finished)
        s.busy_s += seconds
        s.sizes[size] = s.sizes.get(size, 0) + 1
        if size == self.max_batch:
            s.full_batches += 1
            s.full_completions += completed
            s.full_busy_s += seconds
