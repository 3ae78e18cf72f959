"""`synthvlp evaluate` as a harness for someone else's data: the official NIH layout with its images in a folder of
their own (downsampled, so the 1024 px boxes must be rescaled), adapter options, counts, errors and prompts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from synthvlp.cli import app
from synthvlp.errors import UserError
from synthvlp.models import build_clip, save_clip_checkpoint

cli = CliRunner()
ENTRY_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
                "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
FINDINGS = ["Effusion", "Cardiomegaly", "No Finding", "Effusion|Cardiomegaly"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "checkpoint.pt"
    save_clip_checkpoint(path, "synthvlp-tiny", build_clip("synthvlp-tiny")[0], steps=0)
    return path


@pytest.fixture(scope="module")
def nih(tmp_path_factory) -> tuple[Path, Path]:
    """The release's label files in one folder, 8 of its 12 listed images at 64 px in another, 3 boxes at 1024 px."""
    root = tmp_path_factory.mktemp("nih")
    labels, images = root / "labels", root / "images-64"
    labels.mkdir()
    images.mkdir()
    rng = np.random.default_rng(0)
    rows = [f"{i:08d}_000.png,{FINDINGS[i % 4]},0,{i},50,M,PA,2500,2048,0.143,0.143" for i in range(12)]
    (labels / "Data_Entry_2017_v2020.csv").write_text("\n".join([ENTRY_HEADER, *rows]) + "\n")
    (labels / "BBox_List_2017.csv").write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
                                               "00000000_000.png,Effusion,512.0,256.0,256.0,512.0\n"
                                               "00000001_000.png,Cardiomegaly,300.0,400.0,400.0,300.0\n"
                                               "00000003_000.png,Effusion,100.0,600.0,200.0,300.0\n")
    for i in range(8):
        Image.fromarray((rng.random((64, 64)) * 255).astype(np.uint8)).save(images / f"{i:08d}_000.png")
    return labels, images


def _evaluate(checkpoint: Path, *args: str):
    return cli.invoke(app, ["evaluate", str(checkpoint), "--threads", "1", "--batch-size", "4", "--bootstrap", "0", *args], terminal_width=200)


def test_nih_release_with_a_separate_images_folder(checkpoint, nih, tmp_path):
    labels, images = nih
    result = _evaluate(checkpoint, "--benchmark", "nih", "--data", str(labels), "--images", str(images),
                       "--classes", "Effusion,cardiomegaly", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    folder = tmp_path / "out" / "nih"
    summary = json.loads((folder / "summary.json").read_text())
    assert (summary["images"], summary["missing"], summary["regions"], summary["regions_outside_image"]) == (8, 4, 3, 0)
    with open(folder / "zeroshot.csv") as handle:
        assert [row["name"] for row in csv.DictReader(handle)] == ["pleural effusion", "cardiomegaly"]
    with open(folder / "grounding.csv") as handle:
        grounded = {row["label"]: row for row in csv.DictReader(handle)}
    assert grounded["all"]["regions"] == "3" and grounded["all"]["skipped_empty"] == "0"  # rescaled to 64 px, none lost
    assert "Scored the 8 images present of 12 listed" in (tmp_path / "out" / "results.md").read_text()
    assert "scored 8 images present of 12 listed" in result.output


def test_input_errors_are_named(checkpoint, nih, tmp_path):
    labels, images = nih
    twice = _evaluate(checkpoint, "--benchmark", "nih", "--data", str(labels), "--data", str(images))
    assert isinstance(twice.exception, UserError) and "--data given 2 times" in str(twice.exception)
    empty = tmp_path / "empty"
    empty.mkdir()
    none = _evaluate(checkpoint, "--benchmark", "nih", "--data", str(labels), "--images", str(empty), "--out", str(tmp_path / "o"))
    assert isinstance(none.exception, UserError) and "no image to score: 12 listed, none found on disk" in str(none.exception)
    typo = _evaluate(checkpoint, "--benchmark", "nih", "--data", str(labels), "--images", str(images), "--classes", "efusion")
    assert isinstance(typo.exception, UserError) and "did you mean 'pleural effusion'" in str(typo.exception) and "accepted: atelectasis" in str(typo.exception)
    option = _evaluate(checkpoint, "--benchmark", "nih", "--data", str(labels), "--option", "colour=red")
    assert isinstance(option.exception, UserError) and "has no option colour; its options: include_no_finding, split, images" in str(option.exception)
    shards = _evaluate(checkpoint, "--benchmark", "shards", "--data", str(labels), "--images", str(images))
    assert isinstance(shards.exception, UserError) and "reads its images from --data itself" in str(shards.exception)


def test_generic_csv_is_named_after_itself_and_prompts_apply(checkpoint, nih, tmp_path):
    _, images = nih
    table = tmp_path / "my-cohort.csv"
    table.write_text("path,Effusion\n" + "".join(f"{i:08d}_000.png,{i % 2}\n" for i in range(8)))
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text(yaml.safe_dump({"positive_prompts": ["{name} is seen."], "negative_prompts": ["no {name} is seen."]}))
    result = _evaluate(checkpoint, "--benchmark", "generic", "--data", str(table), "--images", str(images), "--prompts", str(prompts))
    assert result.exit_code == 0, result.output
    assert (checkpoint.parent / "evaluate-my-cohort" / "my-cohort" / "zeroshot.csv").is_file()
    prompts.write_text(yaml.safe_dump({"positive_prompts": ["nothing to fill"]}))
    bad = _evaluate(checkpoint, "--benchmark", "generic", "--data", str(table), "--images", str(images), "--prompts", str(prompts))
    assert isinstance(bad.exception, UserError) and "no {name} placeholder" in str(bad.exception)


def test_floor_seed_scores_a_random_init_model_beside_the_checkpoint(checkpoint, nih, tmp_path):
    """The floor is seeded (a rerun gives the same AUCs), shown in the table beside the checkpoint's, and gone after
    a rerun without it, so no old floor is read as this run's."""
    labels, images = nih

    def floor_aucs(out: str) -> dict[str, float]:
        result = _evaluate(checkpoint, "--benchmark", "nih", "--data", str(labels), "--images", str(images),
                           "--classes", "Effusion,cardiomegaly", "--out", str(tmp_path / out), "--floor-seed", "7")
        assert result.exit_code == 0, result.output
        with open(tmp_path / out / "nih" / "zeroshot_floor.csv") as handle:
            return {row["name"]: float(row["auc"]) for row in csv.DictReader(handle)}

    floor = floor_aucs("out")
    assert list(floor) == ["pleural effusion", "cardiomegaly"] and floor == floor_aucs("again")
    with open(tmp_path / "out" / "nih" / "zeroshot.csv") as handle:
        scored = {row["name"]: float(row["auc"]) for row in csv.DictReader(handle)}
    table = (tmp_path / "out" / "results.md").read_text()
    assert f"| pleural effusion | 4 | 4 | {scored['pleural effusion']:.3f} | {floor['pleural effusion']:.3f} |" in table
    without = _evaluate(checkpoint, "--benchmark", "nih", "--data", str(labels), "--images", str(images),
                        "--classes", "Effusion", "--out", str(tmp_path / "out"))
    assert without.exit_code == 0 and not (tmp_path / "out" / "nih" / "zeroshot_floor.csv").exists()
