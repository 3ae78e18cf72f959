"""The embedded writer: a small grammar that writes varied, clinically phrased reports from a plan, no model.

Deterministic given (run seed, sample id, attempt): a retry after a failed verification draws new phrasings.
FINDINGS states every planned entity once (positives first, then absences, sometimes merged into one list,
then normal statements); IMPRESSION summarises the positives with their size and side.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import numpy as np
import yaml

from synthvlp.generation.writers.base import Draft, ReportWriter, WriteRequest
from synthvlp.seeding import sample_rng


@cache
def grammar() -> dict:
    """The phrasing tables (grammar.yaml next to this module)."""
    return yaml.safe_load(resources.files("synthvlp.generation.writers").joinpath("grammar.yaml").read_text(encoding="utf-8"))


class TemplateWriter(ReportWriter):
    name = "template"
    version = "0.2.0"

    async def write(self, request: WriteRequest) -> Draft:
        return write_report(request.entities, sample_rng(request.run_seed, request.id, "report", request.attempt))


def write_report(entities: list[dict], rng: np.random.Generator) -> Draft:
    """FINDINGS and IMPRESSION that state exactly the planned entities."""
    g = grammar()
    present = [e for e in entities if e["assertion"] == "present" and e["category"] in ("ABNORMALITY", "DISEASE")]
    absent = [e["name"] for e in entities if e["assertion"] == "absent"]
    normal = [e for e in entities if e not in present and e["assertion"] != "absent"]
    sizes = [str(rng.choice(g["sizes"])) for _ in present]
    sentences = [_present(e["name"], e["laterality"], size, rng) for e, size in zip(present, sizes, strict=True)]
    if len(absent) >= 2 and rng.random() < 0.5:
        names = ", ".join(absent[:-1]) + f" or {absent[-1]}"
        sentences.append(str(rng.choice(g["absent_list"])).format(names=names))
    else:
        sentences += [str(rng.choice(g["absent"])).format(name=n) for n in absent]
    sentences += [_normal(e["name"], rng) for e in normal]
    if present:
        joiner = str(rng.choice(g["impression_joiners"]))
        parts = [_summary(e["name"], e["laterality"], size) for e, size in zip(present, sizes, strict=True)]
        impression = joiner.join(parts) + "."
    else:
        impression = str(rng.choice(g["impression_normal"]))
    return Draft(findings=" ".join(sentences), impression=impression)


def _present(name: str, side: str | None, size: str, rng: np.random.Generator) -> str:
    g = grammar()
    side_text = side or ""
    options = g["present"].get(name) or g["generic_present"]
    text = str(rng.choice(options)).format(
        side=side_text,
        Side=side_text.capitalize(),
        size=size,
        Size=size.capitalize(),
        article="an" if (side_text or name)[0] in "aeiou" else "a",
        side_=f"{side_text} " if side_text else "",
        name=name,
        Name_side=f"{side_text} {name}".strip().capitalize(),
    )
    return " ".join(text.split()).replace(" .", ".")


def _normal(name: str, rng: np.random.Generator) -> str:
    options = grammar()["normal"].get(name) or [f"{name.capitalize()}."]
    return str(rng.choice(options))


def _summary(name: str, side: str | None, size: str) -> str:
    """'Moderate left pleural effusion'; size only for findings whose phrasing takes one."""
    sized = "{size}" in " ".join(grammar()["present"].get(name, []))
    words = [size if sized else "", side or "", name]
    return " ".join(w for w in words if w).capitalize()
