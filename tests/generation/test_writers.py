"""Template grammar writer, verification and the write -> verify -> retry loop with its journal."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from synthvlp.config import load_config
from synthvlp.entities import EntityExtractor, load_vocabulary
from synthvlp.errors import UserError
from synthvlp.generation.planner import plan_run
from synthvlp.generation.reports import write_reports
from synthvlp.generation.verify import feedback, problems
from synthvlp.generation.writers import Draft, ReportWriter, WriteRequest, WriterError
from synthvlp.generation.writers.template import grammar, write_report

VOCAB = load_vocabulary()
EXTRACTOR = EntityExtractor(VOCAB)


def entity(name, assertion="present", side=None):
    return {"name": name, "category": VOCAB[name].category, "assertion": assertion, "laterality": side}


def read(text):
    return EXTRACTOR.extract([text])[0]


def test_every_grammar_phrasing_reads_back_as_what_it_states():
    g = grammar()
    for name, options in g["present"].items():
        side = "left" if VOCAB[name].lateral else None
        for option, size in itertools.product(options, g["sizes"]):
            text = option.format(side=side or "", Side=(side or "").capitalize(), size=size, Size=size.capitalize())
            assert problems([entity(name, side=side)], read(text)) == [], text
    for name, options in g["normal"].items():
        for text in options:
            assert problems([entity(name)], read(text)) == [], text
    for option in g["absent"]:
        assert problems([entity("pneumothorax", "absent")], read(option.format(name="pneumothorax"))) == [], option


def test_template_reports_verify_for_a_whole_quickstart_plan_and_vary():
    plans = plan_run(load_config("configs/quickstart.yaml", ["run.n_samples=400"]), VOCAB).column("planned_entities").to_pylist()
    reports = [write_report(p, np.random.default_rng(i)) for i, p in enumerate(plans)]
    for plan, report, found in zip(plans, reports, EXTRACTOR.extract([f"{r.findings} {r.impression}" for r in reports]), strict=True):
        assert problems(plan, found) == [], report
    assert len({r.findings for r in reports}) > 300
    normal = write_report([entity("clear lungs")], np.random.default_rng(0))
    assert "acute" in normal.impression


def test_problems_name_missing_wrong_assertion_side_and_unplanned():
    plan = [entity("pleural effusion", side="left"), entity("pneumothorax", "absent"), entity("nodule", side="right")]
    reasons = problems(plan, read("There is a right pleural effusion. There is a pneumothorax. Cardiomegaly."))
    assert reasons == [
        "side: pleural effusion planned left, read right",
        "assertion: pneumothorax planned absent, read present",
        "missing: nodule (present, right)",
        "unplanned: cardiomegaly",
    ]
    assert feedback(reasons)[2] == "You left out nodule (present, right); state it explicitly."
    assert problems(plan[:2], read("Small left pleural effusion. No pneumothorax. No pneumonia. The left lung.")) == []


class ScriptedWriter(ReportWriter):
    """Writes a wrong report first (omits everything), the template's report on later attempts; fails for ids listed."""

    name = "scripted"

    def __init__(self, wrong_attempts: int = 1, fail: set[str] = frozenset()):
        self.wrong_attempts, self.fail, self.calls = wrong_attempts, fail, []

    async def write(self, request: WriteRequest) -> Draft:
        self.calls.append((request.id, request.attempt, request.feedback))
        if request.id in self.fail:
            raise WriterError("server unreachable")
        if request.attempt < self.wrong_attempts:
            return Draft("There is cardiomegaly.", "Cardiomegaly.")
        return write_report(request.entities, np.random.default_rng(request.attempt))


def _plan(n=6):
    cfg = load_config(None, [f"run.n_samples={n}", "plan.min_findings=1", "reports.max_retries=2"])
    return cfg, plan_run(cfg, VOCAB)


def test_loop_retries_with_feedback_and_records_attempts():
    cfg, plan = _plan()
    writer = ScriptedWriter(wrong_attempts=1)
    table = write_reports(cfg, plan, EXTRACTOR, writer=writer)
    assert table.column("report_attempts").to_pylist() == [2] * 6
    assert all(table.column("report_verified").to_pylist())
    assert all(r.startswith("attempt 1: missing: ") for r in table.column("report_rejections").to_pylist())
    retries = [c for c in writer.calls if c[1] == 1]
    assert all(any("left out" in f for f in c[2]) for c in retries)


def test_loop_gives_up_after_r_retries_and_keeps_the_report_unverified():
    cfg, plan = _plan()
    table = write_reports(cfg, plan, EXTRACTOR, writer=ScriptedWriter(wrong_attempts=99))
    assert table.column("report_attempts").to_pylist() == [3] * 6
    assert not any(table.column("report_verified").to_pylist())
    assert table.column("report_rejections")[0].as_py().count("attempt") == 3


def test_journal_resumes_without_rewriting_finished_samples(tmp_path):
    cfg, plan = _plan()
    journal = tmp_path / "journal.jsonl"
    failing = {plan.column("id")[i].as_py() for i in (1, 4)}
    with pytest.raises(UserError, match=r"2 of 6 samples got no draft .* 4 finished reports are kept"):
        write_reports(cfg, plan, EXTRACTOR, journal=journal, writer=ScriptedWriter(fail=failing))
    with open(journal, "a") as handle:  # a torn last line, as after a crash mid-write
        handle.write('{"id": "s000')
    again = ScriptedWriter()
    table = write_reports(cfg, plan, EXTRACTOR, journal=journal, writer=again)
    assert sorted({c[0] for c in again.calls}) == sorted(failing)
    assert table.column("id").to_pylist() == plan.column("id").to_pylist()
    assert all(table.column("report_verified").to_pylist())


def test_template_backend_is_deterministic_by_seed():
    cfg, plan = _plan()
    a = write_reports(cfg, plan, EXTRACTOR)
    assert a.equals(write_reports(cfg, plan, EXTRACTOR))
    assert a.column("report_generator")[0].as_py() == "template@0.2.0"


def test_client_spreads_requests_over_base_urls_and_skips_one_cooling_down():
    import time

    from synthvlp.generation.writers.openai_client import OpenAIWriter

    settings = load_config(None, ["reports.backend=openai", "reports.base_urls=[http://a/v1, http://b/v1, http://c/v1]"]).reports
    writer = OpenAIWriter(settings)
    picks = [writer.client.pick() for _ in range(6)]
    assert sorted(picks) == sorted(["http://a/v1", "http://b/v1", "http://c/v1"] * 2)
    writer.client._in_flight["http://a/v1"] = 5
    writer.client._cooldown["http://b/v1"] = time.monotonic() + 60
    assert {writer.client.pick() for _ in range(4)} == {"http://c/v1"}


def test_packaged_prompts_load_from_any_working_directory(tmp_path, monkeypatch):
    from synthvlp.generation.prompts import load_prompts

    monkeypatch.chdir(tmp_path)
    prompts = load_prompts(load_config(None, []).reports.prompts)
    assert prompts.examples and "FINDINGS" in prompts.system.render(json=False).upper()


def test_transformers_backend_writes_seeded_json_reports_through_the_shared_engine(tmp_path):
    """The ``transformers`` writer drives ``synthvlp.llm`` in-process: a schema-shaped answer, the same text for the
    same request whatever it is batched with."""
    import asyncio

    from tiny_lm import build_tiny_lm

    from synthvlp.config import ReportsSection
    from synthvlp.generation.writers.hf_local import LocalModelWriter

    settings = ReportsSection(backend="transformers", model_path=build_tiny_lm(tmp_path / "lm"), max_tokens=16,
                              structured_output="json_schema", batch_size=4)
    writer = LocalModelWriter(settings)
    plan = [entity("pleural effusion", side="left")]

    async def write(ids):
        await writer.start()
        try:
            return await asyncio.gather(*(writer.write(WriteRequest(i, plan, run_seed=3)) for i in ids))
        finally:
            await writer.stop()

    alone = asyncio.run(write(["s1"]))[0]
    batched = asyncio.run(write(["s0", "s1", "s2"]))
    assert writer.tag.startswith("transformers@") and "malformed" not in alone.meta
    assert batched[1] == alone, "a request's report does not depend on its batch-mates"
