"""Report text checks: each returns a score per report and a pass/reject verdict.

They catch the ways an LLM report goes wrong that the entity verification does not: a truncated or runaway
answer, a model stuck repeating itself, a missing section, and a report whose findings drifted from its plan.
Near-duplicate reports need the whole dataset and are found in ``dedupe``.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from synthvlp.config import FilterSection

ABNORMAL = ("ABNORMALITY", "DISEASE")
_WORD = re.compile(r"[a-z0-9]+")


def repeated_ngram_share(text: str, n: int = 3) -> float:
    """Share of word n-grams that repeat an earlier one; near 0 for prose, near 1 for a stuck generator."""
    words = _WORD.findall(text.lower())
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    counts = Counter(grams)
    return sum(c - 1 for c in counts.values()) / len(grams)


def plan_mismatch(planned: list[dict] | None, extracted: list[dict] | None) -> float:
    """Number of abnormal findings that differ between plan and report (missing plus unplanned), by name."""
    want = {e["name"] for e in planned or () if e["assertion"] == "present" and e["category"] in ABNORMAL}
    got = {e["name"] for e in extracted or () if e["assertion"] == "present" and e["category"] in ABNORMAL}
    return float(len(want ^ got))


def text_scores(rows: list[dict], settings: FilterSection) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{check: (scores, passed)} for rows with findings, impression, planned_entities and extracted_entities."""
    lengths = np.array([len((r["findings"] or "").strip()) + len((r["impression"] or "").strip()) for r in rows], dtype=np.float64)
    sections = np.array([float(bool((r["findings"] or "").strip()) and bool((r["impression"] or "").strip())) for r in rows])
    repeats = np.array([repeated_ngram_share(f"{r['findings']} {r['impression']}") for r in rows])
    mismatch = np.array([plan_mismatch(r["planned_entities"], r["extracted_entities"]) for r in rows])
    return {
        "report_length": (lengths, (lengths >= settings.min_report_chars) & (lengths <= settings.max_report_chars)),
        "sections": (sections, sections == 1.0),
        "repetition": (repeats, repeats <= settings.max_repeated_ngrams),
        "plan_match": (mismatch, mismatch <= settings.max_plan_mismatch),
    }
