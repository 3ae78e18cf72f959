"""The local LLM engine: a causal LM (HF folder or GGUF file) loaded once and generating in batches.

``LocalModel`` does the generation; each sampled request draws from its own ``torch.Generator`` (``RowSampler``),
so its text depends on its seed and prompt, not on its batch-mates. Structured output is supported for the schema
shape reports use, an object of string properties: the JSON skeleton is written by the engine and the model fills
each string, which is cut at its closing quote, so the answer is always valid JSON of that schema. A core module:
the ``transformers`` report writer (generation) and ``synthvlp serve`` (serving) both drive it, through
``synthvlp.llm.batcher``.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from synthvlp.errors import UserError


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
