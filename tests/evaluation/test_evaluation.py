"""Zero-shot metrics, the evaluation harness's files and tables, and ``synthvlp compare``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, roc_auc_score

from synthvlp.config import EvaluateSection
from synthvlp.errors import UserError
from synthvlp.evaluation.benchmarks.base import LabelledSet, Region
from synthvlp.evaluation.compare import compare_runs, tables_markdown
from synthvlp.evaluation.harness import evaluate_set, read_csv, restrict_classes, results_markdown, write_results
from synthvlp.evaluation.inference import ImageTextEngine
from synthvlp.evaluation.zeroshot import _auc, _threshold_metrics, best_f1_threshold, score_classes


def test_numpy_metrics_equal_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.random(60) < 0.3
        p = np.round(rng.random(60), 2)  # ties on purpose
        assert _auc(y, p) == pytest.approx(roc_auc_score(y, p))
        threshold = float(rng.random())
        f1, acc, mcc = _threshold_metrics(y, p, threshold)
        predicted = p >= threshold
        assert f1 == pytest.approx(f1_score(y, predicted, zero_division=0.0))
        assert acc == pytest.approx(accuracy_score(y, predicted))
        assert mcc == pytest.approx(matthews_corrcoef(y, predicted))


def test_best_f1_threshold_is_the_best():
    rng = np.random.default_rng(1)
    y = rng.random(80) < 0.4
    p = np.clip(y * 0.3 + rng.random(80) * 0.7, 0, 1)
    best = best_f1_threshold(y, p)
    f1_best = f1_score(y, p >= best)
    assert all(f1_score(y, p >= t, zero_division=0.0) <= f1_best + 1e-12 for t in np.unique(p))


def test_score_classes_skips_nan_labels_and_flags_single_class_columns():
    labels = np.array([[1, 0], [0, 0], [np.nan, 0], [1, np.nan], [0, 0]], dtype=np.float32)
    # image 2 is a confident positive with an unknown label: counting it as a negative would lower the AUC
    probabilities = np.array([[0.9, 0.1], [0.2, 0.2], [0.99, 0.3], [0.8, 0.4], [0.3, 0.5]])
    first, second = score_classes(probabilities, labels, ["nodule", "mass"], bootstrap=50, seed=0)
    assert (first.positives, first.negatives) == (2, 2)
    assert first.auc == 1.0 and first.f1_best == 1.0 and first.mcc_best == 1.0
    assert first.ci["auc"] == (1.0, 1.0)
    assert np.isnan(second.auc) and second.note and second.positives == 0


def test_bootstrap_interval_brackets_the_estimate_and_is_seeded():
    rng = np.random.default_rng(2)
    y = (rng.random(300) < 0.3).astype(np.float32)[:, None]
    p = np.clip(y * 0.2 + rng.random((300, 1)) * 0.8, 0, 1)
    a = score_classes(p, y, ["x"], bootstrap=200, seed=3)[0]
    b = score_classes(p, y, ["x"], bootstrap=200, seed=3)[0]
    assert a.ci == b.ci
    for metric in ("auc", "f1_best", "acc_05"):
        low, high = a.ci[metric]
        assert low < getattr(a, metric) < high


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _labelled(n: int = 40) -> LabelledSet:
    rng = np.random.default_rng(0)
    bright = rng.random(n) < 0.5
    labels = np.stack([bright, ~bright], axis=1).astype(np.float32)
    labels[0, 1] = np.nan
    return LabelledSet("toy", [_png(220 if b else 30) for b in bright], [f"i{i}" for i in range(n)],
                       ["pleural effusion", "no finding"], labels, [Region(1, "pleural effusion", (0, 0, 4, 4))])


def test_restrict_classes_reorders_and_reports_lacking():
    labelled = _labelled()
    reduced, lacking = restrict_classes(labelled, ["no finding", "nodule", "pleural effusion"])
    assert reduced.classes == ["no finding", "pleural effusion"]
    assert lacking == ["nodule"]
    np.testing.assert_array_equal(reduced.labels[:, 1], labelled.labels[:, 0])


class _BrightnessModel:
    """A stand-in CLIP: the image embedding says how bright the image is, the text embedding whether a prompt
    is negated, so 'There is X.' wins on bright images for every class. Tests the harness's plumbing only."""

    def __init__(self):
        import torch

        self.logit_scale = torch.tensor(np.log(10.0))

    def encode_image(self, batch, normalize=True):
        import torch

        brightness = batch.mean(dim=(1, 2, 3))
        features = torch.stack([brightness, 1 - brightness], dim=1)
        return features / features.norm(dim=1, keepdim=True)

    def encode_text(self, prompts, normalize=True):
        import torch

        negated = torch.tensor([(" no " in f" {p.lower()} ") for p in prompts], dtype=torch.float32)
        features = torch.stack([1 - negated, negated], dim=1) + 0.01
        return features / features.norm(dim=1, keepdim=True)


def _to_tensor(image):
    import torch

    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)


def test_evaluate_set_writes_tables_plots_and_markdown(tmp_path):
    engine = ImageTextEngine(_BrightnessModel(), _to_tensor, lambda prompts: list(prompts))
    labelled = _labelled()
    labelled.missing = ["gone.png"]
    written = evaluate_set(engine, labelled, ["pleural effusion", "nodule"], EvaluateSection(bootstrap=20, grounding=False), tmp_path / "toy", seed=0)
    assert {p.name for p in written} == {"zeroshot.csv", "roc.png", "summary.json"}
    summary = json.loads((tmp_path / "toy" / "summary.json").read_text())
    assert summary["missing"] == 1 and summary["classes_lacking"] == ["nodule"] and summary["images"] == 40
    markdown = "\n".join(results_markdown(tmp_path, link_prefix="evaluate/"))
    assert "| pleural effusion |" in markdown and "1.000 (1.000-1.000)" in markdown
    assert "Scored the 40 images present of 41 listed" in markdown and "evaluate/toy/roc.png" in markdown
    assert write_results(tmp_path, "t").read_text().startswith("# t")


def test_evaluate_set_with_no_image_on_disk_is_an_error(tmp_path):
    engine = ImageTextEngine(_BrightnessModel(), _to_tensor, lambda prompts: list(prompts))
    empty = _labelled().select([])
    empty.missing = ["a.png", "b.png"]
    with pytest.raises(UserError, match=r"no image to score: 2 listed, none found on disk \(e.g. a.png, b.png\)"):
        evaluate_set(engine, empty, ["pleural effusion"], EvaluateSection(bootstrap=0), tmp_path / "x", seed=0)
    assert not (tmp_path / "x").exists()


def test_evaluate_set_without_any_wanted_class_is_an_error(tmp_path):
    engine = ImageTextEngine(_BrightnessModel(), _to_tensor, lambda prompts: list(prompts))
    with pytest.raises(UserError, match="none of the classes"):
        evaluate_set(engine, _labelled(), ["nodule"], EvaluateSection(bootstrap=0), tmp_path / "x", seed=0)


def _fake_results(folder, benchmark, aucs):
    (folder / benchmark).mkdir(parents=True)
    rows = ["name,positives,negatives,auc,auc_ci_low,auc_ci_high,note"] + [f"{k},5,5,{v},{v - 0.1},{v + 0.1}," for k, v in aucs.items()]
    (folder / benchmark / "zeroshot.csv").write_text("\n".join(rows) + "\n")
    mean = sum(aucs.values()) / len(aucs)
    (folder / benchmark / "summary.json").write_text(json.dumps({"mean_auc": mean, "mean_auc_ci": [mean - 0.05, mean + 0.05]}))


def test_compare_lines_up_runs_with_different_benchmarks(tmp_path):
    _fake_results(tmp_path / "synthetic" / "evaluate", "nih", {"nodule": 0.7, "mass": 0.6})
    _fake_results(tmp_path / "real" / "evaluate", "nih", {"nodule": 0.8})
    _fake_results(tmp_path / "real" / "evaluate", "rsna", {"pneumonia": 0.9})
    tables = compare_runs([tmp_path / "synthetic", tmp_path / "real" / "evaluate"])
    assert tables["nih"][0] == ["class", "synthetic", "real"]
    assert tables["nih"][1] == ["nodule", "0.700 (0.600-0.800)", "0.800 (0.700-0.900)"]
    assert tables["nih"][2] == ["mass", "0.600 (0.500-0.700)", "-"]
    assert tables["nih"][-1] == ["mean AUC", "0.650 (0.600-0.700)", "0.800 (0.750-0.850)"]
    assert tables["rsna"][-1] == ["mean AUC", "-", "0.900 (0.850-0.950)"]
    assert "## rsna" in tables_markdown(tables)


def test_compare_names_a_folder_without_results(tmp_path):
    with pytest.raises(UserError, match="no zero-shot results"):
        compare_runs([tmp_path])


def test_prompts_must_name_the_class():
    with pytest.raises(ValueError, match="placeholder"):
        EvaluateSection(positive_prompts=["There is a finding."])


def test_sets_with_regions_get_a_grounding_table_and_overlays(tmp_path):
    from synthvlp.models import build_clip

    model, _, preprocess, tokenizer = build_clip("synthvlp-tiny")
    model.eval()
    labelled = _labelled(12)
    labelled.regions = [Region(i, "pleural effusion", (0, 0, 8, 16)) for i in range(4)] + [Region(4, "pleural effusion", None)]
    written = evaluate_set(ImageTextEngine(model, preprocess, tokenizer), labelled, ["pleural effusion"], EvaluateSection(bootstrap=10, overlays=3),
                           tmp_path / "toy", seed=0)
    assert {"grounding.csv", "grounding_regions.csv", "overlays.png"} <= {p.name for p in written}
    markdown = "\n".join(results_markdown(tmp_path))
    assert "### Zero-shot grounding: toy" in markdown and "| pleural effusion | 4 |" in markdown
    again = evaluate_set(ImageTextEngine(model, preprocess, tokenizer), labelled, ["pleural effusion"], EvaluateSection(bootstrap=0, grounding=False),
                         tmp_path / "toy", seed=0)
    assert not (tmp_path / "toy" / "grounding.csv").exists() and "grounding.csv" not in {p.name for p in again}


NIH_DEV = Path(__file__).resolve().parents[3] / "shared" / "data" / "nih-dev-64"
COVID_LUNGS = NIH_DEV.parent / "covid-lungs" / "index.csv"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    import torch

    from synthvlp.models import build_clip, save_clip_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    save_clip_checkpoint(path, "synthvlp-tiny", build_clip("synthvlp-tiny")[0], steps=0)
    return path


def _cli(*args):
    from typer.testing import CliRunner

    from synthvlp.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result


def test_evaluate_compare_and_linear_probe_commands_on_real_nih_images(tiny_checkpoint, tmp_path):
    if not NIH_DEV.is_dir():
        pytest.skip(f"{NIH_DEV} absent: the real NIH dev set is needed for this end-to-end check")
    _cli("evaluate", tiny_checkpoint, "--benchmark", "nih", "--data", NIH_DEV, "--out", tmp_path / "a", "--bootstrap", 10,
         "--classes", "pleural effusion,cardiomegaly")
    rows = read_csv(tmp_path / "a" / "nih" / "zeroshot.csv")
    assert [(r["name"], r["positives"]) for r in rows] == [("pleural effusion", "158"), ("cardiomegaly", "66")]
    assert "### Zero-shot classification: nih" in (tmp_path / "a" / "results.md").read_text()
    _cli("compare", tmp_path / "a", tmp_path / "a", "--out", tmp_path / "compare.md")
    assert "| pleural effusion |" in (tmp_path / "compare.md").read_text()
    _cli("finetune", tiny_checkpoint, "--benchmark", "nih", "--data", NIH_DEV, "--fractions", "0.1,1", "--seeds", "0,1",
         "--classes", "pleural effusion,infiltrate", "--out", tmp_path / "ft")
    rows = read_csv(tmp_path / "ft" / "nih" / "finetune.csv")
    assert {(r["fraction"], r["seed"]) for r in rows} == {("0.1", "0"), ("0.1", "1"), ("1.0", "0"), ("1.0", "1")}
    assert all(0.0 <= float(r["auc"]) <= 1.0 for r in rows)
    table = (tmp_path / "ft" / "finetune.md").read_text()
    assert "| linear_probe | 100% | 594 |" in table


def test_segmentation_command_on_real_lung_masks(tiny_checkpoint, tmp_path):
    if not COVID_LUNGS.exists():
        pytest.skip(f"{COVID_LUNGS} absent: real lung masks are needed for this end-to-end check")
    _cli("finetune", tiny_checkpoint, "--protocol", "segmentation", "--data", COVID_LUNGS, "--fractions", "1", "--seeds", "0",
         "--epochs", 1, "--out", tmp_path / "seg")
    rows = read_csv(tmp_path / "seg" / "covid-lungs" / "segmentation.csv")
    assert {r["init"] for r in rows} == {"pretrained", "scratch"} and all(0 <= float(r["dice_mean"]) <= 1 for r in rows)
    assert "| 100% |" in (tmp_path / "seg" / "finetune.md").read_text()


def test_compare_puts_floor_and_linear_probe_under_the_classes_and_plots(tmp_path):
    from synthvlp.evaluation.compare import plot_comparison

    _fake_results(tmp_path / "real" / "evaluate", "nih", {"nodule": 0.8, "mass": 0.7})
    folder = tmp_path / "real" / "evaluate" / "nih"
    summary = json.loads((folder / "summary.json").read_text())
    summary.update({"floor_mean_auc": 0.51, "floor_mean_auc_ci": [0.45, 0.57], "classes_in_mean": ["nodule"]})
    (folder / "summary.json").write_text(json.dumps(summary))
    rows = ["protocol,fraction,seed,class,auc"] + [f"linear_probe,1.0,{seed},nodule,{auc}" for seed, auc in ((0, 0.7), (1, 0.8))]
    rows += ["linear_probe,1.0,0,mass,0.2", "linear_probe,0.1,0,nodule,0.1"]  # outside the mean's classes / another fraction
    (folder / "finetune.csv").write_text("\n".join(rows) + "\n")
    _fake_results(tmp_path / "synthetic" / "evaluate", "nih", {"nodule": 0.6})
    table = compare_runs([tmp_path / "real", tmp_path / "synthetic"])["nih"]
    assert table[-2] == ["random-init floor", "0.510 (0.450-0.570)", "-"]
    assert table[-1][0] == "linear probe, 100% labels" and table[-1][1].startswith("0.750 (") and table[-1][2] == "-"
    plot_comparison([tmp_path / "real", tmp_path / "synthetic"], tmp_path / "compare.png")
    assert (tmp_path / "compare.png").read_bytes().startswith(b"\x89PNG")
