"""Entity mentions with assertion and laterality, from a phrase matcher or a token-classification model.

Both backends only find entity spans; the same ConText rules (negation.py) then decide what each span asserts,
so verification results do not depend on which recogniser ran.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from synthvlp.entities.matcher import PhraseMatcher
from synthvlp.entities.negation import (
    SIDES,
    Span,
    Trigger,
    load_triggers,
    resolve,
    resolve_sentence,
    sentence_ends,
)
from synthvlp.entities.vocabulary import Vocabulary, load_vocabulary, normalise

log = logging.getLogger(__name__)
MAX_TEXT_CHARS = 2_000_000  # beyond this a text is reported empty instead of slowing a whole corpus down
MAX_CACHED_CHARS = 2_000  # longer sentences are rare and would only fill the cache


class Mention(NamedTuple):
    """One entity in one text. `category` is the vocabulary category of `canonical`. A named tuple, because a
    corpus yields millions of them and tuples are the cheapest immutable record to build."""

    start: int
    end: int
    surface: str
    canonical: str
    category: str
    assertion: str
    laterality: str | None

    @property
    def rate_category(self) -> str:
        """RaTE-NER's reading: an absent abnormality or disease is a NON-ABNORMALITY / NON-DISEASE."""
        if self.assertion == "absent" and self.category in ("ABNORMALITY", "DISEASE"):
            return "NON-" + self.category
        return self.category


class EntityExtractor:
    """`extract(texts)` -> one list of Mention per text, in text order.

    backend="rules" (default) needs no model; `cache_size` bounds its cache of resolved sentences (0 disables it).
    backend="transformers" takes `model_path`, a local folder with a token-classification checkpoint tagged B-/I-
    with the five categories; each span is linked to the longest vocabulary entity of its category inside it, and
    unknown spans keep their own text as canonical name.
    """

    def __init__(self, vocab: Vocabulary | None = None, backend: str = "rules",
                 model_path: str | Path | None = None, triggers: str | Path | None = None,
                 device: str = "cpu", batch_size: int = 32, cache_size: int = 100_000) -> None:
        if backend not in ("rules", "transformers"):
            raise ValueError(f"unknown backend {backend!r}; use 'rules' or 'transformers'")
        if backend == "transformers" and model_path is None:
            raise ValueError("backend='transformers' needs model_path, a local token-classification folder")
        self.vocab = vocab if vocab is not None else load_vocabulary()
        self._entities = self.vocab.entities
        index = {e.name: i for i, e in enumerate(self._entities)}
        cues = load_triggers(triggers)
        sides = {p: t.role for p, t in cues.items() if t.role in SIDES and " " not in p}
        phrases: dict[str, tuple[int, bool, str | None] | Trigger] = dict(cues)
        for s in self.vocab.surfaces():
            # an entity phrase wins over a cue with the same words ("normal chest" is a statement, not a cue)
            side = next((sides[w] for w in s.text.split() if w in sides), None)  # "bibasilar atelectasis"
            phrases[s.text] = (index[s.entity], s.negated, side)
        self._matcher = PhraseMatcher(phrases)
        self._cache: dict[str, tuple[tuple[int, int, str, str, str, str | None], ...]] = {}
        self._cache_size = cache_size
        self._model = None
        if backend == "transformers":
            from synthvlp.entities.hf_backend import TokenClassifier

            self._cue_matcher = PhraseMatcher(dict(cues))
            self._model = TokenClassifier(model_path, device=device, batch_size=batch_size)  # type: ignore[arg-type]

    def clear_cache(self) -> None:
        """Forget resolved sentences (benchmarks time a cold cache, so only repetition within a corpus counts)."""
        self._cache.clear()

    def extract(self, texts: Sequence[str] | Iterable[str]) -> list[list[Mention]]:
        texts = [_clean(t, i) for i, t in enumerate(texts)]
        if self._model is None:
            return [self._rules(t) for t in texts]
        return [self._from_model(t, spans) for t, spans in zip(texts, self._model.predict(texts))]

    def _rules(self, text: str) -> list[Mention]:
        """Sentence by sentence. Scopes never cross a sentence, so a sentence seen before (reports repeat "No
        pneumothorax." thousands of times) reuses its resolved mentions from a bounded cache."""
        if not text:
            return []
        low = _lower(text)
        if not self._cache_size:  # same result in one pass over the text: phrases never cross a sentence end
            return self._mentions(text, resolve(self._items(low), low), {})
        cache, out, start = self._cache, [], 0
        for end in sentence_ends(low):
            sentence = low[start:end]
            found = cache.get(sentence)
            if found is None:
                found = self._resolve_sentence(sentence)
                if len(cache) >= self._cache_size:
                    cache.clear()
                if self._cache_size and len(sentence) <= MAX_CACHED_CHARS:
                    cache[sentence] = found
            for s, e, name, category, assertion, side in found:
                out.append(Mention(start + s, start + e, text[start + s:start + e], name, category, assertion, side))
            start = end
        return out

    def _resolve_sentence(self, low: str) -> tuple[tuple[int, int, str, str, str, str | None], ...]:
        return tuple((m.start, m.end, m.canonical, m.category, m.assertion, m.laterality)
                     for m in self._mentions(low, resolve_sentence(self._items(low), low), {}))

    def _items(self, low: str) -> list[tuple[int, int, Trigger | Span]]:
        span = self._span
        return [(s, e, p if isinstance(p, Trigger) else span(s, e, p)) for s, e, p in self._matcher.find(low)]

    def _span(self, start: int, end: int, payload: tuple[int, bool, str | None]) -> Span:
        e = self._entities[payload[0]]
        return Span(start, end, payload[0], payload[1], e.category == "ANATOMY", e.normal is not None, e.lateral,
                    e.category == "NON-ABNORMALITY", laterality=payload[2] if e.lateral else None)

    def _from_model(self, text: str, found: list[tuple[int, int, str]]) -> list[Mention]:
        """Each model span is linked to the longest vocabulary entity of the same category inside it (keeping the
        model's span), or kept under its own text as canonical name; cues come from the text outside the spans."""
        if not text:
            return []
        low = _lower(text)
        items: list[tuple[int, int, Trigger | Span]] = []
        unlinked: dict[int, tuple[str, str]] = {}
        for start, end, category in found:
            hits = [(e - s, p) for s, e, p in self._matcher.find(low[start:end])
                    if not isinstance(p, Trigger) and self._entities[p[0]].category == category]
            if hits:
                items.append((start, end, self._span(start, end, max(hits, key=lambda h: h[0])[1])))
            else:
                idx = -1 - len(unlinked)
                unlinked[idx] = (normalise(low[start:end]), category)
                items.append((start, end, Span(start, end, idx, False, category == "ANATOMY", False,
                                               category in ("ABNORMALITY", "ANATOMY"),
                                               category == "NON-ABNORMALITY")))
        taken = [(s, e) for s, e, _ in items]
        for start, end, cue in self._cue_matcher.find(low):
            if not any(s < end and start < e for s, e in taken):
                items.append((start, end, cue))
        items.sort(key=lambda it: it[0])
        return self._mentions(text, resolve(items, low), unlinked)

    def _mentions(self, text: str, spans: list[Span], unlinked: dict[int, tuple[str, str]]) -> list[Mention]:
        out = []
        for sp in spans:
            if sp.entity < 0:
                name, category = unlinked[sp.entity]
            else:
                e = self._entities[sp.entity]
                name, category = e.name, e.category
                if sp.is_normal and e.normal is not None:
                    name, category = e.normal, "NON-ABNORMALITY"
            out.append(Mention(sp.start, sp.end, text[sp.start:sp.end], name, category,
                               "present" if category == "ANATOMY" else sp.assertion, sp.laterality))
        return out


def _clean(text: object, i: int) -> str:
    """Bad items become empty texts (logged), so one broken report never stops a corpus."""
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str):
        log.warning("text %d is %s, not str; treated as empty", i, type(text).__name__)
        return ""
    if len(text) > MAX_TEXT_CHARS:
        log.warning("text %d has %d characters (> %d); treated as empty", i, len(text), MAX_TEXT_CHARS)
        return ""
    return text


def _lower(text: str) -> str:
    """Lowercase without changing length, so match offsets index the original text."""
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
