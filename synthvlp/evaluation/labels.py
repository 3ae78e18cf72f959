"""One label vocabulary for every benchmark: each published label name maps to an entity of our vocabulary.

Benchmarks spell the same finding differently ("Effusion" in NIH, "Pleural Effusion" in CheXpert,
"pleural effusion" in PadChest); zero-shot prompts, result tables and ``synthvlp compare`` need one name per
finding, so adapters pass every raw label through ``harmonise``. The target names are the entity vocabulary's
(``synthvlp/entities/vocabulary.yaml``), so a zero-shot prompt says what our report writer says. The few labels
that are not findings of a report (``no finding``, ``support devices``, ``covid-19``) are listed in
``EXTRA_LABELS``. A label neither mapped nor in the vocabulary is an error naming the benchmark, so a new
benchmark column cannot be dropped silently.
"""

from __future__ import annotations

import re
from functools import cache

from synthvlp.errors import UserError

EXTRA_LABELS: frozenset[str] = frozenset({"no finding", "support devices", "covid-19"})
"""Harmonised labels that are not entities of the vocabulary (a report states them in other words)."""

ALIASES: dict[str, str] = {
    # NIH ChestX-ray14
    "effusion": "pleural effusion",
    "infiltration": "infiltrate",
    "pleural_thickening": "pleural thickening",
    "hernia": "hiatal hernia",
    "edema": "pulmonary edema",
    "no_finding": "no finding",
    # CheXpert / MIMIC-CXR
    "lung opacity": "opacity",
    "lung lesion": "lesion",
    "pleural other": "pleural thickening",
    # RSNA, SIIM, COVIDx, VinDr-CXR, PadChest spellings
    "lung opacity (pneumonia)": "pneumonia",
    "covid": "covid-19",
    "covid19": "covid-19",
    "covid-19 pneumonia": "covid-19",
    "aortic enlargement": "prominent aortic arch",
    "ild": "interstitial lung disease",
    "nodule/mass": "nodule",
    "other lesion": "lesion",
    "pulmonary fibrosis": "fibrosis",
    "normal": "no finding",
    "no findings": "no finding",
    "costophrenic angle blunting": "pleural effusion",
    "alveolar pattern": "consolidation",
    "interstitial pattern": "increased interstitial markings",
    "air trapping": "hyperinflation",
    "laminar atelectasis": "atelectasis",
    "pseudonodule": "nodule",
    "lung tumor": "mass",
}
"""Raw label (lower case, surrounding space removed) -> harmonised name, where the two differ."""


def normalise(raw: str) -> str:
    """Lower case, single spaces, no surrounding blanks: the key ``ALIASES`` is looked up with."""
    return re.sub(r"\s+", " ", raw.strip().lower())


def harmonise(raw: str, benchmark: str) -> str:
    """The harmonised name of ``raw``; an unknown label is a ``UserError`` naming ``benchmark``."""
    key = normalise(raw)
    name = ALIASES.get(key) or ALIASES.get(key.replace(" ", "_")) or key.replace("_", " ")
    if name in EXTRA_LABELS or name in _entity_names():
        return name
    raise UserError(f"{benchmark}: label {raw!r} is neither an entity of the vocabulary nor listed in "
                    f"synthvlp.evaluation.labels.ALIASES; add it there")


@cache
def _entity_names() -> frozenset[str]:
    from synthvlp.entities import load_vocabulary

    return frozenset(e.name for e in load_vocabulary().entities)
