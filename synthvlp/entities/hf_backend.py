"""Entity spans from a local token-classification checkpoint in RaTE-NER's layout (B-/I- tags over the five
categories). Only spans come from the model; assertions come from the shared ConText rules."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from synthvlp.entities.vocabulary import CATEGORIES, VocabularyError

_TAG = re.compile(r"^([BI])[-_](.+)$")


class TokenClassifier:
    """Loads tokenizer and model from `model_path` (never from a hub) and tags texts in batches; texts longer
    than the model's window are read in overlapping windows."""

    def __init__(self, model_path: str | Path, device: str = "cpu", batch_size: int = 32, stride: int = 32) -> None:
        import torch
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        path = Path(model_path)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path}: no config.json; model_path must be a local token-classification folder")
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModelForTokenClassification.from_pretrained(path, local_files_only=True).to(device).eval()
        self.labels = {int(i): _category(str(lab), path) for i, lab in self.model.config.id2label.items()}
        self.device, self.batch_size, self.stride, self._torch = device, batch_size, stride, torch
        window = getattr(self.model.config, "max_position_embeddings", 512) or 512
        self.max_length = min(int(getattr(self.tokenizer, "model_max_length", window) or window), window, 512)

    def predict(self, texts: Sequence[str]) -> list[list[tuple[int, int, str]]]:
        """Per text, (start, end, category) character spans."""
        out: list[list[tuple[int, int, str]]] = [[] for _ in texts]
        todo = [i for i, t in enumerate(texts) if t.strip()]
        for k in range(0, len(todo), self.batch_size):
            idx = todo[k:k + self.batch_size]
            enc = self.tokenizer([texts[i] for i in idx], truncation=True, max_length=self.max_length,
                                 stride=self.stride, return_overflowing_tokens=True, return_offsets_mapping=True,
                                 padding=True, return_tensors="pt")
            owner = enc.pop("overflow_to_sample_mapping").tolist()
            offsets = enc.pop("offset_mapping").tolist()
            with self._torch.no_grad():
                logits = self.model(**{k: v.to(self.device) for k, v in enc.items()}).logits
            for window, tags in enumerate(logits.argmax(-1).tolist()):
                text_i = idx[owner[window]]
                spans = decode_bio(offsets[window], [self.labels[t] for t in tags], texts[text_i])
                out[text_i].extend(s for s in spans if not any(s[0] < e and b < s[1] for b, e, _ in out[text_i]))
        return [sorted(spans) for spans in out]


def decode_bio(offsets: Sequence[Sequence[int]], tags: Sequence[tuple[str, str] | None], text: str
               ) -> list[tuple[int, int, str]]:
    """Character spans from per-token (B|I, CATEGORY) tags. An I- tag whose category differs from the open span
    starts a new span, as token classifiers often emit I- first; special tokens (empty offsets) close spans."""
    spans: list[tuple[int, int, str]] = []
    open_span: list | None = None
    for (start, end), tag in zip(offsets, tags):
        if start == end or tag is None:
            if open_span:
                spans.append(tuple(open_span))  # type: ignore[arg-type]
            open_span = None
            continue
        bio, category = tag
        if bio == "I" and open_span and open_span[2] == category:
            open_span[1] = end
        else:
            if open_span:
                spans.append(tuple(open_span))  # type: ignore[arg-type]
            open_span = [start, end, category]
    if open_span:
        spans.append(tuple(open_span))  # type: ignore[arg-type]
    return [_trim(s, text) for s in spans if text[s[0]:s[1]].strip()]


def _trim(span: tuple[int, int, str], text: str) -> tuple[int, int, str]:
    start, end, category = span
    while text[start].isspace():
        start += 1
    while text[end - 1].isspace():
        end -= 1
    return start, end, category


def _category(label: str, path: Path) -> tuple[str, str] | None:
    """'B-NON-ABNORMALITY' -> ('B', 'NON-ABNORMALITY'); 'O' -> None."""
    if label.upper() == "O":
        return None
    m = _TAG.match(label.upper().replace("NON_", "NON-"))
    if not m or m.group(2) not in CATEGORIES:
        raise VocabularyError(f"{path}/config.json: id2label has {label!r}; expected 'O' or B-/I- with one of "
                              f"{CATEGORIES}")
    return m.group(1), m.group(2)
