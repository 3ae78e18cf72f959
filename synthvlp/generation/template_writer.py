"""The embedded report writer: clinically phrased FINDINGS and IMPRESSION from a plan, with no model.

Deterministic given the sample's seed. Each planned entity is stated once in FINDINGS, with its assertion and
side, so the extractor can verify the report against the plan; the IMPRESSION summarises the positives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NAME = "template"
VERSION = "0.1.0"

_PRESENT = {
    "cardiomegaly": ["The heart is enlarged, consistent with cardiomegaly.", "Cardiomegaly is present."],
    "pleural effusion": ["There is a {size} {side} pleural effusion.", "A {size} {side} pleural effusion is seen."],
    "pneumothorax": ["There is a {size} {side} pneumothorax.", "A {side} pneumothorax is present."],
    "consolidation": ["There is {side} lower lobe consolidation.", "Focal consolidation is seen in the {side} lung."],
    "pulmonary edema": ["There is pulmonary edema with perihilar haziness.", "Findings are consistent with pulmonary edema."],
    "atelectasis": ["There is {side} basilar atelectasis.", "Atelectasis is seen at the {side} base."],
    "nodule": ["There is a {side} lung nodule.", "A nodule is seen in the {side} lung."],
    "emphysema": ["Findings are consistent with emphysema.", "There is emphysema."],
}
_ABSENT = ["No {name}.", "There is no {name}.", "No evidence of {name}."]
_GENERIC_PRESENT = ["There is {article} {side}{name}.", "{Name} is present."]
_NORMAL_CLOSERS = ["The osseous structures are intact.", "The mediastinal contours are unremarkable."]


@dataclass(frozen=True)
class Report:
    findings: str
    impression: str


def write_report(entities: list[dict], rng: np.random.Generator) -> Report:
    """Write FINDINGS and IMPRESSION that state exactly the planned entities."""
    sentences: list[str] = []
    positives: list[str] = []
    for entity in entities:
        name, side = entity["name"], entity["laterality"]
        if entity["assertion"] == "present":
            sentences.append(_present_sentence(name, side, rng))
            positives.append(f"{side} {name}" if side and side != "bilateral" else name)
        else:
            sentences.append(str(rng.choice(_ABSENT)).format(name=name))
    sentences.append(str(rng.choice(_NORMAL_CLOSERS)))
    if positives:
        impression = "; ".join(positives).capitalize() + "."
    else:
        impression = "No acute cardiopulmonary abnormality."
    return Report(findings=" ".join(sentences), impression=impression)


def _present_sentence(name: str, side: str | None, rng: np.random.Generator) -> str:
    side_text = side or ""
    size = str(rng.choice(["small", "moderate", "large"]))
    if name in _PRESENT:
        text = str(rng.choice(_PRESENT[name])).format(side=side_text, size=size)
    else:
        article = "an" if (side_text or name)[0] in "aeiou" else "a"
        text = str(rng.choice(_GENERIC_PRESENT)).format(
            article=article, side=f"{side_text} " if side_text else "", name=name, Name=name.capitalize()
        )
    return " ".join(text.split())
