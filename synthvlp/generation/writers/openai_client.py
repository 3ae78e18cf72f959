"""The ``openai`` backend: report drafts from any OpenAI-compatible server through ``synthvlp.chat_client``.

The client keeps the server saturated and survives it (load balancing over ``reports.base_urls``, retries with
backoff). This module adds what is specific to reports: the prompt messages, structured output with
``response_format`` (json_schema), and with ``structured_output: auto`` plain ``FINDINGS:/IMPRESSION:`` text from
the moment a server refuses the schema. A malformed answer is retried like a server error.
"""

from __future__ import annotations

import logging

from synthvlp.chat_client import ChatClient, ChatError, Retry, refuses_structured_output
from synthvlp.config import ReportsSection
from synthvlp.generation.prompts import RESPONSE_FORMAT, MalformedAnswer, load_prompts, parse_json, parse_sections
from synthvlp.generation.writers.base import Draft, ReportWriter, WriteRequest, WriterError
from synthvlp.seeding import sample_rng, sample_seed

log = logging.getLogger(__name__)


class OpenAIWriter(ReportWriter):
    name = "openai"

    def __init__(self, settings: ReportsSection) -> None:
        self.settings = settings
        self.prompts = load_prompts(settings.prompts)
        self.json_mode = settings.structured_output != "text"
        self.client = ChatClient(settings, on_bad_request=self._refused)
        self.stats = self.client.stats

    @property
    def version(self) -> str:  # type: ignore[override]
        return self.client.model

    async def start(self) -> None:
        try:
            await self.client.start()
        except ChatError as exc:
            raise WriterError(f"reports.{exc}") from exc

    async def stop(self) -> None:
        await self.client.stop()

    async def write(self, request: WriteRequest) -> Draft:
        def body() -> dict:
            payload = {
                "messages": self.prompts.messages(request.entities, request.feedback, self.json_mode, self.settings.few_shot),
                "temperature": self.settings.temperature,
                "max_tokens": self.settings.max_tokens,
                "seed": sample_seed(request.run_seed, request.id, "llm", request.attempt) % 2**31,
            }
            if self.json_mode:
                payload["response_format"] = RESPONSE_FORMAT
            return payload

        rng = sample_rng(request.run_seed, request.id, "backoff", request.attempt)
        try:
            (findings, impression), url = await self.client.complete(body, self._parse, rng)
        except ChatError as exc:
            raise WriterError(str(exc)) from exc
        return Draft(findings, impression, {"url": url})

    def _parse(self, content: str) -> tuple[str, str]:
        json_mode = self.json_mode
        try:
            return parse_json(content) if json_mode else parse_sections(content)
        except MalformedAnswer as exc:
            if not (json_mode and self.settings.structured_output == "auto"):
                raise Retry("malformed", str(exc)) from exc
            try:
                return parse_sections(content)
            except MalformedAnswer:
                raise Retry("malformed", str(exc)) from exc

    def _refused(self, url: str, text: str) -> None:
        """HTTP 400 hook: a server that refuses ``response_format`` gets plain-text requests from now on."""
        if self.settings.structured_output == "auto" and refuses_structured_output(text):
            if self.json_mode:  # requests in flight at the first refusal are refused too, and retried as text
                log.warning("%s refuses response_format json_schema; asking for plain FINDINGS/IMPRESSION text from now on", url)
                self.json_mode = False
            raise Retry("no-structured-output", f"{url}: no structured output")
