"""The skeleton's generators: plans are per-sample reproducible, reports state the plan, images show it."""

from __future__ import annotations

import numpy as np
import pytest

from synthvlp.generation import procedural, template_writer


def _entity(name, assertion="present", side=None):
    return {"name": name, "category": "ABNORMALITY", "assertion": assertion, "laterality": side}


def test_template_report_states_every_planned_entity():
    plan = [_entity("pleural effusion", side="left"), _entity("pneumothorax", "absent"), _entity("unusual thing", side="right")]
    report = template_writer.write_report(plan, np.random.default_rng(0))
    assert "left pleural effusion" in report.findings
    assert "pneumothorax" in report.findings
    assert "unusual thing" in report.findings.lower()
    assert report.impression.lower().startswith("left pleural effusion")
    normal = template_writer.write_report([], np.random.default_rng(0))
    assert normal.impression == "No acute cardiopulmonary abnormality."


def test_renderer_is_deterministic_and_uint8():
    a = procedural.render([_entity("nodule", side="left")], 64, np.random.default_rng(3)).image
    b = procedural.render([_entity("nodule", side="left")], 64, np.random.default_rng(3)).image
    assert a.dtype == np.uint8 and a.shape == (64, 64)
    assert np.array_equal(a, b)


@pytest.mark.parametrize(
    ("finding", "side", "region", "direction"),
    [
        ("pleural effusion", "right", (slice(38, 50), slice(10, 22)), +1),  # dependent base of the image-left lung
        ("pneumothorax", "left", (slice(14, 26), slice(48, 56)), -1),  # lateral apex of the image-right lung
        ("cardiomegaly", None, (slice(36, 44), slice(20, 24)), +1),  # heart border reaches into the right lung
    ],
)
def test_findings_change_the_pixels_where_they_belong(finding, side, region, direction):
    """Average over seeds: the finding's region is brighter (or darker) than in the same images without it."""
    with_finding, without = [], []
    for seed in range(12):
        with_finding.append(procedural.render([_entity(finding, side=side)], 64, np.random.default_rng(seed)).image[region].mean())
        without.append(procedural.render([], 64, np.random.default_rng(seed)).image[region].mean())
    difference = np.mean(with_finding) - np.mean(without)
    assert difference * direction > 8, difference


def test_undrawable_finding_is_reported():
    rendering = procedural.render([_entity("rib fracture", side="left")], 32, np.random.default_rng(0))
    assert rendering.undrawable == ["rib fracture"]


def test_extractor_reads_back_exactly_the_planned_findings():
    """The verification contract: a template report's abnormal positives are the plan's, no more, no less."""
    from synthvlp.config import RunConfig
    from synthvlp.entities import EntityExtractor, load_vocabulary
    from synthvlp.generation.plan import plan_samples

    config = RunConfig()
    vocab = load_vocabulary()
    plans = plan_samples(config, vocab, range(300)).column("planned_entities").to_pylist()
    reports = [template_writer.write_report(p, np.random.default_rng(i)) for i, p in enumerate(plans)]
    mentions = EntityExtractor(vocab).extract([f"{r.findings} {r.impression}" for r in reports])
    for plan, report, found in zip(plans, reports, mentions, strict=True):
        planned = {e["name"] for e in plan if e["assertion"] == "present"}
        extracted = {m.canonical for m in found if m.assertion == "present" and m.category in ("ABNORMALITY", "DISEASE")}
        assert extracted == planned, report
