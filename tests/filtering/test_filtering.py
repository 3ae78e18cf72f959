"""Quality filters on planted bad samples (they must be caught) and good ones (they must be kept)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from synthvlp.config import BalanceSection, RunConfig, load_config
from synthvlp.encoders import GradientEncoder, HuggingFaceEncoder, build_encoder
from synthvlp.errors import UserError
from synthvlp.filtering.balance import select_samples
from synthvlp.filtering.checks import check_samples
from synthvlp.filtering.dedupe import image_duplicates, report_duplicates
from synthvlp.filtering.exemplars import bank_features
from synthvlp.filtering.image_checks import image_signatures
from synthvlp.filtering.text_checks import repeated_ngram_share
from synthvlp.generation import phantom

SIZE = 64


def _png(array: np.ndarray, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _film(seed: int) -> np.ndarray:
    return phantom.render([], SIZE, np.random.default_rng(seed)).image


def _row(key: str, findings: str = "The heart size is normal. The lungs are clear.", impression: str = "No acute disease.") -> dict:
    return {"id": key, "findings": findings, "impression": impression, "planned_entities": [], "extracted_entities": []}


def _check(images: dict[str, bytes], rows: list[dict], tmp_path, **filter_settings):
    config = RunConfig.model_validate({"images": {"size": SIZE}, "filter": filter_settings})
    table, signatures = check_samples(config, rows, images, tmp_path / "cache")
    return {r["id"]: r for r in table.to_pylist()}, signatures


def test_planted_bad_images_are_caught_and_good_ones_kept(tmp_path):
    rng = np.random.default_rng(0)
    images = {
        "good": _png(_film(1)),
        "blank": _png(np.full((SIZE, SIZE), 128, np.uint8)),
        "saturated": _png(np.where(rng.random((SIZE, SIZE)) < 0.7, 255, 0).astype(np.uint8)),
        "washed_out": _png((120 + 8 * rng.random((SIZE, SIZE))).astype(np.uint8)),
        "wrong_size": _png(np.asarray(Image.fromarray(_film(2)).resize((32, 32)))),
        "colour": _png(_film(3), mode="RGB"),
        "not_png": b"definitely not an image",
    }
    rows = [_row(k) for k in images]
    result, _ = _check(images, rows, tmp_path)
    assert result["good"]["accepted"] and result["good"]["reject_reasons"] is None
    assert "contrast" in result["blank"]["reject_reasons"]
    assert "saturation" in result["saturated"]["reject_reasons"]
    assert "dynamic_range" in result["washed_out"]["reject_reasons"]
    assert "format: size 32x32, expected 64x64" in result["wrong_size"]["reject_reasons"]
    assert "format: mode RGB, expected grayscale" in result["colour"]["reject_reasons"]
    assert "format: undecodable" in result["not_png"]["reject_reasons"]
    assert sum(r["accepted"] for r in result.values()) == 1


def test_planted_bad_reports_are_caught(tmp_path):
    images = {k: _png(_film(i)) for i, k in enumerate(["good", "short", "stuck", "no_impression", "drifted"])}
    drifted = _row("drifted")
    drifted["planned_entities"] = [{"name": "pneumothorax", "category": "ABNORMALITY", "assertion": "present", "laterality": "left"}]
    rows = [
        _row("good"),
        _row("short", findings="Ok.", impression="Ok."),
        _row("stuck", findings="There is a small effusion. " * 12),
        _row("no_impression", impression="  "),
        drifted,
    ]
    result, _ = _check(images, rows, tmp_path)
    assert result["good"]["accepted"]
    assert result["short"]["reject_reasons"] == "report_length"
    assert result["stuck"]["reject_reasons"] == "repetition"
    assert result["no_impression"]["reject_reasons"] == "sections"
    assert result["drifted"]["reject_reasons"] == "plan_match"
    assert repeated_ngram_share("the lungs are clear and the heart is normal") == 0.0


def test_exemplar_look_alikes_are_rejected_and_bank_features_cached(tmp_path):
    bank = tmp_path / "exemplars"
    bank.mkdir()
    for seed in range(3):  # problematic exemplars: rotated films
        Image.fromarray(np.rot90(_film(100 + seed)).copy()).save(bank / f"rotated-{seed}.png")
    look_alike = np.rot90(_film(7)).copy()
    images = {"good": _png(_film(7)), "rotated": _png(look_alike)}
    result, _ = _check(images, [_row(k) for k in images], tmp_path, exemplar_dir=str(bank))
    assert result["good"]["accepted"], result["good"]["filter_exemplar_score"]
    assert result["rotated"]["reject_reasons"] == "exemplar"
    assert result["rotated"]["filter_exemplar_score"] >= 0.5 > result["good"]["filter_exemplar_score"]
    cached = list((tmp_path / "cache").glob("exemplars-*.npy"))
    assert len(cached) == 1

    class MustNotEncode(GradientEncoder):
        def encode(self, pixels):
            raise AssertionError("the cached bank features should have been reused")

    np.testing.assert_array_equal(bank_features(bank, MustNotEncode(), tmp_path / "cache"), np.load(cached[0]))
    Image.fromarray(_film(9)).save(bank / "new.png")  # a changed bank is encoded again
    with pytest.raises(AssertionError, match="should have been reused"):
        bank_features(bank, MustNotEncode(), tmp_path / "cache")


def test_exemplar_folder_must_exist(tmp_path):
    with pytest.raises(UserError, match="filter.exemplar_dir = .*does not exist"):
        load_config(None, [f"filter.exemplar_dir={tmp_path / 'missing'}"])


def test_near_duplicate_images_match_brute_force_and_keep_the_first():
    rng = np.random.default_rng(0)
    films = np.stack([_film(s) for s in range(40)]).astype(np.float32) / 255
    copies = np.clip(films[[3, 3, 17]] + rng.normal(0, 0.02, (3, SIZE, SIZE)), 0, 1)
    pixels = np.concatenate([films, copies]).astype(np.float32)
    signatures = image_signatures(pixels)
    similarity, duplicate = image_duplicates(signatures, 0.999, block=16)
    assert np.flatnonzero(duplicate).tolist() == [40, 41, 42]
    brute = signatures @ signatures.T
    for i in range(len(pixels)):
        kept_before = [j for j in range(i) if not duplicate[j]]
        expected = max(brute[i, kept_before]) if kept_before else 0.0
        assert similarity[i] == pytest.approx(max(expected, 0.0), abs=1e-5)


def test_near_duplicate_reports():
    texts = ["Small left pleural effusion. No pneumothorax. Heart size normal.", "Large right pneumothorax with mediastinal shift.", "Small left pleural effusion. No pneumothorax. Heart size normal."]
    _, duplicate = report_duplicates(texts, 0.9)
    assert duplicate.tolist() == [False, False, True]


def test_a_near_duplicate_is_a_rejection_with_its_reason():
    """Balance's duplicate verdict reaches the manifest's accepted and reject_reasons, not only a verdict column."""
    from synthvlp.filtering.selection import select_dataset

    films = np.stack([_film(s) for s in range(3)] + [_film(0)]).astype(np.float32) / 255
    rows = [{"id": f"s{i}", "accepted": i != 1, "reject_reasons": None if i != 1 else "contrast", "split": "train",
             "planned_entities": [], "findings": "", "impression": ""} for i in range(4)]
    table, _ = select_dataset(RunConfig(), rows, image_signatures(films))
    assert table.column("accepted").to_pylist() == [True, False, True, False]
    reasons = table.column("reject_reasons").to_pylist()
    assert reasons[:3] == [None, "contrast", None] and reasons[3].startswith("duplicate_image: 1.0000 to an earlier sample")
    assert table.column("selected").to_pylist()[3] is False


def _balance_rows():
    """A long-tailed train split: 'common' in 80 samples, 'rare' in 8, plus 40 normal."""
    rows = []
    for i in range(128):
        name = "common" if i < 80 else "rare" if i < 88 else None
        entities = [{"name": name, "category": "ABNORMALITY", "assertion": "present", "laterality": None}] if name else []
        rows.append({"split": "train", "planned_entities": entities, "eligible": True})
    rows.append({"split": "test", "planned_entities": [], "eligible": True})
    rows.append({"split": "train", "planned_entities": [], "eligible": False})
    return rows


def test_balancing_flattens_the_long_tail():
    rows = _balance_rows()
    uniform = select_samples(BalanceSection(target="uniform", entity_cap=10), rows, seed=0)
    taken = [r for r, s in zip(rows, uniform.selected, strict=True) if s and r["split"] == "train"]
    names = [r["planned_entities"][0]["name"] if r["planned_entities"] else "normal" for r in taken]
    assert names.count("common") == 10 and names.count("rare") == 8 and names.count("normal") == 10
    assert uniform.selected[128] and not uniform.selected[129]  # test split kept, ineligible never taken
    flatter = select_samples(BalanceSection(target="temperature", temperature=4.0), rows, seed=0)
    common = sum(1 for r, s in zip(rows, flatter.selected, strict=True) if s and r["planned_entities"] and r["planned_entities"][0]["name"] == "common")
    assert common < 80
    same = select_samples(BalanceSection(target="temperature", temperature=4.0), rows, seed=0)
    assert np.array_equal(same.selected, flatter.selected)
    budget = select_samples(BalanceSection(max_samples=5), rows, seed=0)
    assert budget.selected.sum() == 6  # 5 train + the 1 test sample


def test_hugging_face_encoder_from_a_tiny_local_model(tmp_path):
    from transformers import Dinov2Config, Dinov2Model
    from transformers.models.bit.image_processing_bit import BitImageProcessor

    folder = tmp_path / "tiny-dino"
    config = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)
    Dinov2Model(config).save_pretrained(folder)
    BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    encoder = build_encoder(str(folder))
    assert isinstance(encoder, HuggingFaceEncoder)
    features = encoder.encode(np.stack([_film(1), _film(2)]).astype(np.float32) / 255)
    assert features.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(UserError, match="config.json missing"):
        build_encoder(str(tmp_path))


def test_real_dataset_filter_keeps_good_rows_and_names_bad_ones(tmp_path):
    from synthvlp.filtering.real import filter_real_dataset

    (tmp_path / "img").mkdir()
    Image.fromarray(_film(1)).save(tmp_path / "img" / "good.png")
    Image.fromarray(np.zeros((40, 30), np.uint8)).save(tmp_path / "img" / "blank.png")
    csv = tmp_path / "pairs.csv"
    csv.write_text(
        "path,report,patient\n"
        "img/good.png,Heart size is normal. No focal consolidation or effusion.,1\n"
        "img/blank.png,Heart size is normal. No focal consolidation or effusion.,2\n"
        "img/absent.png,Heart size is normal. No focal consolidation or effusion.,3\n"
        "img/good.png,ok,4\n"
    )
    counts = filter_real_dataset(csv, tmp_path / "out", FilterSection_defaults(), image_column="path", text_column="report", size=64)
    expected = {"rows": 4, "accepted": 1, "rejected_contrast": 1, "rejected_dynamic_range": 1, "rejected_format": 1, "rejected_report_length": 1}
    assert counts == expected | {"rejected_saturation": 1}  # the blank film is all zeros: clipped, flat and narrow
    cleaned = (tmp_path / "out" / "cleaned.csv").read_text().splitlines()
    assert cleaned[0] == "path,report,patient" and len(cleaned) == 2 and cleaned[1].endswith(",1")
    import pandas as pd

    verdicts = pd.read_parquet(tmp_path / "out" / "verdicts.parquet")
    assert verdicts.reject_reasons[2] == "format: missing file"
    with pytest.raises(UserError, match=r"pairs.csv: missing column\(s\) \['text'\]"):
        filter_real_dataset(csv, tmp_path / "out", FilterSection_defaults(), image_column="path", text_column="text")


def test_real_covid_notes_pass_the_filters(tmp_path):
    from conftest import SHARED_DATA

    from synthvlp.filtering.real import filter_real_dataset

    pairs = SHARED_DATA / "covid-notes" / "pairs.csv"
    if not pairs.exists():
        pytest.skip(f"real data not found at {pairs} (the shared data folder is absent)")
    counts = filter_real_dataset(pairs, tmp_path, FilterSection_defaults(), size=128)
    assert counts["rows"] == 187
    assert counts["accepted"] >= 180, counts  # curated real films and notes: almost all should pass


def FilterSection_defaults():
    return RunConfig().filter


def test_rejected_images_are_regenerated_and_never_passing_ones_dropped(write_config):
    """A strict contrast threshold fails about half of first renders; regeneration must fix most of them."""
    from rich.console import Console

    from synthvlp.runfolder import prepare_run_folder
    from synthvlp.runner import Runner
    from synthvlp.store import read_shard

    config = load_config(write_config(images={"size": 32}, filter={"min_std": 0.30, "regenerate": 3}))
    runner = Runner(config, prepare_run_folder(config), console=Console(quiet=True))
    runner.run(("plan", "reports", "images", "filter", "balance"))
    rows = runner.joined_parts().to_pylist()
    pixels = {}
    for unit in runner.units():
        for sample in read_shard(runner.layout.image_shard(unit.index)):
            pixels[sample["__key__"]] = np.asarray(Image.open(io.BytesIO(sample["png"])), dtype=np.float32) / 255
    regenerated = [r for r in rows if r["image_attempts"] > 1]
    assert len(regenerated) >= 10, "the strict threshold should have failed many first renders"
    for r in rows:
        failed_renders = (r["image_rejections"] or "").count("attempt ")
        passed = failed_renders < r["image_attempts"]
        assert failed_renders in (r["image_attempts"] - 1, r["image_attempts"])
        assert (pixels[r["id"]].std() >= 0.30) == passed, r
        if not passed:
            assert not r["accepted"] and "contrast" in r["reject_reasons"] and not r["selected"]
    assert sum(r["accepted"] for r in rows) > 0.8 * len(rows)
    assert "Regeneration:" in (runner.run_dir / "report.md").read_text()
