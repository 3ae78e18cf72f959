"""Verification of a report against its plan (SynCXR step 3's only text quality control, made stricter).

A report is accepted when every planned entity is read back with the planned assertion (and side, when the
plan gives one) and no unplanned abnormal entity is read as present or uncertain. Anatomy mentions and absences
of unplanned findings are allowed: they do not change what the image must show.
"""

from __future__ import annotations

from synthvlp.entities import Mention

ABNORMAL = ("ABNORMALITY", "DISEASE")


def problems(planned: list[dict], mentions: list[Mention]) -> list[str]:
    """Why a report fails its plan, one short reason per problem; empty means accepted."""
    found: dict[str, list[Mention]] = {}
    for m in mentions:
        found.setdefault(m.canonical, []).append(m)
    reasons = []
    for e in planned:
        hits = found.get(e["name"], [])
        if not hits:
            reasons.append(f"missing: {_describe(e)}")
        elif not any(m.assertion == e["assertion"] for m in hits):
            read = sorted({m.assertion for m in hits})
            reasons.append(f"assertion: {e['name']} planned {e['assertion']}, read {'/'.join(read)}")
        elif e["laterality"] and not any(m.assertion == e["assertion"] and m.laterality == e["laterality"] for m in hits):
            read = sorted({str(m.laterality) for m in hits})
            reasons.append(f"side: {e['name']} planned {e['laterality']}, read {'/'.join(read)}")
    planned_names = {e["name"] for e in planned}
    extra = sorted({m.canonical for m in mentions if m.category in ABNORMAL and m.assertion != "absent" and m.canonical not in planned_names})
    reasons += [f"unplanned: {name}" for name in extra]
    return reasons


def feedback(reasons: list[str]) -> list[str]:
    """The reasons as instructions a model can act on in its next attempt."""
    out = []
    for r in reasons:
        kind, _, rest = r.partition(": ")
        if kind == "missing":
            out.append(f"You left out {rest}; state it explicitly.")
        elif kind == "unplanned":
            out.append(f"Do not mention {rest}; it is not part of this case.")
        else:
            out.append(f"Fix the {kind}: {rest}.")
    return out


def _describe(entity: dict) -> str:
    side = f", {entity['laterality']}" if entity["laterality"] else ""
    return f"{entity['name']} ({entity['assertion']}{side})"
