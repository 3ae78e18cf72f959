"""What to draw: a sample's entity plan (and report wording) read into drawable findings.

An entity is drawn by its own name when the renderer knows it, else by its CheXpert label (``rib fracture`` is a
Fracture, ``pneumonia`` a Consolidation); anything else becomes a generic opacity and is listed as undrawable so
the run report counts it. Severity words the report attaches to a finding ("a large left pleural effusion")
set its size, so the image follows the text as well as the plan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from synthvlp.entities import Vocabulary, load_vocabulary

KINDS = (
    "pleural effusion", "pneumothorax", "cardiomegaly", "consolidation", "pulmonary edema", "atelectasis",
    "nodule", "mass", "opacity", "emphysema", "fracture", "endotracheal tube", "enteric tube",
    "central venous catheter", "chest tube", "pacemaker", "sternotomy wires",
)  # fmt: skip
"""Every finding the phantom draws itself."""

_BY_NAME = {
    "hyperinflation": "emphysema",
    "pneumonia": "consolidation",
    "airspace disease": "consolidation",
    "enlarged cardiac silhouette": "cardiomegaly",
    "blunting of the costophrenic angle": "pleural effusion",
    "hydropneumothorax": "pneumothorax",
    "pulmonary vascular congestion": "pulmonary edema",
    "subsegmental atelectasis": "atelectasis",
    "defibrillator": "pacemaker",
    "nasogastric tube": "enteric tube",
}
_BY_CHEXPERT = {
    "Pleural Effusion": "pleural effusion",
    "Pneumothorax": "pneumothorax",
    "Cardiomegaly": "cardiomegaly",
    "Consolidation": "consolidation",
    "Pneumonia": "consolidation",
    "Edema": "pulmonary edema",
    "Atelectasis": "atelectasis",
    "Lung Lesion": "nodule",
    "Lung Opacity": "opacity",
    "Fracture": "fracture",
    "Support Devices": "central venous catheter",
}
_SEVERITY = {"trace": 0, "tiny": 0, "small": 0, "mild": 0, "minimal": 0, "moderate": 1, "large": 2, "severe": 2, "massive": 2, "marked": 2}
_HEART_NORMAL = ("normal heart size", "normal cardiac silhouette", "normal cardiomediastinal silhouette")
_NORMAL_CATEGORIES = ("NON-ABNORMALITY", "NON-DISEASE", "ANATOMY")  # statements of normality: nothing to draw


@dataclass(frozen=True)
class Finding:
    """One finding to draw: the entity it came from, how it is drawn, where and how big."""

    name: str  # the plan's entity name (what the mask is labelled with)
    kind: str  # one of KINDS
    laterality: str | None  # "left", "right", "bilateral" or None
    severity: int  # 0 small, 1 moderate, 2 large


@dataclass
class Scene:
    findings: list[Finding] = field(default_factory=list)
    heart: str = "any"  # "normal" when the report says so, "enlarged" with cardiomegaly
    undrawable: list[str] = field(default_factory=list)

    def has(self, kind: str) -> bool:
        return any(f.kind == kind for f in self.findings)

    def sides(self, kind: str) -> set[str]:
        """Sides ('left'/'right') the plan states for findings of ``kind`` (an unstated side is drawn at random
        later, so it is not listed)."""
        out: set[str] = set()
        for f in self.findings:
            if f.kind == kind and f.laterality is not None:
                out.update(("left", "right") if f.laterality == "bilateral" else (f.laterality,))
        return out


@lru_cache(maxsize=1)
def _vocabulary() -> Vocabulary:
    return load_vocabulary()


def kind_of(name: str) -> str | None:
    """How the phantom draws entity ``name``, or None if it has no drawing for it."""
    if name in KINDS:
        return name
    if name in _BY_NAME:
        return _BY_NAME[name]
    vocab = _vocabulary()
    if name in vocab:
        label = vocab[name].chexpert
        if label in _BY_CHEXPERT:
            return "mass" if label == "Lung Lesion" and "mass" in name else _BY_CHEXPERT[label]
    return None


def read_scene(entities: list[dict], report_text: str = "") -> Scene:
    """The scene of a plan: present entities become findings; normal statements constrain the anatomy."""
    scene = Scene()
    text = report_text.lower()
    for entity in entities:
        name, assertion = entity["name"], entity["assertion"]
        kind = kind_of(name)
        if (assertion == "absent" and kind == "cardiomegaly") or (assertion == "present" and name in _HEART_NORMAL):
            scene.heart = "normal"
        if assertion != "present" or entity.get("category") in _NORMAL_CATEGORIES:
            continue
        if kind is None:
            scene.undrawable.append(name)
            kind = "opacity"
        scene.findings.append(Finding(name, kind, entity.get("laterality"), _severity(text, name)))
    if scene.has("cardiomegaly"):
        scene.heart = "enlarged"
    return scene


def _severity(text: str, name: str) -> int:
    """Severity from a word at most three words before the finding's name in the report, moderate if none."""
    match = re.search(r"\b(" + "|".join(_SEVERITY) + r")\s+(?:[a-z]+\s+){0,2}" + re.escape(name), text)
    return _SEVERITY[match.group(1)] if match else 1
