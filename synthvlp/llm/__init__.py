"""The local LLM engine, apart from its entry points (as vLLM keeps its engine apart from its server).

``engine``: model loading and batched sampling with a ``torch.Generator`` per request; ``batcher``: gathers
concurrent requests into one generate call. Used by the ``transformers`` report writer
(``synthvlp.generation.writers.hf_local``) and the OpenAI-compatible server (``synthvlp.serving``); it imports
neither, so both may import it.
"""
