"""The ``transformers`` report backend: reports from a local causal LM (HF folder or GGUF file) in this process.

The engine (``synthvlp.llm``) is shared with ``synthvlp serve``; this writer turns a sample's entities into
messages, submits them to a ``Batcher`` that gathers the concurrent verification loops' requests into one
``generate`` call, and parses the answer.
"""

from __future__ import annotations

from synthvlp.config import ReportsSection
from synthvlp.errors import UserError
from synthvlp.generation.prompts import MalformedAnswer, load_prompts, parse_json, parse_sections
from synthvlp.generation.writers.base import Draft, ReportWriter, WriteRequest
from synthvlp.llm.batcher import Batcher
from synthvlp.llm.engine import GenRequest, LocalModel
from synthvlp.seeding import sample_seed


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
