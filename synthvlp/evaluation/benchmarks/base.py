"""The one shape every benchmark adapter returns: images, harmonised 1/0/NaN labels and grounding regions.

Adapters read the files a benchmark publishes (CSV, txt, RLE, our WebDataset shards) and never resize or crop:
coordinates in ``Region`` are in the original image's pixels, and the evaluation code maps its own
predictions back to them. Images listed by a label file but absent on disk are left out and named in
``missing``, and ``without_unreadable`` leaves out (and names in ``unreadable``) those that do not decode, so an
evaluation continues on the rest and reports both counts.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

ImageRef = Path | bytes
"""An image on disk or encoded in memory (a PNG read from a shard)."""


@dataclass
class Region:
    """A grounding target: where ``label`` (harmonised) is in image ``image``, in original pixel coordinates.

    ``box`` is (x0, y0, x1, y1) with x1/y1 exclusive; ``mask`` is a boolean (H, W) array or a callable that
    returns one (masks load lazily; a SIIM run decodes RLE only for the images it grounds). ``phrase`` is the
    text to ground (MS-CXR's phrase; otherwise None, and the label's prompt is used).
    """

    image: int
    label: str
    box: tuple[float, float, float, float] | None = None
    mask: np.ndarray | Callable[[], np.ndarray] | None = None
    phrase: str | None = None

    def mask_array(self, height: int, width: int) -> np.ndarray:
        """The region as a boolean (height, width) mask: the mask when there is one, else the filled box."""
        if self.mask is not None:
            return np.asarray(self.mask() if callable(self.mask) else self.mask, dtype=bool)
        out = np.zeros((height, width), dtype=bool)
        if self.box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in self.box)
            out[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
        return out


@dataclass
class LabelledSet:
    """A benchmark split ready for evaluation.

    ``labels`` is float32 (n_images, n_classes): 1 positive, 0 negative, NaN uncertain or not labelled; scores
    skip the NaN cells of each class. ``split`` and ``group`` (patient id, when the benchmark has one) drive
    fine-tuning splits that never put one patient on both sides.
    """

    name: str
    images: list[ImageRef]
    ids: list[str]
    classes: list[str]
    labels: np.ndarray
    regions: list[Region] = field(default_factory=list)
    split: list[str] | None = None
    group: list[str] | None = None
    missing: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.images)
        if len(self.ids) != n or self.labels.shape != (n, len(self.classes)):
            raise ValueError(f"{self.name}: {n} images, {len(self.ids)} ids and labels of shape {self.labels.shape} "
                             f"for {len(self.classes)} classes do not line up")
        for column in (self.split, self.group):
            if column is not None and len(column) != n:
                raise ValueError(f"{self.name}: a per-image column has {len(column)} entries for {n} images")

    def __len__(self) -> int:
        return len(self.images)

    def open(self, index: int) -> Image.Image:
        """Image ``index`` as a PIL image, in its original size and mode."""
        ref = self.images[index]
        return Image.open(io.BytesIO(ref) if isinstance(ref, bytes) else ref)

    def select(self, index: np.ndarray | list[int], name: str | None = None) -> LabelledSet:
        """The rows ``index`` (in that order), with their regions renumbered."""
        index = [int(i) for i in index]
        position = {old: new for new, old in enumerate(index)}
        regions = [Region(position[r.image], r.label, r.box, r.mask, r.phrase) for r in self.regions if r.image in position]
        pick = lambda column: None if column is None else [column[i] for i in index]  # noqa: E731
        return LabelledSet(name or self.name, [self.images[i] for i in index], [self.ids[i] for i in index], list(self.classes),
                           self.labels[index], regions, pick(self.split), pick(self.group), list(self.missing), list(self.unreadable))

    def without_unreadable(self) -> LabelledSet:
        """The set without the images that do not decode (empty, truncated, not an image), each named with the
        reason in ``unreadable``; every image is decoded once to find them."""
        keep, bad = [], []
        for i in range(len(self)):
            try:
                with self.open(i) as image:
                    image.load()
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # what PIL raises for bad files
                bad.append(f"{self.ids[i]} ({str(exc).splitlines()[0][:80] or type(exc).__name__})")
                continue
            keep.append(i)
        if not bad:
            return self
        kept = self.select(keep)
        kept.unreadable += bad
        return kept

    def only_split(self, split: str) -> LabelledSet:
        """The images of one split (``split`` must be set)."""
        if self.split is None:
            raise ValueError(f"{self.name}: has no split column")
        return self.select([i for i, s in enumerate(self.split) if s == split], f"{self.name}/{split}")
