"""The CXR entity vocabulary: one source of truth for sampling, verification and corpus statistics.

Entities live in a YAML (or JSON) file. Synonyms may use two small template forms so that the many ways a
radiologist phrases one statement stay readable in the file instead of being spelled out by hand:
``{macro}`` expands to each form listed under ``macros`` and ``[optional words]`` to the words or nothing.
A macro listed under ``negated_macros`` marks every surface that used it as an internal negation
("heart size {not_be} enlarged"), so the extractor can assert it absent without a separate trigger.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from synthvlp.errors import UserError

CATEGORIES: tuple[str, ...] = ("ABNORMALITY", "NON-ABNORMALITY", "DISEASE", "NON-DISEASE", "ANATOMY")
CHEXPERT_LABELS: tuple[str, ...] = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Lung Opacity", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)
# Categories whose entities usually take a side; an entity may override with `lateral:`.
_LATERAL_BY_DEFAULT = {"ABNORMALITY", "ANATOMY"}
_MAX_EXPANSIONS = 1024
_TEMPLATE = re.compile(r"\{(\w+)\}|\[([^\[\]]+)\]")


class VocabularyError(UserError, ValueError):
    """A vocabulary file that cannot be used; the message names the file, line and field."""


@dataclass(frozen=True)
class Entity:
    """One canonical concept. `normal` names the NON-ABNORMALITY entity an anatomy mention becomes when the
    report calls it normal ("heart size" + "is normal" -> "normal heart size")."""

    name: str
    category: str
    synonyms: tuple[str, ...] = ()
    chexpert: str | None = None
    mesh: tuple[str, ...] = ()
    lateral: bool = False
    location: str | None = None
    normal: str | None = None


@dataclass(frozen=True)
class Surface:
    """One literal phrase the matcher looks for, after template expansion."""

    text: str
    entity: str
    negated: bool = False


@dataclass
class Vocabulary:
    """Entities plus the exclusion pairs that keep a sampled report free of contradictions."""

    entities: list[Entity]
    exclusions: list[tuple[str, str]] = field(default_factory=list)
    macros: dict[str, tuple[str, ...]] = field(default_factory=dict)
    negated_macros: frozenset[str] = frozenset()
    source: str = "<memory>"

    def __post_init__(self) -> None:
        self._by_name = {e.name: e for e in self.entities}
        self._excluded: dict[str, set[str]] = {}
        for a, b in self.exclusions:
            for x in self._select(a):
                for y in self._select(b):
                    if x != y:
                        self._excluded.setdefault(x, set()).add(y)
                        self._excluded.setdefault(y, set()).add(x)

    def __getitem__(self, name: str) -> Entity:
        return self._by_name[name.strip().lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.strip().lower() in self._by_name

    def __len__(self) -> int:
        return len(self.entities)

    def by_category(self, category: str) -> list[Entity]:
        if category not in CATEGORIES:
            raise KeyError(f"unknown category {category!r}; expected one of {CATEGORIES}")
        return [e for e in self.entities if e.category == category]

    def conflicts(self, a: str, b: str) -> bool:
        """True when a report may not state both. "no X" (or "X" absent) always conflicts with "X"."""
        a, b = a.strip().lower(), b.strip().lower()
        if a.removeprefix("no ") == b.removeprefix("no ") and a != b:
            return True
        return b in self._excluded.get(a, ())

    def surfaces(self) -> list[Surface]:
        """Every literal phrase to match: synonyms expanded through macros and optional words, then the plural
        of each phrase's last word where no entity claims that plural itself. A phrase two entities both
        claim is a VocabularyError, since the extractor could not tell them apart."""
        out: dict[str, Surface] = {}
        for e in self.entities:
            where = f"{self.source}: entity {e.name!r}"
            for syn in (e.name, *e.synonyms):
                for text, negated in expand(syn, self.macros, self.negated_macros, where):
                    old = out.get(text)
                    if old is not None and old.entity != e.name:
                        raise VocabularyError(f"{where}: phrase {text!r} (from {syn!r}) also belongs to "
                                              f"entity {old.entity!r}; keep it in one entity")
                    if old is None:
                        out[text] = Surface(text, e.name, negated)
        for surface in list(out.values()):
            plural = _plural(surface.text)
            if plural and plural not in out:
                out[plural] = Surface(plural, surface.entity, surface.negated)
        return list(out.values())

    def _select(self, selector: str) -> list[str]:
        """An exclusion side: an entity name, `category:NAME` or `chexpert:Label`."""
        kind, _, value = selector.partition(":")
        if kind == "category" and value in CATEGORIES:
            return [e.name for e in self.entities if e.category == value]
        if kind == "chexpert" and value:
            return [e.name for e in self.entities if e.chexpert == value]
        if selector in self._by_name:
            return [selector]
        raise VocabularyError(f"{self.source}: exclusions: {selector!r} is neither an entity name, "
                              "'category:<CATEGORY>' nor 'chexpert:<label>'")

def expand(template: str, macros: dict[str, tuple[str, ...]], negated_macros: frozenset[str],
           where: str) -> list[tuple[str, bool]]:
    """All phrases a synonym template stands for, each with whether a negated macro produced it."""
    parts: list[list[tuple[str, bool]]] = []
    pos = 0
    for m in _TEMPLATE.finditer(template):
        parts.append([(template[pos:m.start()], False)])
        if m.group(1) is not None:
            if m.group(1) not in macros:
                raise VocabularyError(f"{where}: {template!r} uses unknown macro {{{m.group(1)}}}; "
                                      "define it under 'macros'")
            neg = m.group(1) in negated_macros
            parts.append([(form, neg) for form in macros[m.group(1)]])
        else:
            parts.append([(m.group(2), False), ("", False)])
        pos = m.end()
    parts.append([(template[pos:], False)])
    combos = list(itertools.islice(itertools.product(*parts), _MAX_EXPANSIONS + 1))
    if len(combos) > _MAX_EXPANSIONS:
        raise VocabularyError(f"{where}: {template!r} expands to more than {_MAX_EXPANSIONS} phrases; split it")
    return [(normalise(" ".join(t for t, _ in c)), any(n for _, n in c)) for c in combos]


def _plural(phrase: str) -> str | None:
    """English plural of the last word for the common radiology nouns; None when it already looks plural."""
    head, _, last = phrase.rpartition(" ")
    if not last.isalpha() or len(last) < 3 or last.endswith(("s", "ed", "ing", "ly", "al", "ic", "ar", "ous", "y")):
        if not (last.endswith("y") and len(last) > 3 and last[-2] not in "aeiou"):
            return None
        last = last[:-1] + "ies"
    elif last.endswith(("ch", "sh", "x", "z")):
        last += "es"
    else:
        last += "s"
    return f"{head} {last}".strip()


def normalise(text: str) -> str:
    """Lowercase and collapse whitespace and hyphens, the key under which surfaces are matched."""
    return " ".join(re.split(r"[\s\-]+", text.lower())).strip()


def load_vocabulary(path: str | Path | None = None) -> Vocabulary:
    """Load the packaged vocabulary, or a user's YAML/JSON file with the same layout."""
    if path is None:
        ref = resources.files("synthvlp.entities").joinpath("vocabulary.yaml")
        return parse_vocabulary(ref.read_text(encoding="utf-8"), source="synthvlp/entities/vocabulary.yaml")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise VocabularyError(f"{path}: cannot read vocabulary file ({exc})") from exc
    return parse_vocabulary(text, source=str(path))


class _LineLoader(yaml.SafeLoader):
    """Records the line of every mapping so errors can point into the file."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        mapping = super().construct_mapping(node, deep=deep)
        mapping["__line__"] = node.start_mark.line + 1
        return mapping


def parse_vocabulary(text: str, source: str = "<string>") -> Vocabulary:
    try:
        doc = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        raise VocabularyError(f"{source}: not valid YAML/JSON ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("entities"), dict):
        raise VocabularyError(f"{source}: top level needs an 'entities' mapping of category -> list")
    entities: list[Entity] = []
    seen: dict[str, int] = {}
    for category, items in doc["entities"].items():
        if category == "__line__":
            continue
        if category not in CATEGORIES:
            raise VocabularyError(f"{source}: entities: unknown category {category!r}; use one of {CATEGORIES}")
        for item in items or []:
            entity = _entity(item, category, source)
            line = item.get("__line__", 0)
            if entity.name in seen:
                raise VocabularyError(f"{source}:{line}: entity {entity.name!r} already defined on line "
                                      f"{seen[entity.name]}; canonical names must be unique")
            seen[entity.name] = line
            entities.append(entity)
    macros = {k: tuple(str(f) for f in v) for k, v in (doc.get("macros") or {}).items() if k != "__line__"}
    negated = frozenset(doc.get("negated_macros") or ())
    exclusions = [tuple(p) for p in doc.get("exclusions") or []]
    for pair in exclusions:
        if len(pair) != 2:
            raise VocabularyError(f"{source}: exclusions: {list(pair)!r} must be a pair [a, b]")
    vocab = Vocabulary(entities, exclusions, macros, negated, source)  # type: ignore[arg-type]
    for e in entities:
        if e.normal is not None and (e.normal not in vocab or vocab[e.normal].category != "NON-ABNORMALITY"):
            raise VocabularyError(f"{source}:{seen[e.name]}: entity {e.name!r}: normal: {e.normal!r} must name "
                                  "a NON-ABNORMALITY entity")
    return vocab


def _entity(item: Any, category: str, source: str) -> Entity:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"].strip():
        where = item.get("__line__", "?") if isinstance(item, dict) else "?"
        raise VocabularyError(f"{source}:{where}: {category} entry needs a non-empty string 'name'")
    line = item["__line__"]
    unknown = set(item) - {"name", "syn", "chexpert", "mesh", "lateral", "location", "normal", "__line__"}
    if unknown:
        raise VocabularyError(f"{source}:{line}: entity {item['name']!r}: unknown field(s) {sorted(unknown)}")
    chexpert = item.get("chexpert")
    if chexpert is not None and chexpert not in CHEXPERT_LABELS:
        raise VocabularyError(f"{source}:{line}: entity {item['name']!r}: chexpert {chexpert!r} is not one of "
                              f"the 14 CheXpert labels")
    return Entity(
        name=" ".join(item["name"].lower().split()),
        category=category,
        synonyms=tuple(_strings(item.get("syn"), source, line, "syn")),
        chexpert=chexpert,
        mesh=tuple(_strings(item.get("mesh"), source, line, "mesh")),
        lateral=bool(item.get("lateral", category in _LATERAL_BY_DEFAULT)),
        location=item.get("location"),
        normal=" ".join(item["normal"].lower().split()) if item.get("normal") else None,
    )


def _strings(value: Any, source: str, line: int, fieldname: str) -> Iterable[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise VocabularyError(f"{source}:{line}: field {fieldname!r} must be a string or a list of strings")
    return value
