"""Corpus readers and long-tail statistics, on small corpora written in the real formats."""

from __future__ import annotations

import io
import json
import math
import tarfile
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from synthvlp.entities import EntityExtractor
from synthvlp.entities.corpus import CorpusError, read_corpus
from synthvlp.entities.stats import long_tail, run_stats

IU_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation><MedlineCitation><Article><Abstract>
<AbstractText Label="COMPARISON">None.</AbstractText>
<AbstractText Label="FINDINGS">{findings}</AbstractText>
<AbstractText Label="IMPRESSION">{impression}</AbstractText>
</Abstract></Article></MedlineCitation>
<MeSH><major>{mesh}</major></MeSH></eCitation>"""


@pytest.fixture(scope="module")
def extractor():
    return EntityExtractor()


def _iu_tgz(path: Path) -> Path:
    files = {
        "ecgen-radiology/1.xml": IU_XML.format(findings="No pneumothorax. Mild cardiomegaly.",
                                                 impression="Small left pleural effusion.", mesh="Cardiomegaly/mild"),
        "ecgen-radiology/2.xml": IU_XML.format(findings="The lungs are clear.", impression="Normal chest.",
                                                 mesh="normal"),
        "ecgen-radiology/10.xml": "<eCitation><AbstractText Label='FINDINGS'>broken",
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_long_tail_measures():
    flat = long_tail([5, 5, 5, 5])
    assert flat["gini"] == pytest.approx(0) and flat["normalised_entropy"] == pytest.approx(1)
    assert flat["imbalance_ratio"] == 1 and flat["entities"] == 4
    skew = long_tail([100, 1, 1, 1, 0])  # zeros are entities never seen; they do not count
    assert skew["entities"] == 4 and skew["imbalance_ratio"] == 100
    assert skew["gini"] == pytest.approx((2 * (1 + 2 + 3 + 400)) / (4 * 103) - 5 / 4)
    assert skew["top10_share"] == pytest.approx(100 / 103)
    assert 0 < skew["normalised_entropy"] < 0.2
    assert long_tail([])["entities"] == 0 and long_tail([7])["normalised_entropy"] == 1.0
    assert math.isclose(long_tail([3, 1])["top10_share"], 0.75)


def test_iu_tgz_with_malformed_file(tmp_path):
    reports = list(read_corpus(_iu_tgz(tmp_path / "iu.tgz")))
    assert [r.id for r in reports] == ["1", "2", "10"]
    assert reports[0].text == "No pneumothorax. Mild cardiomegaly.\n\nSmall left pleural effusion."
    assert reports[0].mesh == ["Cardiomegaly/mild"]
    assert reports[2].text == "" and "malformed XML" in reports[2].error


def test_iu_folder(tmp_path):
    with tarfile.open(_iu_tgz(tmp_path / "iu.tgz")) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    assert [r.id for r in read_corpus(tmp_path / "x")] == ["1", "2", "10"]


def test_tables_and_manifest(tmp_path):
    pd.DataFrame({"id": ["a", "b"], "report": ["No effusion.", None]}).to_csv(tmp_path / "r.csv", index=False)
    assert [(r.id, r.text) for r in read_corpus(tmp_path / "r.csv")] == [("a", "No effusion."), ("b", "")]
    pd.DataFrame({"findings": ["Mild cardiomegaly.", ""], "impression": ["No edema.", "Clear lungs."]}).to_parquet(
        tmp_path / "manifest.parquet")
    texts = [r.text for r in read_corpus(tmp_path / "manifest.parquet")]
    assert texts == ["Mild cardiomegaly.\n\nNo edema.", "Clear lungs."]
    pd.DataFrame({"note": ["x"]}).to_csv(tmp_path / "custom.csv", index=False)
    assert [r.text for r in read_corpus(tmp_path / "custom.csv", text_column="note")] == ["x"]


@pytest.mark.parametrize("name, content, message", [
    ("no_text.csv", "id,label\n1,2\n", "no text column; expected one of"),
    ("bad.parquet", "not parquet", "cannot read table"),
    ("corpus.txt", "hello", "unknown corpus type"),
    ("bad.tgz", "not a tar", "cannot open archive"),
])
def test_unreadable_corpus_is_a_named_error(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(CorpusError, match=message) as err:
        list(read_corpus(tmp_path / name))
    assert name in str(err.value)


def test_missing_paths_and_columns(tmp_path):
    with pytest.raises(CorpusError, match="no such file"):
        list(read_corpus(tmp_path / "absent.tgz"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="folder holds no .xml"):
        list(read_corpus(tmp_path / "empty"))
    pd.DataFrame({"text": ["a"]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(CorpusError, match="no column 'body'"):
        list(read_corpus(tmp_path / "t.csv", text_column="body"))


def test_run_stats_writes_table_plots_and_summary(tmp_path, extractor):
    summary = run_stats(_iu_tgz(tmp_path / "iu.tgz"), tmp_path / "out", extractor=extractor)
    assert summary["reports"] == 3 and summary["errors"] == 1 and summary["entities_seen"] >= 5
    table = pd.read_csv(tmp_path / "out" / "entity_counts.csv")
    assert table.equals(pd.read_parquet(tmp_path / "out" / "entity_counts.parquet"))
    row = table.set_index("entity").loc["pneumothorax"]
    assert (row["category"], row["present"], row["absent"], row["total"]) == ("ABNORMALITY", 0, 1, 1)
    assert table.set_index("entity").loc["clear lungs", "category"] == "NON-ABNORMALITY"
    for png in ("rank_frequency.png", "category_counts.png"):
        with Image.open(tmp_path / "out" / png) as im:
            assert im.size[0] > 300
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["all"] == summary["all"] and set(saved["by_category"]) >= {"ABNORMALITY", "ANATOMY"}


def test_run_stats_on_iu_reports(tmp_path, extractor):
    tgz = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "iu-xray" / "NLMCXR_reports.tgz"
    if not tgz.exists():
        pytest.skip(f"IU X-ray reports not found at {tgz} (shared data absent)")
    summary = run_stats(tgz, tmp_path, extractor=extractor)
    assert summary["reports"] == 3955 and summary["errors"] == 0
    assert summary["all"]["gini"] > 0.6 and summary["all"]["imbalance_ratio"] > 100  # real reports are long-tailed
