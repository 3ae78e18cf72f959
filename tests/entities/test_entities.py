"""Vocabulary and rule-based extractor. Expected results were written by hand; most sentences are taken verbatim
from IU X-ray reports (../shared/data/iu-xray)."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthvlp.entities import CATEGORIES, EntityExtractor, Mention, VocabularyError, load_vocabulary
from synthvlp.entities.vocabulary import parse_vocabulary

IU_TGZ = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "iu-xray" / "NLMCXR_reports.tgz"


def facts(extractor: EntityExtractor, text: str) -> set[tuple[str, str]]:
    return {(m.canonical, m.assertion) for m in extractor.extract([text])[0] if m.category != "ANATOMY"}


# --- vocabulary -------------------------------------------------------------------------------------------------

def test_vocabulary_is_broad_and_covers_every_category(vocab):
    assert len(vocab) >= 300
    for category in CATEGORIES:
        assert vocab.by_category(category), category
    names = [e.name for e in vocab.entities]
    assert len(names) == len(set(names))
    assert all(n == n.lower().strip() for n in names)


def test_entity_fields(vocab):
    effusion = vocab["Pleural Effusion"]
    assert effusion.category == "ABNORMALITY"
    assert effusion.chexpert == "Pleural Effusion"
    assert "Pleural Effusion" in effusion.mesh
    assert "effusion" in effusion.synonyms
    assert effusion.lateral and effusion.location == "pleura"
    assert vocab["cardiomegaly"].lateral is False
    assert vocab["heart"].normal == "normal heart size"
    with pytest.raises(KeyError):
        vocab["no such entity"]
    with pytest.raises(KeyError):
        vocab.by_category("FINDING")


def test_conflicts(vocab):
    assert vocab.conflicts("cardiomegaly", "normal heart size")
    assert vocab.conflicts("normal heart size", "cardiomegaly")
    assert vocab.conflicts("pleural effusion", "no pleural effusion")
    assert vocab.conflicts("consolidation", "clear lungs")  # via chexpert:Consolidation
    assert vocab.conflicts("pneumothorax", "normal chest")  # via category:ABNORMALITY
    assert not vocab.conflicts("cardiomegaly", "pleural effusion")
    assert not vocab.conflicts("cardiomegaly", "cardiomegaly")


def test_user_vocabulary_file(tmp_path):
    path = tmp_path / "mini.yaml"
    path.write_text(
        "macros: {be: [is, are]}\n"
        "entities:\n"
        "  ABNORMALITY:\n"
        "    - {name: Effusion, syn: ['fluid {be} present'], chexpert: Pleural Effusion}\n"
        "  ANATOMY:\n"
        "    - {name: lungs, normal: clear lungs}\n"
        "  NON-ABNORMALITY:\n"
        "    - {name: clear lungs}\n"
        "exclusions: [[effusion, clear lungs]]\n")
    vocab = load_vocabulary(path)
    assert [e.name for e in vocab.entities] == ["effusion", "lungs", "clear lungs"]
    assert {s.text for s in vocab.surfaces()} >= {"effusion", "fluid is present", "fluid are present", "effusions"}
    assert vocab.conflicts("effusion", "clear lungs")
    out = EntityExtractor(vocab).extract(["No effusion. The lungs are clear."])[0]
    assert [(m.canonical, m.assertion) for m in out] == [("effusion", "absent"), ("clear lungs", "present")]


@pytest.mark.parametrize("body, message", [
    ("entities:\n  FINDING:\n    - {name: x}\n", "unknown category 'FINDING'"),
    ("entities:\n  DISEASE:\n    - {name: x, colour: red}\n", ":3: entity 'x': unknown field(s) ['colour']"),
    ("entities:\n  DISEASE:\n    - {name: x}\n    - {name: X}\n", ":4: entity 'x' already defined on line 3"),
    ("entities:\n  DISEASE:\n    - {name: x, chexpert: Flu}\n", "chexpert 'Flu' is not one of"),
    ("entities:\n  DISEASE:\n    - {syn: [a]}\n", ":3: DISEASE entry needs a non-empty string 'name'"),
    ("entities:\n  ANATOMY:\n    - {name: x, normal: y}\n", "normal: 'y' must name a NON-ABNORMALITY entity"),
    ("entities: [1, 2]\n", "top level needs an 'entities' mapping"),
    ("entities: {DISEASE: [{name: x}]}\nexclusions: [[x, nope]]\n", "'nope' is neither an entity name"),
    ("entities: {DISEASE: [{name: x}]\n", "not valid YAML/JSON"),
])
def test_bad_vocabulary_names_file_line_and_field(body, message):
    with pytest.raises(VocabularyError) as err:
        vocab = parse_vocabulary(body, source="user.yaml")
        vocab.surfaces()
    assert "user.yaml" in str(err.value) and message in str(err.value)


def test_phrase_in_two_entities_is_rejected():
    vocab = parse_vocabulary("entities: {DISEASE: [{name: a, syn: [shared]}, {name: b, syn: [shared]}]}", "v.yaml")
    with pytest.raises(VocabularyError, match="'shared'.*also belongs to entity 'a'"):
        vocab.surfaces()


def test_unknown_macro_and_missing_file(tmp_path):
    with pytest.raises(VocabularyError, match=r"unknown macro \{be\}"):
        parse_vocabulary("entities: {DISEASE: [{name: a, syn: ['a {be} b']}]}", "v.yaml").surfaces()
    with pytest.raises(VocabularyError, match="cannot read vocabulary file"):
        load_vocabulary(tmp_path / "absent.yaml")


# --- extraction: the report writer's sentences ------------------------------------------------------------------

def test_report_writer_sentences(extractor):
    small, none, normal = extractor.extract(
        ["There is a small left pleural effusion.", "No pneumothorax.", "The heart size is normal."])
    assert [(m.canonical, m.assertion, m.laterality) for m in small] == [("pleural effusion", "present", "left")]
    assert [(m.canonical, m.assertion, m.category) for m in none] == [("pneumothorax", "absent", "ABNORMALITY")]
    assert none[0].rate_category == "NON-ABNORMALITY"
    assert [(m.canonical, m.category, m.assertion) for m in normal] == [
        ("normal heart size", "NON-ABNORMALITY", "present")]


def test_mention_fields_index_the_original_text(extractor):
    text = "Stable   CARDIOMEGALY.\nNo focal consolidation."
    mentions = extractor.extract([text])[0]
    assert all(isinstance(m, Mention) and text[m.start:m.end] == m.surface for m in mentions)
    assert [(m.surface, m.canonical) for m in mentions] == [
        ("CARDIOMEGALY", "cardiomegaly"), ("focal consolidation", "consolidation")]


# --- negation and uncertainty on IU sentences -------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("There is no evidence of pneumothorax.", {("pneumothorax", "absent")}),
    ("There are no XXXX of a pleural effusion.", {("pleural effusion", "absent")}),
    ("No pleural effusion or pneumothorax is seen.", {("pleural effusion", "absent"), ("pneumothorax", "absent")}),
    ("No focal consolidation, pneumothorax or large pleural effusion.",
     {("consolidation", "absent"), ("pneumothorax", "absent"), ("pleural effusion", "absent")}),
    ("The lungs are clear of focal airspace disease, pneumothorax, or pleural effusion.",
     {("airspace disease", "absent"), ("pneumothorax", "absent"), ("pleural effusion", "absent")}),
    ("The lungs are free of any focal infiltrates.", {("infiltrate", "absent")}),
    ("Negative for pneumothorax, pleural effusion.", {("pneumothorax", "absent"), ("pleural effusion", "absent")}),
    ("No typical findings of pulmonary edema.", {("pulmonary edema", "absent")}),
    ("No acute cardiopulmonary abnormality.", {("acute cardiopulmonary disease", "absent")}),
    ("Pneumothorax is not seen.", {("pneumothorax", "absent")}),
    ("The heart is not enlarged.", {("cardiomegaly", "absent")}),
    ("Previously seen left pleural effusion has resolved.", {("pleural effusion", "absent")}),
    ("Cannot exclude early infiltrate.", {("infiltrate", "uncertain")}),
    ("Small effusion cannot be excluded.", {("pleural effusion", "uncertain")}),
    ("Findings may reflect focal airspace disease.", {("airspace disease", "uncertain")}),
    ("Right lower lobe infiltrate, suggestive of pneumonia.", {("infiltrate", "present"), ("pneumonia", "uncertain")}),
    ("Left basilar opacity may represent atelectasis or pneumonia.",
     {("opacity", "present"), ("atelectasis", "uncertain"), ("pneumonia", "uncertain")}),
    ("No effusion, stable cardiomegaly.", {("pleural effusion", "absent"), ("cardiomegaly", "present")}),
    ("No pneumothorax but there is a small right effusion.",
     {("pneumothorax", "absent"), ("pleural effusion", "present")}),
    ("No change in the appearance of the cardiomegaly.", {("cardiomegaly", "present")}),
    ("Mild cardiomegaly. No pneumothorax.", {("cardiomegaly", "present"), ("pneumothorax", "absent")}),
    ("No pneumothorax. Small left effusion.", {("pneumothorax", "absent"), ("pleural effusion", "present")}),
    ("Mild dextroscoliosis of the thoracic spine.", {("scoliosis", "present")}),
    ("Calcified granuloma in the right upper lobe.", {("calcified granuloma", "present")}),
])
def test_assertion_on_iu_sentences(extractor, text, expected):
    assert facts(extractor, text) == expected


@pytest.mark.parametrize("text, expected", [
    ("Heart size is normal.", {"normal heart size"}),
    ("The heart is normal in size.", {"normal heart size"}),
    ("Normal heart size and mediastinal contours.", {"normal heart size", "normal mediastinum"}),
    ("The heart size and pulmonary vascularity appear within normal limits.",
     {"normal heart size", "normal pulmonary vascularity"}),
    ("The cardiac silhouette and mediastinum size are within normal limits.",
     {"normal cardiac silhouette", "normal mediastinum"}),
    ("Heart and mediastinum normal.", {"normal cardiomediastinal silhouette"}),
    ("The lungs are clear.", {"clear lungs"}),
    ("Lungs clear bilaterally.", {"clear lungs"}),
    ("The trachea is midline.", {"midline trachea"}),
    ("Visualized osseous structures appear intact.", {"intact osseous structures"}),
    ("Normal chest x-XXXX.", {"normal chest"}),
])
def test_normal_statements(extractor, text, expected):
    mentions = extractor.extract([text])[0]
    assert {m.canonical for m in mentions if m.category != "ANATOMY"} == expected
    assert all(m.assertion == "present" for m in mentions)
    assert not any(m.category == "ABNORMALITY" for m in mentions)


@pytest.mark.parametrize("text, canonical, side", [
    ("Bilateral pleural effusions.", "pleural effusion", "bilateral"),
    ("Small right-sided pneumothorax.", "pneumothorax", "right"),
    ("Opacity in the left lower lobe.", "opacity", "left"),
    ("Left lower lobe opacity.", "opacity", "left"),
    ("Pleural effusion on the right.", "pleural effusion", "right"),
    ("Bibasilar atelectasis.", "atelectasis", "bilateral"),
    ("Mild cardiomegaly.", "cardiomegaly", None),
])
def test_laterality(extractor, text, canonical, side):
    found = [m for m in extractor.extract([text])[0] if m.canonical == canonical]
    assert found and found[0].laterality == side


# --- bad input --------------------------------------------------------------------------------------------------

def test_bad_items_never_stop_a_batch(extractor):
    huge = "No pneumothorax. " * 60_000  # about 1 MB
    binary = bytes(range(256)).decode("latin-1")
    run_on = "no effusion and mild cardiomegaly with left opacity is not seen " * 16_000  # 1 MB, one sentence
    texts = ["", None, b"No pleural effusion.", 42, huge, binary, "Pas d'\u00e9panchement pleural.",
             "\u0130\u0130 Mild cardiomegaly.", "\x00\x01 pneumothorax \ufffd", "Mild cardiomegaly.", run_on]
    out = extractor.extract(texts)
    assert len(out) == len(texts) and len(out[10]) == 48_000
    assert out[0] == out[1] == out[3] == []
    assert [(m.canonical, m.assertion) for m in out[2]] == [("pleural effusion", "absent")]
    assert len(out[4]) == 60_000 and all(m.assertion == "absent" for m in out[4])
    assert out[7][0].surface == "cardiomegaly"  # offsets survive case folding that changes length
    assert [(m.canonical, m.assertion) for m in out[9]] == [("cardiomegaly", "present")]


def test_sentence_cache_gives_the_same_mentions(vocab, extractor):
    texts = ["No pneumothorax. Mild cardiomegaly.", "Mild cardiomegaly.  No pneumothorax.", "No pneumothorax.",
             "Small left effusion; no pneumothorax.\n\nHeart size is normal.", "Right pleural\n\neffusion.",
             "FINDINGS:\n1. left pleural\n2. effusion\r\nno pleural\r\n effusion"] * 3
    uncached = EntityExtractor(vocab, cache_size=0)
    small = EntityExtractor(vocab, cache_size=2)  # keeps clearing itself
    expected = uncached.extract(texts)
    assert extractor.extract(texts) == expected and small.extract(texts) == expected
    assert len(small._cache) <= 2 and not uncached._cache
    extractor.clear_cache()
    assert not extractor._cache


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="unknown backend 'spacy'"):
        EntityExtractor(load_vocabulary(), backend="spacy")


# --- real reports -----------------------------------------------------------------------------------------------

def test_every_iu_report_extracts_with_valid_spans(extractor):
    if not IU_TGZ.exists():
        pytest.skip(f"IU X-ray reports not found at {IU_TGZ} (shared data absent)")
    from synthvlp.entities.corpus import read_corpus

    reports = list(read_corpus(IU_TGZ))
    assert len(reports) == 3955
    out = extractor.extract([r.text for r in reports])
    assert out[:500] == EntityExtractor(extractor.vocab, cache_size=0).extract([r.text for r in reports[:500]])
    assert all(r.text[m.start:m.end] == m.surface for r, ms in zip(reports, out) for m in ms)
    normal = [ms for r, ms in zip(reports, out) if r.mesh == ["normal"]]
    flagged = sum(any(m.assertion == "present" and m.canonical in ("pleural effusion", "pneumothorax",
                                                                   "consolidation", "cardiomegaly") for m in ms)
                  for ms in normal)
    assert len(normal) == 1391 and flagged / len(normal) < 0.01
