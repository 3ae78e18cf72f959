"""Finding labels read back from report text: what label-aware targets are computed from."""

from __future__ import annotations

import pickle

import torch

from synthvlp.pretrain.labels import NO_FINDING, FindingLabels


def _found(labels: FindingLabels, text: str) -> set[str]:
    return {labels.names[i] for i in torch.nonzero(labels(text)).flatten().tolist()}


def test_present_findings_and_not_absent_ones():
    labels = FindingLabels()
    text = "FINDINGS: There is a small left pleural effusion. No pneumothorax. Heart size is normal. IMPRESSION: Small left pleural effusion."
    assert _found(labels, text) == {"pleural effusion"}
    assert _found(labels, "FINDINGS: The heart is enlarged. There is pulmonary edema. IMPRESSION: Cardiomegaly; Pulmonary edema.") == {"cardiomegaly", "pulmonary edema"}


def test_a_normal_report_is_no_finding_and_no_vector_is_empty():
    labels = FindingLabels()
    assert _found(labels, "FINDINGS: No pleural effusion or pneumothorax. The lungs are clear. IMPRESSION: No acute cardiopulmonary process.") == {NO_FINDING}
    assert _found(labels, "") == {NO_FINDING}
    assert labels.names[-1] == NO_FINDING and len(set(labels.names)) == len(labels.names)


def test_pickles_without_its_phrase_tables():
    """DataLoader workers receive the labeller by pickling; it rebuilds the extractor on first use."""
    labels = FindingLabels()
    labels("There is cardiomegaly.")
    copy = pickle.loads(pickle.dumps(labels))
    assert len(pickle.dumps(labels)) < 1000
    assert _found(copy, "There is cardiomegaly.") == {"cardiomegaly"}
