"""Benchmark adapters: real published label files paired with tiny generated images, and hand-made fixtures."""

from __future__ import annotations

import io
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from synthvlp.errors import UserError
from synthvlp.evaluation.benchmarks import benchmark_names, build_chexpert_5x200, load_benchmark
from synthvlp.evaluation.benchmarks.siim import decode_rle
from synthvlp.masks import encode_masks
from synthvlp.store import write_shard

LABEL_FILES = Path("../shared/data/label-files")
NIH_DEV = Path("../shared/data/nih-dev-64")
NIH_CLASSES = ["atelectasis", "cardiomegaly", "consolidation", "pulmonary edema", "pleural effusion", "emphysema",
               "fibrosis", "hiatal hernia", "infiltrate", "mass", "nodule", "pleural thickening", "pneumonia",
               "pneumothorax"]


def png(path: Path, size: tuple[int, int] = (8, 6)) -> Path:
    """A small grey PNG at ``path`` (width, height = ``size``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, 128).save(path)
    return path


def png_bytes(size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, 128).save(buffer, format="PNG")
    return buffer.getvalue()


def same(a: np.ndarray, b: list[float]) -> bool:
    """Equal with NaN equal to NaN."""
    return np.array_equal(np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32), equal_nan=True)


def real(name: str) -> Path:
    path = LABEL_FILES / name
    if not path.exists():
        pytest.skip(f"{path} absent: the real label files are not in this checkout's shared data")
    return path


# ---------------------------------------------------------------------------------------------------- registry

def test_registry_lists_names_and_rejects_unknown(tmp_path: Path) -> None:
    assert {"chexpert", "chexpert-5x200", "nih", "rsna", "siim", "covidx", "padchest", "ms-cxr", "vindr", "generic",
            "shards"} == set(benchmark_names())
    with pytest.raises(UserError, match="unknown benchmark 'mimic'.*chexpert.*vindr"):
        load_benchmark("mimic", tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        load_benchmark("nih", tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------------- NIH

def test_nih_dev_set_matches_its_label_columns() -> None:
    if not (NIH_DEV / "labels.csv").exists():
        pytest.skip(f"{NIH_DEV}/labels.csv absent: the NIH development set is not in shared data")
    labelled = load_benchmark("nih", NIH_DEV)
    frame = pd.read_csv(NIH_DEV / "labels.csv")
    present = frame[[(NIH_DEV / p).is_file() for p in frame["path"]]]
    assert len(labelled) == len(present) and len(labelled.missing) == len(frame) - len(present)
    assert labelled.classes == NIH_CLASSES
    columns = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis", "Hernia",
               "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia", "Pneumothorax"]
    assert np.array_equal(labelled.labels, present[columns].to_numpy(dtype=np.float32))
    assert labelled.split == list(present["split"]) and labelled.group == [str(p) for p in present["patient_id"]]
    assert len(labelled.only_split("test")) == int((present["split"] == "test").sum())


@pytest.fixture(scope="module")
def nih_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real entry and box files beside three generated images (one in an ``images_001/images/`` folder)."""
    entry, boxes = real("Data_Entry_2017_v2020.csv.gz"), real("BBox_List_2017.csv.gz")
    folder = tmp_path_factory.mktemp("nih")
    png(folder / "00000001_000.png")
    png(folder / "images_001" / "images" / "00000001_001.png")
    png(folder / "images" / "00013118_008.png")
    (folder / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n")
    (folder / "test_list.txt").write_text("00013118_008.png\n")
    for source in (entry, boxes):
        (folder / source.name).symlink_to(source.resolve())
    return folder


def test_nih_release_labels_boxes_splits_and_missing(nih_release: Path) -> None:
    labelled = load_benchmark("nih", nih_release)
    assert labelled.ids == ["00000001_000.png", "00000001_001.png", "00013118_008.png"]
    assert len(labelled.missing) == 112_120 - 3
    rows = dict(zip(labelled.ids, labelled.labels))
    expected = {"00000001_000.png": {"cardiomegaly"}, "00000001_001.png": {"cardiomegaly", "emphysema"},
                "00013118_008.png": {"atelectasis"}}
    for image_id, positive in expected.items():
        assert same(rows[image_id], [float(c in positive) for c in NIH_CLASSES])
    assert labelled.split == ["train", "train", "test"] and labelled.group == ["1", "1", "13118"]
    [region] = labelled.regions
    assert region.image == 2 and region.label == "atelectasis"
    # the box is in the release's 1024 px frame; the image on disk is 8 x 6 px, so the box is scaled to it
    sx, sy = 8 / 1024, 6 / 1024
    assert region.box == pytest.approx((225.084745762712 * sx, 547.019216763771 * sy, (225.084745762712 + 86.7796610169491) * sx,
                                        (547.019216763771 + 79.1864406779661) * sy))


def test_nih_folder_with_two_label_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("path,split,finding_labels,patient_id\n")
    (tmp_path / "Data_Entry_2017.csv").write_text("Image Index,Finding Labels,Patient ID\n")
    with pytest.raises(UserError, match="several label files"):
        load_benchmark("nih", tmp_path)


def test_nih_entry_file_missing_a_column_names_file_and_columns(tmp_path: Path) -> None:
    (tmp_path / "Data_Entry_2017.csv").write_text("Image Index,Finding Labels\na.png,Mass\n")
    with pytest.raises(UserError, match=r"Data_Entry_2017\.csv: missing column\(s\) \['Patient ID'\]; expected "
                                        r"columns \['Image Index', 'Finding Labels', 'Patient ID'\]"):
        load_benchmark("nih", tmp_path)


# ---------------------------------------------------------------------------------------------------- RSNA

def test_rsna_real_labels_union_boxes_per_patient(tmp_path: Path) -> None:
    labels = real("kaggle_stage_2_train_labels.csv.zip")
    png(tmp_path / "00436515-870c-4b36-a041-de91049b9ab4.png")
    png(tmp_path / "0004cfab-14fd-4e49-80ba-63a80b6bddd6.jpg")
    labelled = load_benchmark("rsna", labels, images=tmp_path)
    assert labelled.ids == ["0004cfab-14fd-4e49-80ba-63a80b6bddd6", "00436515-870c-4b36-a041-de91049b9ab4"]
    assert labelled.classes == ["pneumonia"] and same(labelled.labels, [[0.0], [1.0]])
    assert len(labelled.missing) == 26_684 - 2
    assert [(r.image, r.label, r.box) for r in labelled.regions] == [
        (1, "pneumonia", (264.0, 152.0, 477.0, 531.0)), (1, "pneumonia", (562.0, 152.0, 818.0, 605.0))]


def test_rsna_dicom_without_pydicom_is_a_clear_error(tmp_path: Path) -> None:
    try:
        import pydicom  # noqa: F401
        pytest.skip("pydicom is installed, so DICOM reads")
    except ImportError:
        pass
    (tmp_path / "stage_2_train_labels.csv").write_text("patientId,x,y,width,height,Target\np1,,,,,0\n")
    (tmp_path / "p1.dcm").write_bytes(b"")
    with pytest.raises(UserError, match="p1.dcm: reading DICOM needs pydicom"):
        load_benchmark("rsna", tmp_path)


# ---------------------------------------------------------------------------------------------------- CheXpert

CHEXPERT_HEADER = ("Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,"
                   "Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,"
                   "Fracture,Support Devices")


def chexpert_row(path: str, frontal: bool, values: dict[str, str]) -> str:
    names = CHEXPERT_HEADER.split(",")[5:]
    view = "Frontal,AP" if frontal else "Lateral,"
    return ",".join([path, "Female", "60", view] + [values.get(n, "") for n in names])


def test_chexpert_valid_maps_uncertain_and_blank_to_nan(tmp_path: Path) -> None:
    root = tmp_path / "CheXpert-v1.0-small"
    rows = [chexpert_row("CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg", True,
                         {"Cardiomegaly": "1.0", "Edema": "-1.0", "Pleural Effusion": "0.0", "Lung Opacity": "1"}),
            chexpert_row("CheXpert-v1.0-small/valid/patient64541/study1/view2_lateral.jpg", False, {"Edema": "1.0"}),
            chexpert_row("CheXpert-v1.0-small/valid/patient64542/study1/view1_frontal.jpg", True, {"Edema": "1.0"})]
    (root).mkdir()
    (root / "valid.csv").write_text("\n".join([CHEXPERT_HEADER, *rows]) + "\n")
    png(root / "valid/patient64541/study1/view1_frontal.jpg")
    png(root / "valid/patient64541/study1/view2_lateral.jpg")
    labelled = load_benchmark("chexpert", root)  # root is the release folder: its prefix is tolerated
    assert labelled.ids == ["CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg"]
    assert labelled.missing == ["CheXpert-v1.0-small/valid/patient64542/study1/view1_frontal.jpg"]
    assert labelled.group == ["patient64541"]
    row = dict(zip(labelled.classes, labelled.labels[0]))
    assert row["cardiomegaly"] == 1 and row["opacity"] == 1 and row["pleural effusion"] == 0
    assert math.isnan(row["pulmonary edema"]) and math.isnan(row["pneumothorax"])
    assert "no finding" not in labelled.classes and len(labelled.classes) == 13
    both = load_benchmark("chexpert", root / "valid.csv", frontal_only=False, images=tmp_path)
    assert len(both) == 2 and dict(zip(both.classes, both.labels[1]))["pulmonary edema"] == 1


def test_chexpert_test_groundtruth_expands_studies(tmp_path: Path) -> None:
    (tmp_path / "groundtruth.csv").write_text("Study,Atelectasis,Cardiomegaly,Consolidation,Edema,Pleural Effusion\n"
                                              "CheXpert-v1.0/test/patient64741/study1,0,1,0,0,1\n")
    png(tmp_path / "test/patient64741/study1/view1_frontal.jpg")
    png(tmp_path / "test/patient64741/study1/view2_frontal.jpg")
    png(tmp_path / "test/patient64741/study1/view3_lateral.jpg")
    labelled = load_benchmark("chexpert", tmp_path, split="test")
    assert labelled.ids == ["CheXpert-v1.0/test/patient64741/study1/view1_frontal.jpg",
                            "CheXpert-v1.0/test/patient64741/study1/view2_frontal.jpg"]
    # classes follow CheXpert's published column order, whatever the file's
    assert labelled.classes == ["cardiomegaly", "pulmonary edema", "consolidation", "atelectasis", "pleural effusion"]
    assert same(labelled.labels, [[1, 0, 0, 0, 1]] * 2)


def test_chexpert_5x200_is_seeded_and_one_positive_only(tmp_path: Path) -> None:
    five = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
    rng = np.random.default_rng(7)
    rows = []
    for i in range(300):
        values = {n: rng.choice(["1.0", "0.0", "-1.0", ""], p=[0.3, 0.4, 0.1, 0.2]) for n in five}
        rows.append(chexpert_row(f"CheXpert-v1.0-small/train/patient{i:05d}/study1/view1_frontal.jpg", i % 10 != 0,
                                 values))
        png(tmp_path / f"train/patient{i:05d}/study1/view1_frontal.jpg", (2, 2))
    (tmp_path / "train.csv").write_text("\n".join([CHEXPERT_HEADER, *rows]) + "\n")
    frame = pd.read_csv(tmp_path / "train.csv").set_index("Path")
    first = build_chexpert_5x200(tmp_path / "train.csv", seed=3, per_class=5)
    again = load_benchmark("chexpert-5x200", tmp_path / "train.csv", seed=3, per_class=5)
    other = build_chexpert_5x200(tmp_path / "train.csv", seed=4, per_class=5)
    assert first.ids == again.ids and first.ids != other.ids and len(set(first.ids)) == 25
    assert np.array_equal(first.labels, np.repeat(np.eye(5, dtype=np.float32), 5, axis=0))
    for image_id, label in zip(first.ids, first.labels):
        record = frame.loc[image_id]
        assert record["Frontal/Lateral"] == "Frontal"
        assert [record[n] == 1 for n in five] == [bool(v) for v in label]
    with pytest.raises(UserError, match="CheXpert 5x200 needs 200"):
        build_chexpert_5x200(tmp_path / "train.csv", seed=3)


# ---------------------------------------------------------------------------------------------------- SIIM

def encode_rle(mask: np.ndarray) -> str:
    """The Kaggle SIIM encoding of ``mask``: column-major runs, each start relative to the previous run's end."""
    flat = np.concatenate([[0], mask.T.reshape(-1).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(flat))
    starts, ends = edges[0::2], edges[1::2]
    previous_end = np.concatenate([[0], ends[:-1]])
    return " ".join(f"{s - p} {e - s}" for s, e, p in zip(starts, ends, previous_end))


def test_siim_rle_round_trip_is_exact_and_transposed() -> None:
    mask = np.zeros((6, 5), dtype=bool)
    mask[1:3, 0:4] = True  # a wide bar: column-major order splits it into one run per column
    mask[5, 4] = True
    rle = encode_rle(mask)
    assert rle.split()[:2] == ["1", "2"]  # column 0 holds rows 1-2: start 1, length 2
    assert np.array_equal(decode_rle([rle], (6, 5)), mask)
    assert not np.array_equal(decode_rle([rle], (6, 5)), decode_rle([rle], (5, 6)).T)  # size is (height, width)


def test_siim_unites_rows_and_reads_both_column_spellings(tmp_path: Path) -> None:
    a, b = np.zeros((16, 16), dtype=bool), np.zeros((16, 16), dtype=bool)
    a[2:5, 3:9], b[10:12, 1:2] = True, True
    for image_id in ("1.2.3", "1.2.4", "1.2.5"):
        png(tmp_path / "dicom-images-train" / "s" / f"{image_id}.png", (16, 16))
    rows = [("1.2.3", encode_rle(a)), ("1.2.3", encode_rle(b)), ("1.2.4", "-1"), ("1.2.9", "-1")]
    (tmp_path / "train-rle.csv").write_text("ImageId, EncodedPixels\n" + "".join(f"{i}, {r}\n" for i, r in rows))
    labelled = load_benchmark("siim", tmp_path, size=(16, 16))
    assert labelled.ids == ["1.2.3", "1.2.4"] and labelled.missing == ["1.2.9"]
    assert same(labelled.labels, [[1], [0]]) and labelled.classes == ["pneumothorax"]
    [region] = labelled.regions
    assert callable(region.mask) and region.image == 0
    assert np.array_equal(region.mask_array(16, 16), a | b)
    (tmp_path / "stage2.csv").write_text("ImageId,EncodedPixels\n1.2.5," + encode_rle(b) + "\n")
    stage2 = load_benchmark("siim", tmp_path / "stage2.csv", size=(16, 16))
    assert np.array_equal(stage2.regions[0].mask_array(16, 16), b)
    (tmp_path / "bad.csv").write_text("ImageId,Pixels\n1.2.5,-1\n")
    with pytest.raises(UserError, match=r"bad\.csv: missing column ' EncodedPixels'"):
        load_benchmark("siim", tmp_path / "bad.csv")


# ---------------------------------------------------------------------------------------------------- COVIDx

def test_covidx_two_and_three_class_versions(tmp_path: Path) -> None:
    png(tmp_path / "test" / "a.png")
    png(tmp_path / "test" / "b.png")
    (tmp_path / "test.txt").write_text("p1 a.png positive bimcv\np2 b.png negative rsna\np3 c.png positive sirm\n")
    two = load_benchmark("covidx", tmp_path / "test.txt")
    assert two.classes == ["covid-19"] and same(two.labels, [[1], [0]]) and two.missing == ["c.png"]
    assert two.group == ["p1", "p2"] and two.split == ["test", "test"]
    png(tmp_path / "train" / "c.png")
    (tmp_path / "train.txt").write_text("p1 a.png COVID-19 cohen\np2 b.png pneumonia rsna\np3 c.png normal rsna\n")
    three = load_benchmark("covidx", tmp_path / "train.txt", images=tmp_path / "test")
    assert three.classes == ["covid-19", "pneumonia"] and same(three.labels, [[1, np.nan], [0, 1]])
    (tmp_path / "bad.txt").write_text("p1 a.png\n")
    with pytest.raises(UserError, match=r"bad\.txt:1: expected 'patient_id filename class"):
        load_benchmark("covidx", tmp_path / "bad.txt")


# ---------------------------------------------------------------------------------------------------- PadChest

def test_padchest_keeps_frontal_and_known_labels(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    png(tmp_path / "0" / "a.png")
    png(tmp_path / "b.png")
    png(tmp_path / "0" / "c.png")
    (tmp_path / "padchest.csv").write_text(
        "ImageID,ImageDir,Labels,Projection,PatientID\n"
        "a.png,0,\"['pleural effusion', ' cardiomegaly', 'dai']\",PA,x1\n"
        "b.png,0,\"['normal']\",AP_horizontal,x2\n"
        "c.png,0,\"['cardiomegaly']\",L,x3\n"
        "d.png,0,\"['pneumonia']\",PA,x4\n"
        "e.png,1,,PA,x5\n")
    png(tmp_path / "1" / "e.png")
    with caplog.at_level(logging.WARNING):
        labelled = load_benchmark("padchest", tmp_path / "padchest.csv")
    assert labelled.ids == ["a.png", "b.png", "e.png"] and labelled.missing == ["d.png"]
    assert labelled.classes == ["cardiomegaly", "pleural effusion", "pneumonia"]
    assert same(labelled.labels, [[1, 1, 0], [0, 0, 0], [np.nan] * 3])
    assert "dai (1)" in caplog.text


# ---------------------------------------------------------------------------------------------------- MS-CXR

def test_mscxr_boxes_in_original_pixels_with_phrases(tmp_path: Path) -> None:
    png(tmp_path / "files/p10/p10000032/s50414267/d1.jpg")
    (tmp_path / "MS_CXR_Local_Alignment_v1.0.0.csv").write_text(
        "dicom_id,category_name,label_text,path,x,y,w,h,image_width,image_height\n"
        "d1,Pneumothorax,small left apical pneumothorax,files/p10/p10000032/s50414267/d1.jpg,10,20,30,40,2544,3056\n"
        "d1,Pleural Effusion,right effusion,files/p10/p10000032/s50414267/d1.jpg,1,2,3,4,2544,3056\n"
        "d2,Pneumothorax,pneumothorax,files/p11/d2.jpg,0,0,5,5,100,100\n")
    labelled = load_benchmark("ms-cxr", tmp_path / "MS_CXR_Local_Alignment_v1.0.0.csv")
    assert labelled.ids == ["d1"] and labelled.missing == ["d2"]
    assert labelled.classes == ["pleural effusion", "pneumothorax"] and same(labelled.labels, [[1, 1]])
    assert [(r.label, r.box, r.phrase) for r in labelled.regions] == [
        ("pneumothorax", (10.0, 20.0, 40.0, 60.0), "small left apical pneumothorax"),
        ("pleural effusion", (1.0, 2.0, 4.0, 6.0), "right effusion")]


# ---------------------------------------------------------------------------------------------------- VinDr

def test_vindr_any_radiologist_and_boxes(tmp_path: Path) -> None:
    (tmp_path / "annotations").mkdir()
    png(tmp_path / "train" / "i1.png")
    png(tmp_path / "train" / "i2.png")
    (tmp_path / "annotations" / "image_labels_train.csv").write_text(
        "image_id,rad_id,Aortic enlargement,Cardiomegaly,Lung cyst,Other diseases,No finding\n"
        "i1,R1,1,0,1,0,0\ni1,R2,0,0,0,0,0\ni1,R3,0,1,0,1,0\n"
        "i2,R1,0,0,0,0,1\ni2,R2,0,0,0,0,1\n"
        "i3,R1,0,0,0,0,1\n")
    (tmp_path / "annotations" / "annotations_train.csv").write_text(
        "image_id,rad_id,class_name,x_min,y_min,x_max,y_max\n"
        "i1,R1,Aortic enlargement,10.5,20,30,40\ni1,R1,Lung cyst,1,1,2,2\ni1,R3,Cardiomegaly,5,6,70,80\n"
        "i2,R1,No finding,,,,\n")
    labelled = load_benchmark("vindr", tmp_path)
    assert labelled.ids == ["i1", "i2"] and labelled.missing == ["i3"]
    assert labelled.classes == ["prominent aortic arch", "cardiomegaly"]
    assert same(labelled.labels, [[1, 1], [0, 0]])
    assert [(r.image, r.label, r.box) for r in labelled.regions] == [
        (0, "prominent aortic arch", (10.5, 20.0, 30.0, 40.0)), (0, "cardiomegaly", (5.0, 6.0, 70.0, 80.0))]


# ---------------------------------------------------------------------------------------------------- generic

def test_generic_csv_and_class_folders(tmp_path: Path) -> None:
    png(tmp_path / "imgs" / "a.png")
    png(tmp_path / "imgs" / "b.png")
    (tmp_path / "set.csv").write_text("file,site,Effusion,Mass\nimgs/a.png,x,1,-1\nimgs/b.png,y,0,\nimgs/z.png,y,1,1\n")
    labelled = load_benchmark("generic", tmp_path / "set.csv", image_column="file")
    assert labelled.classes == ["pleural effusion", "mass"] and labelled.missing == ["imgs/z.png"]
    assert same(labelled.labels, [[1, np.nan], [0, np.nan]])
    with pytest.raises(UserError, match=r"set\.csv: missing column\(s\) \['path'\]"):
        load_benchmark("generic", tmp_path / "set.csv")
    folders = tmp_path / "folders"
    png(folders / "Pneumothorax" / "1.png")
    png(folders / "Normal" / "2.png")
    png(folders / "Cardiomegaly" / "3.jpg")
    by_folder = load_benchmark("generic", folders)
    assert by_folder.classes == ["cardiomegaly", "pneumothorax"]
    assert by_folder.ids == ["Cardiomegaly/3.jpg", "Normal/2.png", "Pneumothorax/1.png"]
    assert same(by_folder.labels, [[1, 0], [0, 0], [0, 1]])


# ---------------------------------------------------------------------------------------------------- shards

def test_shards_labels_and_lazy_phantom_masks(tmp_path: Path) -> None:
    m0, m1 = np.zeros((6, 8), dtype=bool), np.zeros((6, 8), dtype=bool)
    m0[1:3, 2:5], m1[4:6, 0:1] = True, True
    entities = [{"name": "nodule", "category": "ABNORMALITY", "assertion": "present", "laterality": "left"},
                {"name": "pleural effusion", "category": "ABNORMALITY", "assertion": "uncertain", "laterality": None},
                {"name": "pneumothorax", "category": "ABNORMALITY", "assertion": "absent", "laterality": None}]
    masks = [{"bit": 0, "name": "nodule", "laterality": "left", "x0": 2, "y0": 1, "x1": 5, "y1": 3},
             {"bit": 1, "name": "nodule", "laterality": "right", "x0": 0, "y0": 4, "x1": 1, "y1": 6}]
    samples = [
        {"__key__": "s0", "png": png_bytes(), "txt": b"nodule", "seg.png": encode_masks([m0, m1]),
         "json": json.dumps({"split": "test", "entities": entities, "masks": masks}).encode()},
        {"__key__": "s1", "png": png_bytes(), "txt": b"normal",  # a diffusers sample: no seg.png, no masks
         "json": json.dumps({"split": "test", "entities": [{"name": "cardiomegaly", "category": "DISEASE",
                                                             "assertion": "present", "laterality": None}]}).encode()}]
    write_shard(tmp_path / "shard-000000.tar", samples)
    labelled = load_benchmark("shards", tmp_path)
    assert labelled.ids == ["s0", "s1"] and labelled.classes == ["cardiomegaly", "nodule"]
    assert same(labelled.labels, [[0, 1], [1, 0]]) and labelled.split == ["test", "test"]
    assert labelled.open(0).size == (8, 6)
    assert [(r.image, r.label, r.box) for r in labelled.regions] == [(0, "nodule", (2, 1, 5, 3)),
                                                                      (0, "nodule", (0, 4, 1, 6))]
    assert np.array_equal(labelled.regions[0].mask_array(6, 8), m0)
    assert np.array_equal(labelled.regions[1].mask_array(6, 8), m1)
    asked = load_benchmark("shards", tmp_path / "shard-000000.tar",
                           classes=["pleural effusion", "pneumothorax", "nodule"])
    assert same(asked.labels, [[np.nan, 0, 1], [0, 0, 0]])
