"""Bad input, as a hostile user gives it: every kind gets one named error (file, row or field), never a traceback.

The tables below are the contract: each row is a kind of bad input and the message fragment it must produce.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pretrain_helpers import make_csv, make_shards, png_bytes

from synthvlp.checkpoints import CODE_REFUSED
from synthvlp.config import FilterSection, RealDataSection, load_config
from synthvlp.errors import ConfigError, UserError

# ---- checkpoints -----------------------------------------------------------------------------------------------


class RunsCode:
    """Pickles as a call of os.getcwd: harmless, but exactly what weights_only loading must refuse."""

    def __reduce__(self):
        return (os.getcwd, ())


def _write_truncated(path: Path) -> None:
    torch.save({"model": "synthvlp-tiny", "state_dict": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:300])


CHECKPOINTS = {
    "missing": (lambda p: None, "not found"),
    "text file": (lambda p: p.write_text("model: synthvlp-tiny\nweights: none\n"), "not a synthvlp checkpoint (not a torch file, or garbled)"),
    "random bytes": (lambda p: p.write_bytes(np.random.default_rng(0).bytes(300)), "not a synthvlp checkpoint (not a torch file, or garbled)"),
    "truncated": (_write_truncated, "unreadable checkpoint (cut short)"),
    "0-byte file": (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    "foreign dict": (lambda p: torch.save({"weights": torch.zeros(2)}, p), "(no format entry; it has ['weights']); accepted formats: "),
    "foreign format": (lambda p: torch.save({"format": "other.tool/3", "weights": torch.zeros(2)}, p), "(format 'other.tool/3'); accepted formats: "),
    "bare tensor": (lambda p: torch.save(torch.zeros(2), p), "holds a Tensor, not a dict"),
    "directory": (lambda p: p.mkdir(), "is a folder, not a checkpoint file"),
    "pickled code": (lambda p: torch.save({"model": RunsCode()}, p), CODE_REFUSED),
}


def _load_clip(path: Path) -> None:
    from synthvlp.evaluation.inference import ImageTextEngine

    ImageTextEngine.from_checkpoint(path)


def _load_any(path: Path) -> None:
    from synthvlp.checkpoints import load

    load(path)


def _load_encoder(path: Path) -> None:
    from synthvlp.models import load_image_encoder

    load_image_encoder(path, torch.nn.Linear(1, 1))


def _load_backbone(path: Path) -> None:
    from synthvlp.pretrain.rasd_engine import load_backbone

    load_backbone(path)


def _load_image_tower(path: Path) -> None:
    """What segmentation fine-tuning reads: a CLIP checkpoint or an image encoder, as an image tower."""
    from synthvlp.checkpoints import ClipCheckpoint, ImageEncoderCheckpoint, load
    from synthvlp.models import image_tower

    image_tower(load(path, ClipCheckpoint, ImageEncoderCheckpoint))


LOADERS = {"any": _load_any, "clip": _load_clip, "image encoder": _load_encoder, "rasd backbone": _load_backbone, "image tower": _load_image_tower}


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("case", CHECKPOINTS)
def test_every_checkpoint_loader_names_what_is_wrong(tmp_path, case, loader):
    make, fragment = CHECKPOINTS[case]
    path = tmp_path / "bad.pt"
    make(path)
    with pytest.raises(UserError) as caught:
        LOADERS[loader](path)
    assert fragment in str(caught.value) and str(path) in str(caught.value)
    assert "weights_only=False" not in str(caught.value)


def test_a_clip_checkpoint_is_not_an_image_encoder(tmp_path):
    from synthvlp.models import build_clip, save_clip_checkpoint

    path = tmp_path / "checkpoint.pt"
    save_clip_checkpoint(path, "synthvlp-tiny", build_clip("synthvlp-tiny")[0], steps=0)
    with pytest.raises(UserError, match="not a synthvlp image encoder \\(format 'synthvlp.clip/1'\\); accepted formats: synthvlp.image_encoder/1$"):
        _load_encoder(path)


def test_a_state_dict_that_is_not_a_dict_is_named(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": "synthvlp-tiny", "state_dict": torch.zeros(3)}, path)
    with pytest.raises(UserError, match="its state_dict is a Tensor, not a dict of named tensors"):
        _load_clip(path)


def test_unreadable_training_states_are_skipped_for_the_newest_good_one(tmp_path):
    from synthvlp.checkpoints import TrainState
    from synthvlp.pretrain.checkpoint import latest_state

    good = {"format": TrainState.tag(), "model_name": "m", "step": 2, "model": {}, "optimizer": {}, "scheduler": {}, "rng": {}}
    torch.save(good, tmp_path / "step-00000002.pt")
    (tmp_path / "step-00000004.pt").write_bytes(b"")
    torch.save({"x": RunsCode()}, tmp_path / "step-00000006.pt")
    found = latest_state(tmp_path)
    assert found is not None and found[0].name == "step-00000002.pt"


def test_an_exemplar_encoder_folder_that_is_not_a_model(tmp_path):
    from synthvlp.encoders import build_encoder

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "preprocessor_config.json").write_text("{}")
    with pytest.raises(UserError, match="not a loadable Hugging Face image model"):
        build_encoder(str(tmp_path))
    with pytest.raises(UserError, match="not a Hugging Face model folder"):
        build_encoder(str(tmp_path / "config.json"))


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "synthvlp.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("case", ["0-byte file", "pickled code"])
def test_the_command_line_prints_one_line_and_exits_2(tmp_path, case):
    make, fragment = CHECKPOINTS[case]
    make(tmp_path / "bad.pt")
    result = _cli("evaluate", str(tmp_path / "bad.pt"), "--benchmark", "generic", "--data", str(tmp_path))
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr and "Traceback" not in result.stderr and "Aborted" not in result.stderr


# ---- benchmark images ------------------------------------------------------------------------------------------


def _folder_benchmark(root: Path, bad: dict[str, bytes]) -> Path:
    """A generic benchmark (one subfolder per class) with three good images per class plus the ``bad`` files."""
    rng = np.random.default_rng(0)
    for label in ("cardiomegaly", "no finding"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            (root / label / f"{i}.png").write_bytes(png_bytes(rng))
    for name, content in bad.items():
        (root / "cardiomegaly" / name).write_bytes(content)
    return root


BAD_IMAGES = {"empty.png": b"", "truncated.png": png_bytes(np.random.default_rng(1), 64)[:200], "text.png": b"not an image\n"}


def test_unreadable_benchmark_images_are_skipped_counted_and_listed(tmp_path):
    from synthvlp.evaluation.benchmarks import load_benchmark
    from synthvlp.evaluation.harness import readable_images

    labelled = readable_images(load_benchmark("generic", _folder_benchmark(tmp_path / "set", BAD_IMAGES)))
    assert len(labelled) == 6 and len(labelled.unreadable) == 3
    assert {u.split(" ")[0] for u in labelled.unreadable} == {f"cardiomegaly/{n}" for n in BAD_IMAGES}
    assert labelled.labels.shape == (6, 1) and labelled.labels.sum() == 3


def test_evaluation_reports_unreadable_images_in_its_summary(tmp_path):
    from synthvlp.config import EvaluateSection
    from synthvlp.evaluation.benchmarks import load_benchmark
    from synthvlp.evaluation.harness import evaluate_set, write_results
    from synthvlp.evaluation.inference import ImageTextEngine
    from synthvlp.models import build_clip, save_clip_checkpoint

    checkpoint = tmp_path / "checkpoint.pt"
    save_clip_checkpoint(checkpoint, "synthvlp-tiny", build_clip("synthvlp-tiny")[0], steps=0)
    labelled = load_benchmark("generic", _folder_benchmark(tmp_path / "set", {"empty.png": b""}))
    evaluate_set(ImageTextEngine.from_checkpoint(checkpoint), labelled, ["cardiomegaly"], EvaluateSection(bootstrap=0, grounding=False),
                 tmp_path / "out" / "set", seed=0)
    summary = json.loads((tmp_path / "out" / "set" / "summary.json").read_text())
    assert summary["images"] == 6 and summary["unreadable"] == 1 and summary["unreadable_images"][0].startswith("cardiomegaly/empty.png")
    assert "1 unreadable, left out (cardiomegaly/empty.png" in write_results(tmp_path / "out", "t").read_text()


def _all_missing(folder: Path) -> Path:
    (folder / "labels.csv").write_text("path,cardiomegaly\na.png,1\nb.png,0\n")
    return folder / "labels.csv"


def _header_only(folder: Path) -> Path:
    (folder / "labels.csv").write_text("path,cardiomegaly\n")
    return folder / "labels.csv"


def _all_unreadable(folder: Path) -> Path:
    (folder / "a.png").write_bytes(b"")
    (folder / "b.png").write_bytes(b"GIF89a")
    (folder / "labels.csv").write_text("path,cardiomegaly\na.png,1\nb.png,0\n")
    return folder / "labels.csv"


@pytest.mark.parametrize("make, fragment", [
    (_all_missing, "no image to score: 2 listed, none found on disk"),
    (_header_only, "label file has a header (path, cardiomegaly) but no rows"),
    (_all_unreadable, "no readable image to evaluate (0 listed but missing on disk, 2 unreadable, e.g. a.png"),
], ids=["every image missing", "header-only CSV", "every image unreadable"])
def test_a_benchmark_without_a_readable_image_is_an_error(tmp_path, make, fragment):
    from synthvlp.evaluation.benchmarks import load_benchmark
    from synthvlp.evaluation.harness import readable_images

    with pytest.raises(UserError) as caught:
        readable_images(load_benchmark("generic", make(tmp_path)))
    assert fragment in str(caught.value)


# ---- CSV readers -----------------------------------------------------------------------------------------------

HEADER = "path,image,mask,text,patient_id,cardiomegaly\n"
CSVS = {
    "empty": (b"", "empty"),
    "header only": (HEADER.encode(), "but no rows"),
    "unterminated quote": ((HEADER + 'a.png,a.png,m.png,"clear lungs,p1,1\nb.png,b.png,m.png,ok,p2,0\n').encode(), "malformed CSV (EOF inside string"),
    "wrong encoding": ((HEADER + "a.png,a.png,m.png,").encode() + "épanchement,p1,1\n".encode("latin-1"), "line 2 is not UTF-8"),
}


def _benchmark_reader(path: Path, tmp_path: Path) -> None:
    from synthvlp.evaluation.benchmarks import load_benchmark

    load_benchmark("generic", path)


def _real_corpus_reader(path: Path, tmp_path: Path) -> None:
    from synthvlp.pretrain.data import CsvSource

    CsvSource(RealDataSection(csv=path), seed=0)


def _filter_real_reader(path: Path, tmp_path: Path) -> None:
    from synthvlp.filtering.real import filter_real_dataset

    filter_real_dataset(path, tmp_path / "out", FilterSection())


def _segmentation_reader(path: Path, tmp_path: Path) -> None:
    from synthvlp.evaluation.segmentation_data import load_segmentation_csv

    load_segmentation_csv(path, 32)


CSV_READERS = {"benchmark": _benchmark_reader, "pretrain.real": _real_corpus_reader, "filter real": _filter_real_reader,
               "segmentation": _segmentation_reader}


@pytest.mark.parametrize("reader", CSV_READERS)
@pytest.mark.parametrize("case", CSVS)
def test_every_csv_reader_names_the_file_and_the_problem(tmp_path, case, reader):
    content, fragment = CSVS[case]
    path = tmp_path / "table.csv"
    path.write_bytes(content)
    with pytest.raises(UserError) as caught:
        CSV_READERS[reader](path, tmp_path)
    assert str(path) in str(caught.value) and fragment in str(caught.value)


def test_a_folder_given_as_a_csv_is_named(tmp_path):
    with pytest.raises(UserError, match="is a folder; pretrain.real.csv must be a CSV file"):
        _real_corpus_reader(tmp_path, tmp_path)


def test_an_unreadable_segmentation_image_names_its_row(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    Image.new("L", (8, 8)).save(tmp_path / "m.png")
    (tmp_path / "index.csv").write_text("image,mask\na.png,m.png\n")
    with pytest.raises(UserError, match="row 'a.png': unreadable image or mask"):
        _segmentation_reader(tmp_path / "index.csv", tmp_path)


def test_a_corrupt_journal_line_is_named_skipped_and_repaired(tmp_path, caplog):
    from synthvlp.generation.journal import Journal

    path = tmp_path / "journal.jsonl"
    lines = [json.dumps({"id": "s1", "findings": "a"}), "{not json", json.dumps(["no", "id"]), json.dumps({"id": "s2"}), '{"id": "s3", "fin']
    path.write_text("\n".join(lines))
    with caplog.at_level(logging.WARNING):
        records = Journal(path).read()
    assert sorted(records) == ["s1", "s2"]
    warnings = [r.getMessage() for r in caplog.records]
    assert any(f"{path} line 2: corrupt journal record" in w for w in warnings) and any("line 3" in w for w in warnings)
    assert path.read_text().splitlines() == [lines[0], lines[3]], "corrupt lines and the torn tail are dropped from the file"


# ---- config values and arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize("override", ["pretrain.lr=.inf", "pretrain.lr=.nan", "filter.min_std=.nan", "reports.timeout_s=.inf",
                                      "pretrain.max_logit_scale=.inf", "balance.temperature=-.inf"])
def test_infinities_and_nan_are_rejected(override):
    with pytest.raises(ConfigError, match=f"{override.split('=')[0]} = .*: Input should be a finite number"):
        load_config(None, [override])


def test_rasd_configs_reject_infinities_too():
    from synthvlp.rasd import RaSDConfig

    with pytest.raises(ConfigError, match="Input should be a finite number"):
        load_config(None, ["train.lr=.inf"], model=RaSDConfig)


@pytest.mark.parametrize("args, fragment", [
    (["--shard", "3/2"], "expected i/n with 0 <= i < n"),
    (["--shard", "x"], "expected i/n"),
    (["--stages", "plan,paint"], "unknown stage(s) ['paint']"),
    (["--stages", ","], "no stage given"),
])
def test_shard_and_stages_are_checked_before_the_run_folder_is_touched(write_config, tmp_path, args, fragment):
    result = _cli("run", str(write_config(out_dir=tmp_path / "run")), *args)
    assert result.returncode == 2 and fragment in result.stderr
    assert not (tmp_path / "run").exists()


# ---- disk full during pre-training -----------------------------------------------------------------------------


class FillsUp:
    """A file whose disk fills after ``room`` bytes: writes then fail with ENOSPC, as on a real full disk."""

    def __init__(self, handle, room: int) -> None:
        self.handle, self.room = handle, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name: str):
        return getattr(self.handle, name)


def _pretrain_settings(shards):
    return load_config(None, ["pretrain.model=synthvlp-tiny", "pretrain.batch_size=8", "pretrain.max_steps=2", "pretrain.checkpoint_every=1",
                              "pretrain.threads=1", "pretrain.tensorboard=false", f"pretrain.shards={json.dumps([str(s) for s in shards])}"]).pretrain


def test_disk_full_during_pretraining_is_one_line_then_resumes(tmp_path, monkeypatch):
    from synthvlp.pretrain.engine import train

    shards = make_shards(tmp_path / "shards", n_shards=1, per_shard=16)
    settings, out = _pretrain_settings(shards), tmp_path / "pretrain"
    real_save, saves = torch.save, []

    def save_until_full(obj, handle, *args, **kwargs):  # the second training state meets a full disk
        saves.append(1)
        return real_save(obj, FillsUp(handle, 10_000) if len(saves) == 2 else handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_full)
    with pytest.raises(UserError) as caught:
        train(settings, shards, out, seed=0, say=lambda s: None)
    monkeypatch.setattr(torch, "save", real_save)
    message = str(caught.value)
    assert message == f"{out / 'state'}/{next((out / 'state').iterdir()).name}/step-00000002.pt: no space left on device; finished work is kept — free space and rerun to resume"
    assert not list(out.rglob("*.tmp")), "the half-written state is removed"
    said = []
    result = train(settings, shards, out, seed=0, say=said.append)
    assert result.resumed_from == 1 and result.steps == 2 and any("resuming from" in s for s in said)


def _mount_small_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True).returncode == 0


@pytest.mark.slow
def test_a_really_full_disk_during_pretrain_on_the_command_line(tmp_path, write_config):
    """On a real 150 MB filesystem (skipped where this process may not mount one): one line, exit 2, then resume."""
    disk = tmp_path / "disk"
    if os.geteuid() != 0 or not _mount_small_tmpfs(disk, "150m"):
        pytest.skip("needs permission to mount a small tmpfs")
    try:
        shards = make_shards(tmp_path / "shards", n_shards=1, per_shard=16)
        config = write_config(out_dir=disk / "run", pretrain={"max_steps": 4, "checkpoint_every": 2, "batch_size": 8, "tensorboard": False,
                                                              "shards": [str(s) for s in shards]})
        full = _cli("pretrain", str(config))  # a training state of synthvlp-tiny is ~89 MB: the second one does not fit
        assert full.returncode == 2, full.stderr
        assert "no space left on device; finished work is kept" in full.stderr and "Traceback" not in full.stderr
        assert len(full.stderr.strip().splitlines()) <= 3, full.stderr
        subprocess.run(["mount", "-o", "remount,size=1g", str(disk)], check=True)
        resumed = _cli("pretrain", str(config))
        assert resumed.returncode == 0, resumed.stderr
        assert "resuming from" in resumed.stderr and "(step 2 of 4)" in resumed.stderr
        assert (disk / "run" / "pretrain" / "checkpoint.pt").is_file()
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_a_good_real_corpus_csv_still_reads(tmp_path):
    """The happy path through the shared CSV reader: a real corpus CSV loads with its rows."""
    from synthvlp.pretrain.data import CsvSource

    source = CsvSource(RealDataSection(csv=make_csv(tmp_path, n=6)), seed=0)
    assert len(source) == 6
