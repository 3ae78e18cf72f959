"""The ``transformers`` backend: a local causal LM (HF folder or GGUF file) generating in batches.

``LocalModel`` does the generation; ``Batcher`` gathers requests that arrive together (from the concurrent
verification loops in-process, or from HTTP clients in ``synthvlp serve``) into one ``generate`` call, which is
where a GPU or a many-core CPU gets its throughput. Structured output is supported for the schema shape reports
use, an object of string properties: the JSON skeleton is written by the engine and the model fills each string,
which is cut at its closing quote, so the answer is always valid JSON of that schema (other schemas get HTTP 400).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from synthvlp.config import ReportsSection
from synthvlp.errors import UserError
from synthvlp.generation.prompts import MalformedAnswer, load_prompts, parse_json, parse_sections
from synthvlp.generation.writers.base import Draft, ReportWriter, WriteRequest
from synthvlp.seeding import sample_seed

log = logging.getLogger(__name__)


@dataclass
class GenRequest:
    """One completion: a chat (``messages``) or a raw ``prompt``; ``fields`` asks for a JSON object of strings.

    ``cancel`` is set when nobody waits for the answer any more (an HTTP client that disconnected): a queued
    request is then skipped and a running one stops at its next token. ``deadline`` (a ``time.monotonic()``
    value) stops this request's generation when it passes, whatever its batch-mates still need; the server sets
    it from its per-request timeout. ``generated`` holds the tokens of the time slices it already ran (see
    ``Batcher``).
    """

    messages: list[dict] | None = None
    prompt: str | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    seed: int = 0
    fields: tuple[str, ...] = ()
    cancel: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)
    deadline: float | None = None
    generated: list[int] = field(default_factory=list)


@dataclass
class GenResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"


class LocalModel:
    """A tokenizer and causal LM loaded from a folder or a ``.gguf`` file; ``generate`` runs one batch."""

    def __init__(self, path: Path | str, device: str = "cpu") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = check_model_path(path)
        if path.suffix == ".gguf":
            kwargs = {"gguf_file": path.name}
            folder = path.parent
        else:
            kwargs, folder = {}, path
        self.name = path.stem if path.suffix == ".gguf" else path.name
        self.tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        self.model = AutoModelForCausalLM.from_pretrained(folder, **kwargs).to(device).eval()
        self.device = device
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._torch = torch
        self._lock = threading.Lock()
        # HF fast tokenizers must not be shared between threads; admission counting gets its own copy
        self._counter = copy.deepcopy(self.tokenizer)
        self._counter_lock = threading.Lock()
        self.context_length = _context_length(self.model.config, self.tokenizer)
        self.max_token_chars = max(1, max(map(len, self.tokenizer.get_vocab())))

    def prompt_tokens(self, request: GenRequest) -> tuple[str, int]:
        """(the rendered prompt, its token count), with the counting tokenizer: thread-safe, and never waits for
        a generating batch. Raises whatever the chat template raises for messages it refuses."""
        with self._counter_lock:
            rendered = self.render(request)
            return rendered, len(self._counter(rendered, add_special_tokens=False)["input_ids"])

    def render(self, request: GenRequest) -> str:
        if request.prompt is not None:
            return request.prompt
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(request.messages, add_generation_prompt=True, tokenize=False)
        return "".join(f"{m['role']}: {m['content']}\n" for m in request.messages) + "assistant: "

    def generate(self, requests: list[GenRequest], halt: threading.Event | None = None, waiting: Callable[[], bool] | None = None,
                 slice_tokens: int = 64) -> list[GenResult | None]:
        """One batch. Plain requests get one pass; field requests one pass per field over the batch. Requests that
        differ in temperature or fields are generated in separate passes, so none gets another's sampling or schema.

        Each row stops at its own ``max_tokens`` or ``deadline``; a request cancelled before or during its pass
        ends early with ``finish_reason`` "cancelled"; setting ``halt`` stops every row at the next token (a
        server shutting down). When ``waiting()`` says other requests are queued, plain requests are paused after
        ``slice_tokens`` new tokens: their result is None and ``generated`` holds their tokens so far, so the
        caller can run them again after the others (time slicing)."""
        with self._lock:
            self._halt = halt
            prompts = [self.render(r) for r in requests]
            results: list[GenResult | None] = [None] * len(requests)
            groups: dict[tuple, list[int]] = {}
            for i, request in enumerate(requests):
                groups.setdefault((request.fields, request.temperature), []).append(i)
            for (fields, _), members in groups.items():
                if fields:
                    done = self._fill_fields([prompts[i] for i in members], [requests[i] for i in members])
                else:
                    outcomes = self._complete([prompts[i] for i in members], [requests[i] for i in members], pause=(slice_tokens, waiting) if waiting else None)
                    done = [None if o is None else GenResult(o[0], self._count(prompts[i]), o[1], o[2]) for i, o in zip(members, outcomes, strict=True)]
                for i, result in zip(members, done, strict=True):
                    results[i] = result
            return results

    def _fill_fields(self, prompts: list[str], requests: list[GenRequest]) -> list[GenResult]:
        if not requests:
            return []
        names = requests[0].fields
        values: list[dict[str, str]] = [{} for _ in requests]
        used = [0] * len(requests)
        for position, name in enumerate(names):
            if all(r.cancel.is_set() for r in requests):
                break
            heads = [p + _json_head(v, name) for p, v in zip(prompts, values, strict=True)]
            budget = [GenRequest(max_tokens=max(8, r.max_tokens // len(names)), temperature=r.temperature, seed=r.seed + position,
                                 cancel=r.cancel, deadline=r.deadline)
                      for r in requests]
            for k, (text, n, _) in enumerate(self._complete(heads, budget, min_new_tokens=1)):  # type: ignore[misc]  # None only when paused
                values[k][name] = _until_quote(text)
                used[k] += n
        return [GenResult(json.dumps(v), self._count(p), n, "cancelled" if r.cancel.is_set() else "stop")
                for v, p, n, r in zip(values, prompts, used, requests, strict=True)]

    def _complete(self, prompts: list[str], requests: list[GenRequest], min_new_tokens: int = 0,
                  pause: tuple[int, Callable[[], bool]] | None = None) -> list[tuple[str, int, str] | None]:
        """(text, tokens, finish reason) per row, continuing each from its ``generated`` tokens; None for a row
        paused by ``pause`` = (slice_tokens, waiting) before it finished."""
        if not prompts:
            return []
        if all(r.cancel.is_set() for r in requests):
            return [("", 0, "cancelled") for _ in requests]
        from transformers import LogitsProcessorList, StoppingCriteriaList

        torch = self._torch
        pad = self.tokenizer.pad_token_id
        rows = [self.tokenizer(p, add_special_tokens=False)["input_ids"] + r.generated for p, r in zip(prompts, requests, strict=True)]
        width = max(map(len, rows))  # left padding, as the tokenizer's own padding would do
        input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.device)
        attention = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
        remaining = [r.max_tokens - len(r.generated) for r in requests]
        temperature = requests[0].temperature
        # a sampled row draws from its own generator, seeded as when it started this slice (see RowSampler)
        sampler = [RowSampler([r.seed + len(r.generated) for r in requests], temperature, self.device)] if temperature > 0 else []
        stops = RowStops(width, remaining, [r.deadline for r in requests], [r.cancel for r in requests], getattr(self, "_halt", None), pause)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention,
                max_new_tokens=max(remaining),
                min_new_tokens=min_new_tokens,
                do_sample=False,  # RowSampler draws sampled rows; greedy then keeps its draw
                top_p=None,
                top_k=None,
                pad_token_id=pad,
                logits_processor=LogitsProcessorList(sampler),
                stopping_criteria=StoppingCriteriaList([stops]),
            )
        results: list[tuple[str, int, str] | None] = []
        for row, request, left, end in zip(out[:, width:], requests, remaining, stops.ended_at, strict=True):
            ids = row.tolist()[: min(left, end or left)]  # a finished row is padded past its end
            ended = self.tokenizer.eos_token_id in ids
            request.generated += ids[: ids.index(self.tokenizer.eos_token_id)] if ended else ids
            if request.cancel.is_set():
                reason = "cancelled"
            elif ended:
                reason = "stop"
            elif len(request.generated) >= request.max_tokens:
                reason = "length"
            elif request.deadline is not None and time.monotonic() >= request.deadline:
                reason = "timeout"
            elif stops.paused:
                results.append(None)
                continue
            else:
                reason = "length"  # halted
            results.append((self.tokenizer.decode(request.generated, skip_special_tokens=True), len(request.generated), reason))
        return results

    def _count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def check_model_path(path: Path | str) -> Path:
    """``path`` if it is a local HF model folder (with ``config.json``) or a ``.gguf`` file; otherwise a
    ``UserError`` that says what was given and what is expected (an empty path would load the current folder)."""
    if not str(path).strip():
        raise UserError("model path is empty; give a local HF model folder (with config.json) or a .gguf file")
    path = Path(path)
    if not path.exists():
        raise UserError(f"model path {path} not found; give a local HF model folder or a .gguf file")
    if path.is_file() and path.suffix != ".gguf":
        raise UserError(f"model path {path} is a file but not a .gguf; give a .gguf file or a local HF model folder")
    if path.is_dir() and not (path / "config.json").is_file():
        raise UserError(f"model path {path} is not a Hugging Face model folder (no config.json); give the model's folder or a .gguf file")
    return path


def _context_length(config, tokenizer) -> int | None:
    """Tokens the model can attend to (prompt plus completion), from its config or its tokenizer; None if unknown."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 10**8 else None


class RowStops:
    """A ``StoppingCriteria`` marking each row done at its own token limit, deadline or cancellation, and every row once
    ``halt`` is set or, with ``pause`` = (slice_tokens, waiting), once the batch has run a slice while others wait.

    HF generation ends a batch when every row is done, so one long request no longer decides how long its
    batch-mates generate, a late one is cut off at its deadline, and a long batch yields the engine to queued
    requests instead of holding it to the end."""

    def __init__(self, prompt_length: int, limits: list[int], deadlines: list[float | None], cancels: list[threading.Event],
                 halt: threading.Event | None, pause: tuple[int, Callable[[], bool]] | None = None) -> None:
        self.prompt_length, self.limits, self.deadlines, self.halt, self.pause = prompt_length, limits, deadlines, halt, pause
        self.cancels = cancels
        self.paused = False
        self.ended_at: list[int | None] = [None] * len(limits)
        """Tokens each row had when it was first marked done (its later tokens are padding)."""

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        produced = input_ids.shape[1] - self.prompt_length
        if (self.halt is not None and self.halt.is_set()) or (self.pause is not None and produced >= self.pause[0] and self.pause[1]()):
            self.paused = not (self.halt is not None and self.halt.is_set())
            return torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        now = time.monotonic()
        done = [produced >= limit or (deadline is not None and now >= deadline) for limit, deadline in zip(self.limits, self.deadlines, strict=True)]
        done = [d or cancel.is_set() for d, cancel in zip(done, self.cancels, strict=True)]
        self.ended_at = [end if end is not None else produced if finished else None for end, finished in zip(self.ended_at, done, strict=True)]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class RowSampler:
    """A logits processor that draws each row's next token from that row's own ``torch.Generator`` at
    ``temperature``, then leaves only the drawn token finite so greedy decoding keeps it.

    HF sampling draws from the global torch RNG, so a batch could follow one seed only and every other row's
    sample depended on its batch-mates (and seeding touched global state). Like MONAI's per-instance RNG, each
    request owns its generator: a request's text depends on its seed and prompt, not on what it was batched with."""

    def __init__(self, seeds: list[int], temperature: float, device: str) -> None:
        import torch

        self.generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
        self.temperature = temperature

    def __call__(self, input_ids, scores):
        import torch

        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        drawn = torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, self.generators, strict=True)])
        kept = torch.full_like(scores, float("-inf"))
        return kept.scatter_(1, drawn[:, None], 0.0)


def _json_head(done: dict[str, str], name: str) -> str:
    """The JSON written so far plus the opening of field ``name``: '{"findings": "...", "impression": "'."""
    return json.dumps(done)[:-1] + (", " if done else "") + f'"{name}": "'


def _until_quote(text: str) -> str:
    """A JSON string's content: up to the first unescaped quote, without control characters. Leading quotes are
    dropped (and end-of-text is blocked for the first token), approximating the schema's minLength of 1."""
    text = text.lstrip('" ')
    out = []
    escaped = False
    for ch in text:
        if ch == '"' and not escaped:
            break
        escaped = ch == "\\" and not escaped
        out.append(ch if ch.isprintable() else " ")
    return " ".join("".join(out).replace("\\", "").split())


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


class LocalModelWriter(ReportWriter):
    """Reports from a local model in this process, batched across the concurrent verification loops."""

    name = "transformers"

    def __init__(self, settings: ReportsSection) -> None:
        if settings.model_path is None:
            raise UserError("reports.model_path: the transformers backend needs a local HF model folder or .gguf file")
        self.settings = settings
        self.prompts = load_prompts(settings.prompts)
        self.model = LocalModel(settings.model_path, settings.device)
        self.version = self.model.name
        self._batcher: Batcher | None = None

    async def start(self) -> None:
        self._batcher = Batcher(self.model, self.settings.batch_size)
        await self._batcher.start()

    async def stop(self) -> None:
        if self._batcher is not None:
            await self._batcher.stop()

    async def write(self, request: WriteRequest) -> Draft:
        json_mode = self.settings.structured_output != "text"
        messages = self.prompts.messages(request.entities, request.feedback, json_mode, self.settings.few_shot)
        seed = sample_seed(request.run_seed, request.id, "llm", request.attempt) % 2**31
        gen = GenRequest(messages=messages, max_tokens=self.settings.max_tokens, temperature=self.settings.temperature, seed=seed,
                         fields=("findings", "impression") if json_mode else ())
        result = await self._batcher.submit(gen)
        try:
            findings, impression = parse_json(result.text) if json_mode else parse_sections(result.text)
        except MalformedAnswer:
            # a local model's unparseable answer is a failed attempt (verification rejects it), not a lost sample
            return Draft(" ".join(result.text.split()), "", {"malformed": True})
        return Draft(findings, impression)
