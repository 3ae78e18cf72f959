"""The optional multimodal-LLM judge: a vision chat model looks at each image (and its report) and says pass or reject.

The cheap pixel checks catch broken images; a judge catches images that look wrong to a reader (no recognisable
anatomy, a finding the report does not mention). It talks to any OpenAI-compatible server that accepts
``image_url`` content (vLLM serving a vision-language model, for instance) through the same client as the report
writer, so it load-balances, retries and backs off the same way. Images go as base64 PNG data URLs at the size the
filter decoded them. The answer is asked for as JSON ``{"verdict": "pass"|"reject", "reason": ...}``; a server
without structured output may answer in text, whose first PASS or REJECT counts.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
from collections.abc import Sequence

import numpy as np
from PIL import Image

from synthvlp.chat_client import ChatClient, ChatError, Retry, refuses_structured_output
from synthvlp.config import JudgeSection
from synthvlp.errors import UserError
from synthvlp.seeding import sample_rng

VERDICT_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "image_verdict",
        "schema": {
            "type": "object",
            "properties": {"verdict": {"type": "string", "enum": ["pass", "reject"]}, "reason": {"type": "string"}},
            "required": ["verdict", "reason"],
        },
    },
}
_WORD = re.compile(r"\b(pass|reject)\b", re.IGNORECASE)


def parse_verdict(content: str) -> tuple[bool, str]:
    """(passed, reason) from a JSON verdict, or from the first PASS/REJECT word of a text answer."""
    try:
        answer = json.loads(content)
        verdict = str(answer["verdict"]).strip().lower()
        if verdict in ("pass", "reject"):
            return verdict == "pass", str(answer.get("reason", ""))
    except (ValueError, KeyError, TypeError):
        pass
    match = _WORD.search(content)
    if match is None:
        raise Retry("malformed", f"judge answer has no pass/reject verdict: {content[:80]!r}")
    return match.group(1).lower() == "pass", content.strip()[:200]


def data_url(pixels: np.ndarray) -> str:
    """A PNG data URL of a (h, w) float image in [0, 1]."""
    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.round(pixels * 255), 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def judge_images(settings: JudgeSection, pixels: np.ndarray, texts: Sequence[str | None] | None, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """(passed per image, the judge's reason per image) for (n, h, w) ``pixels`` and optional report texts."""
    texts = list(texts) if texts is not None else [None] * len(pixels)
    try:
        return asyncio.run(_judge_all(settings, pixels, texts, seed))
    except ChatError as exc:
        raise UserError(f"filter.judge: {exc}") from exc


async def _judge_all(settings: JudgeSection, pixels: np.ndarray, texts: list[str | None], seed: int) -> tuple[np.ndarray, list[str]]:
    structured = {"on": settings.structured_output != "text"}

    def refused(url: str, text: str) -> None:
        # requests already in flight when the first refusal arrived are refused too: retry them as text as well
        if settings.structured_output == "auto" and refuses_structured_output(text):
            structured["on"] = False
            raise Retry("no-structured-output", f"{url}: no structured output")

    client = ChatClient(settings, on_bad_request=refused)
    await client.start()
    try:

        async def one(index: int) -> tuple[bool, str]:
            def body() -> dict:
                content = [{"type": "image_url", "image_url": {"url": data_url(pixels[index])}}]
                if texts[index] and settings.include_report:
                    content.insert(0, {"type": "text", "text": f"Report: {texts[index]}"})
                payload = {"messages": [{"role": "system", "content": settings.prompt}, {"role": "user", "content": content}],
                           "temperature": settings.temperature, "max_tokens": settings.max_tokens}
                if structured["on"]:
                    payload["response_format"] = VERDICT_FORMAT
                return payload

            answer, _ = await client.complete(body, parse_verdict, sample_rng(seed, f"judge-{index}", "backoff"))
            return answer

        answers = await asyncio.gather(*(one(i) for i in range(len(pixels))))
    finally:
        await client.stop()
    return np.array([passed for passed, _ in answers], dtype=bool), [reason for _, reason in answers]
