"""NegEx/ConText-style scopes: which entity mentions a negation, uncertainty, normality or side cue governs.

The rules work on the ordered cue and entity matches of one text, so any entity recogniser (phrase matcher or
a token-classification model) shares them. Scopes never cross a sentence; forward scopes end at a terminator,
backward scopes at the start of the clause. Anatomy is never negated: "no effusion in the lungs" says nothing
against the lungs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from synthvlp.entities.vocabulary import VocabularyError, expand

ASSERTIONS: tuple[str, ...] = ("present", "absent", "uncertain")
_ROLES = {
    "negated_pre": ("absent", True, False), "negated_post": ("absent", False, True),
    "uncertain_pre": ("uncertain", True, False), "uncertain_post": ("uncertain", False, True),
    "pseudo": ("pseudo", False, False), "terminate": ("terminate", False, False),
    "normal": ("normal", True, True),
    "left": ("left", True, True), "right": ("right", True, True), "bilateral": ("bilateral", True, True),
}
SIDES = frozenset({"left", "right", "bilateral"})
_SENTENCE_END = re.compile(r"[.!?;:]+(?=\s|$)|\n\s*\n|\n(?=\s*[-*\d])")
_NORMAL_FIRST_GAP = re.compile(r"[\s:]*(?:(?:size|sizes|contours?|silhouettes?|width|caliber|configuration)\s+)?")
_NORMAL_CHAIN_GAP = re.compile(r"[\s,]*(?:(?:and|&)\s+)?(?:the\s+)?")
_SIDE_BACK_CHARS = 30
_SIDE_AHEAD_CHARS = 20


@dataclass(frozen=True)
class Trigger:
    """A cue phrase: what it asserts and in which direction its scope runs."""

    role: str
    forward: bool
    backward: bool


@dataclass(slots=True)
class Span:
    """One entity match awaiting its assertion; `normal` and `anatomy` come from the vocabulary."""

    start: int
    end: int
    entity: int
    negated: bool
    anatomy: bool
    normal: bool
    lateral: bool
    statement: bool = False
    assertion: str = "present"
    is_normal: bool = False
    laterality: str | None = None


def load_triggers(path: str | Path | None = None) -> dict[str, Trigger]:
    """Cue phrases from the packaged triggers.yaml, or a user file with the same layout."""
    if path is None:
        source = "synthvlp/entities/triggers.yaml"
        text = resources.files("synthvlp.entities").joinpath("triggers.yaml").read_text(encoding="utf-8")
    else:
        source, text = str(path), Path(path).read_text(encoding="utf-8")
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise VocabularyError(f"{source}: not valid YAML ({exc})") from exc
    macros = {k: tuple(v) for k, v in (doc.get("macros") or {}).items()}
    out: dict[str, Trigger] = {}
    for section, phrases in doc.items():
        if section == "macros":
            continue
        if section not in _ROLES:
            raise VocabularyError(f"{source}: unknown section {section!r}; expected one of {sorted(_ROLES)}")
        role, fwd, bwd = _ROLES[section]
        for template in phrases or []:
            for phrase, _ in expand(str(template), macros, frozenset(), f"{source}: {section}"):
                old = out.get(phrase)
                if old is not None and old.role != role:
                    raise VocabularyError(f"{source}: {section}: {phrase!r} (from {template!r}) is already a "
                                          f"{old.role} cue")
                out[phrase] = Trigger(role, fwd or (old is not None and old.forward),
                                      bwd or (old is not None and old.backward))
    return out


def sentence_ends(lowered: str) -> list[int]:
    """Offsets where sentences end; the text end closes the last one."""
    return [m.end() for m in _SENTENCE_END.finditer(lowered)] + [len(lowered) + 1]


def resolve_sentence(items: list[tuple[int, int, Trigger | Span]], lowered: str) -> list[Span]:
    """`resolve` for a text the caller already knows to be one sentence."""
    _resolve_sentence(items, lowered)
    return [obj for _, _, obj in items if isinstance(obj, Span)]


def resolve(items: Sequence[tuple[int, int, Trigger | Span]], lowered: str) -> list[Span]:
    """Set assertion, normality and laterality on every Span among `items` (ordered, non-overlapping)."""
    ends = sentence_ends(lowered)
    spans: list[Span] = []
    sentence: list[tuple[int, int, Trigger | Span]] = []
    k = 0
    for item in items:
        while item[0] >= ends[k]:
            _resolve_sentence(sentence, lowered)
            sentence = []
            k += 1
        sentence.append(item)
        if isinstance(item[2], Span):
            spans.append(item[2])
    _resolve_sentence(sentence, lowered)
    return spans


def _resolve_sentence(seq: list[tuple[int, int, Trigger | Span]], low: str) -> None:
    """Forward scopes first, then backward, normal and side cues, which may override them."""
    if not seq:
        return
    active: str | None = None
    for _, _, obj in seq:
        if isinstance(obj, Span):
            if obj.negated:
                obj.assertion = "absent"
            elif active is not None and not obj.anatomy:
                obj.assertion = active
        elif obj.role in ("absent", "uncertain") and obj.forward:
            active = obj.role
        elif obj.role in ("terminate", "normal"):
            active = None
    for j, (_, _, obj) in enumerate(seq):
        if isinstance(obj, Trigger):
            if obj.role in ("absent", "uncertain") and obj.backward:
                _backward(seq, j, low, obj.role)
            elif obj.role == "normal":
                _normalise(seq, j, low, (-1, 1))
        elif obj.statement:  # "normal heart size and mediastinal contours": the statement carries on
            _normalise(seq, j, low, (1,))
    for j, (_, _, obj) in enumerate(seq):
        if isinstance(obj, Span) and obj.lateral and obj.laterality is None:
            obj.laterality = _side(seq, j, low)


def _backward(seq: list[tuple[int, int, Trigger | Span]], j: int, low: str, role: str) -> None:
    edge = seq[j][0]
    for k in range(j - 1, -1, -1):
        start, end, obj = seq[k]
        if "," in low[end:edge] or (isinstance(obj, Trigger) and obj.role not in SIDES):
            return
        if isinstance(obj, Span) and not obj.negated and not obj.anatomy:
            obj.assertion = role
        edge = start


def _normalise(seq: list[tuple[int, int, Trigger | Span]], j: int, low: str, directions: tuple[int, ...]) -> None:
    """Turn the anatomy run touching a normal cue into normal statements; the cue looks back first."""
    for direction in directions:
        converted = False
        k = j + direction
        gap_re = _NORMAL_CHAIN_GAP if isinstance(seq[j][2], Span) else _NORMAL_FIRST_GAP
        while 0 <= k < len(seq):
            left, right = (seq[k], seq[k - direction]) if direction < 0 else (seq[k - direction], seq[k])
            obj = seq[k][2]
            if not (isinstance(obj, Span) and obj.normal) or not gap_re.fullmatch(low, left[1], right[0]):
                break
            obj.is_normal, converted = True, True
            k, gap_re = k + direction, _NORMAL_CHAIN_GAP
        if converted:
            return


def _side(seq: list[tuple[int, int, Trigger | Span]], j: int, low: str) -> str | None:
    """A side cue just before the mention, a neighbouring mention's side, or a cue just after it."""
    start, end, _ = seq[j]
    for p_start, p_end, obj in reversed(seq[max(0, j - 2):j]):
        if start - p_end > _SIDE_BACK_CHARS or "," in low[p_end:start]:
            break
        if isinstance(obj, Trigger) and obj.role in SIDES:
            return obj.role
        if isinstance(obj, Span) and obj.laterality is not None and start - p_end <= 2:
            return obj.laterality
        start = p_start
    if j + 1 < len(seq):
        n_start, _, obj = seq[j + 1]
        if (isinstance(obj, Trigger) and obj.role in SIDES and n_start - end <= _SIDE_AHEAD_CHARS
                and "," not in low[end:n_start]):
            return obj.role
    return None
