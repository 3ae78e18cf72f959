"""NIH ChestX-ray14 (Wang et al. 2017): ``Data_Entry_2017*.csv``, ``BBox_List_2017.csv`` and the split lists.

Finding labels are exhaustive (a finding not listed is absent), so labels are 1/0 with no NaN. The box file
has a header whose box columns are unnamed after the first (``Bbox [x,y,w,h],,,``) and its header spelling
varies between releases, so it is read by position. Boxes are in the pixels of the released 1024 x 1024 PNGs;
when the images on disk are smaller (a downsampled copy), each box is scaled to its image's size. Our small sets
in the ``labels.csv`` layout (``nih-dev-64``, ``nih-real-256``: ``path, split, finding_labels, patient_id, ...``)
are recognised by their columns; a ``boxes.csv`` beside one (``path, finding, x, y, w, h`` in that set's pixels)
gives its regions.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from synthvlp.csvfiles import read_csv_table
from synthvlp.errors import UserError
from synthvlp.evaluation.benchmarks._common import existing, harmonise_all, label_matrix, read_csv
from synthvlp.evaluation.benchmarks.base import LabelledSet, Region
from synthvlp.evaluation.labels import harmonise

FINDINGS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis",
            "Hernia", "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia", "Pneumothorax"]
ENTRY_COLUMNS = ["Image Index", "Finding Labels", "Patient ID"]
RELEASE_SIZE = (1024, 1024)
"""Width and height of the released PNGs, the frame ``BBox_List_2017`` is in."""
DEV_COLUMNS = ["path", "split", "finding_labels", "patient_id"]


def load(path: Path | list[Path], include_no_finding: bool = False, split: str | None = None,
         images: Path | None = None) -> LabelledSet:
    """ChestX-ray14 from its folder (or a list of its files and image folders), or a ``labels.csv`` dev set.

    ``split`` keeps one split ("train"/"test" from the split lists, or the dev set's column); ``images`` is the
    image folder when it is not beside the label files. A folder with more than one label file is refused rather
    than guessed at.
    """
    paths = [existing(Path(p), "NIH data") for p in (path if isinstance(path, list) else [path])]
    files = [f for p in paths for f in (sorted(p.iterdir()) if p.is_dir() else [p]) if f.is_file()]
    folders = [p for p in paths if p.is_dir()] + ([existing(Path(images), "NIH image folder")] if images else [])
    candidates = [f for f in files if f.name == "labels.csv" or f.name.startswith("Data_Entry_2017")]
    if not candidates:
        raise UserError(f"NIH: no Data_Entry_2017*.csv(.gz) or labels.csv among {[str(p) for p in paths]}")
    if len(candidates) > 1:
        raise UserError(f"NIH: several label files {[str(f) for f in candidates]}; pass the one you mean as --data")
    names = FINDINGS + (["No Finding"] if include_no_finding else [])
    classes = harmonise_all(names, "nih")
    [labels] = candidates
    if labels.name.startswith("Data_Entry_2017"):
        out = _official(labels, files, folders, names, classes)
    else:
        out = _dev(labels, Path(images) if images else labels.parent, names, classes)
    return out if split is None else out.only_split(split)


def _official(entry: Path, files: list[Path], folders: list[Path], names: list[str], classes: list[str]) -> LabelledSet:
    """The published release: entries, optional boxes and split lists, images indexed by file name."""
    frame = read_csv(entry, ENTRY_COLUMNS)
    on_disk = _index_images(folders or [entry.parent])
    splits = _split_lists(files)
    images, ids, rows, group, split, missing = [], [], [], [], [], []
    for name, findings, patient in zip(frame["Image Index"], frame["Finding Labels"], frame["Patient ID"]):
        if name not in on_disk:
            missing.append(name)
            continue
        images.append(on_disk[name])
        ids.append(name)
        rows.append(_row(findings, names))
        group.append(patient)
        split.append(splits.get(name, "unlisted"))
    position = {image_id: i for i, image_id in enumerate(ids)}
    bbox = next((f for f in files if f.name.startswith("BBox_List_2017")), None)
    regions = _boxes(bbox, position, images) if bbox else []
    return LabelledSet("nih", images, ids, classes, label_matrix(rows, classes), regions,
                       split if splits else None, group, missing)


def _dev(csv: Path, root: Path, names: list[str], classes: list[str]) -> LabelledSet:
    """The ``labels.csv`` layout: image path relative to ``root`` (the CSV's folder), split and findings."""
    frame = read_csv(csv, DEV_COLUMNS)
    images, ids, rows, group, split, missing = [], [], [], [], [], []
    for record in frame.to_dict("records"):
        image = root / record["path"]
        if not image.is_file():
            missing.append(record["path"])
            continue
        images.append(image)
        ids.append(Path(record["path"]).name)
        rows.append(_row(record["finding_labels"], names))
        group.append(record["patient_id"])
        split.append(record["split"])
    boxes = csv.parent / "boxes.csv"
    regions = _dev_boxes(boxes, {path: i for i, path in enumerate(images)}, root) if boxes.is_file() else []
    return LabelledSet("nih", images, ids, classes, label_matrix(rows, classes), regions, split=split, group=group,
                       missing=missing)


def _dev_boxes(csv: Path, position: dict[Path, int], root: Path) -> list[Region]:
    """Regions of a ``boxes.csv`` (``path, finding, x, y, w, h``) for the images ``position`` holds."""
    frame = read_csv(csv, ["path", "finding", "x", "y", "w", "h"])
    regions = []
    for record in frame.to_dict("records"):
        index = position.get(root / record["path"])
        if index is not None:
            x, y, w, h = (float(record[k]) for k in "xywh")
            regions.append(Region(index, harmonise(str(record["finding"]), "nih"), (x, y, x + w, y + h)))
    return regions


def _row(findings: str, names: list[str]) -> dict[str, float]:
    """1 for each finding of the pipe-separated list, 0 for the rest; a name outside the 15 is an error."""
    listed = {f.strip() for f in findings.split("|") if f.strip()}
    unknown = listed - set(FINDINGS) - {"No Finding"}
    if unknown:
        raise UserError(f"NIH: unknown finding(s) {sorted(unknown)} in Finding Labels {findings!r}")
    return {harmonise(n, "nih"): float(n in listed) for n in names}


def _index_images(folders: list[Path]) -> dict[str, Path]:
    """File name -> path for the PNGs in each folder, its ``images/`` and the release's ``images_*/images/``."""
    found: dict[str, Path] = {}
    for folder in folders:
        for pattern in ("*.png", "images/*.png", "images_*/images/*.png", "images_*/*.png"):
            for image in folder.glob(pattern):
                found.setdefault(image.name, image)
    return found


def _split_lists(files: list[Path]) -> dict[str, str]:
    """Image name -> "train" or "test" from ``train_val_list.txt`` / ``test_list.txt`` when present."""
    out: dict[str, str] = {}
    for f in files:
        label = {"train_val_list.txt": "train", "test_list.txt": "test"}.get(f.name)
        if label:
            out.update((line.strip(), label) for line in f.read_text().splitlines() if line.strip())
    return out


def _boxes(csv: Path, position: dict[str, int], images: list[Path]) -> list[Region]:
    """Regions of ``BBox_List_2017.csv``, columns read by position: image, finding, x, y, w, h; scaled from the
    release's 1024 px frame to each image's own size (read from its header)."""
    frame = read_csv_table(csv, "NIH box file")
    if frame.shape[1] < 6:
        raise UserError(f"{csv}: expected 6 columns (Image Index, Finding Label, Bbox [x, y, w, h]), "
                        f"found {frame.shape[1]}")
    regions = []
    for name, finding, x, y, w, h in frame.iloc[:, :6].itertuples(index=False):
        if name in position:
            with Image.open(images[position[name]]) as image:
                sx, sy = image.width / RELEASE_SIZE[0], image.height / RELEASE_SIZE[1]
            x0, y0 = float(x) * sx, float(y) * sy
            regions.append(Region(position[name], harmonise(str(finding), "nih"), (x0, y0, x0 + float(w) * sx, y0 + float(h) * sy)))
    return regions
