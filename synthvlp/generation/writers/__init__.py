"""Report writers behind one interface: the embedded grammar, an OpenAI-compatible server, a local model."""

from synthvlp.generation.writers.base import Draft, ReportWriter, WriteRequest, WriterError, build_writer

__all__ = ["Draft", "ReportWriter", "WriteRequest", "WriterError", "build_writer"]
