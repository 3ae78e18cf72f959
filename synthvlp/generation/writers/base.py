"""The writer interface: one async ``write(request) -> Draft`` for every backend.

Async because the backend that matters at scale is a remote server that must be kept saturated with many
requests in flight; local backends simply answer at once (template) or batch the requests that arrive together
(transformers). ``start``/``stop`` bracket one event loop, since HTTP clients and batch queues belong to one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from synthvlp.config import RunConfig


class WriterError(Exception):
    """A draft could not be obtained (server unreachable after retries, unparseable output); says why."""


@dataclass(frozen=True)
class WriteRequest:
    """One report to write. ``feedback`` lists what the previous draft got wrong (empty on the first attempt)."""

    id: str
    entities: list[dict]
    attempt: int = 0
    feedback: tuple[str, ...] = ()
    run_seed: int = 0


@dataclass(frozen=True)
class Draft:
    findings: str
    impression: str
    meta: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        return f"FINDINGS: {self.findings}\nIMPRESSION: {self.impression}"


class ReportWriter(ABC):
    """A backend that turns a plan into FINDINGS and IMPRESSION."""

    name: str = "writer"
    version: str = "0"

    async def start(self) -> None:
        """Open per-event-loop resources (connections, batch queues)."""

    async def stop(self) -> None:
        """Close what ``start`` opened."""

    @abstractmethod
    async def write(self, request: WriteRequest) -> Draft:
        """Write one report; raise WriterError when no usable draft can be had."""

    @property
    def tag(self) -> str:
        """What the manifest's report_generator column records."""
        return f"{self.name}@{self.version}"


def build_writer(config: RunConfig) -> ReportWriter:
    """The writer ``reports.backend`` names; heavy imports happen only for the backend in use."""
    backend = config.reports.backend
    if backend == "template":
        from synthvlp.generation.writers.template import TemplateWriter

        return TemplateWriter()
    if backend == "openai":
        from synthvlp.generation.writers.openai_client import OpenAIWriter

        return OpenAIWriter(config.reports)
    from synthvlp.generation.writers.hf_local import LocalModelWriter

    return LocalModelWriter(config.reports)
