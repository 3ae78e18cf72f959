"""What a trained diffusion renderer reads: the text ``synthvlp render train`` conditions on, built by the same
function when it trains and when the images stage renders, so the two can never drift apart.

The caption is the IMPRESSION (SynCXR/RoentGen) or the whole report, optionally preceded by the entity plan:
the plan's findings in a fixed order (``PLAN: cardiomegaly; left pleural effusion; possible pneumonia.``), so a
renderer can learn what to draw from the same structured plan the phantom renderer draws from. The settings a
pipeline was trained with are recorded in its ``model_index.json`` (``caption_text``, ``caption_plan``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

IMPRESSION = re.compile(r"\bIMPRESSION\s*:", re.IGNORECASE)
PLAN_CATEGORIES = ("ABNORMALITY", "DISEASE")
"""The entity categories a plan phrase names: what a film shows (the RaTE categories of findings and diseases)."""
NO_FINDING = "no finding"


def caption(text: str, mode: str) -> str:
    """The text after the last ``IMPRESSION:`` (all of it when there is none) for ``mode`` 'impression', or the
    whole report for 'report'; whitespace collapsed."""
    if mode == "impression":
        text = IMPRESSION.split(text)[-1]
    return " ".join(text.split())


def plan_phrase(entities: Iterable[Mapping]) -> str:
    """The plan's present and uncertain findings, sorted by name then side: ``PLAN: left pleural effusion;
    possible pneumonia.`` (``PLAN: no finding.`` when it has none). Absent findings are left out (a film does not
    show them); a finding named with and without a side (an extracted plan) is named once per side, and as
    possible only when no mention states it."""
    found: dict[str, tuple[frozenset[str], bool]] = {}
    for entity in entities:
        if entity["category"] in PLAN_CATEGORIES and entity["assertion"] in ("present", "uncertain"):
            sides, stated = found.get(entity["name"], (frozenset(), False))
            side = frozenset([entity["laterality"]]) if entity.get("laterality") else frozenset()
            found[entity["name"]] = (sides | side, stated or entity["assertion"] == "present")
    words = [f"{'' if stated else 'possible '}{side}{name}" for name, (sides, stated) in sorted(found.items()) for side in sorted(f"{s} " for s in sides) or [""]]
    return f"PLAN: {'; '.join(words) or NO_FINDING}."


def conditioning(text: str, mode: str, entities: Iterable[Mapping] | None) -> str:
    """The renderer's caption of a report: ``caption(text, mode)``, after the plan phrase when ``entities`` is
    given (the plan first, so a tokenizer's length limit cuts the report's end, not the plan)."""
    written = caption(text, mode)
    return written if entities is None else f"{plan_phrase(entities)} {written}"
