"""Training pairs from our WebDataset shards and from a real CSV corpus, behind one random-access dataset.

Shards are indexed once (tar headers only) and read by offset, so any sample can be fetched by number: that is
what lets the sampler (``sampling.py``) resume mid-epoch without replaying data and split each batch over
torchrun ranks. Every sample's augmentation draws from a seed of (run seed, epoch, sample), never from a shared
stream, so results do not depend on worker count or on where a run resumed. A corrupt image is skipped (the
next sample takes its place, so batches keep their size on every rank) and its key is reported.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from synthvlp.config import RealDataSection
from synthvlp.errors import UserError
from synthvlp.pretrain.labels import FindingLabels
from synthvlp.seeding import sample_seed

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg")
MAX_SKIPS = 16
"""Consecutive unreadable samples tolerated before a dataset is declared broken."""


@dataclass(frozen=True)
class Member:
    path: Path
    offset: int
    size: int

    def read(self) -> bytes:
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            return handle.read(self.size)


class ShardSource:
    """Image-text pairs of WebDataset tars (``<key>.png`` + ``<key>.txt``), indexed by tar header offsets."""

    def __init__(self, shards: Sequence[Path]) -> None:
        self.keys: list[str] = []
        self.images: list[Member] = []
        self.texts: list[Member] = []
        self.metas: list[Member | None] = []  # <key>.json (the sample's plan and report), when the shard has one
        for shard in shards:
            self._index(Path(shard))
        if not self.keys:
            raise UserError(f"no image-text samples found in {len(shards)} training shard(s): {[str(s) for s in shards[:3]]}")

    def _index(self, shard: Path) -> None:
        found: dict[str, dict[str, Member]] = {}
        try:
            with tarfile.open(shard, mode="r:") as tar:
                for info in tar:
                    key, _, ext = info.name.partition(".")
                    if info.isfile():
                        found.setdefault(key, {})[ext.lower()] = Member(shard, info.offset_data, info.size)
        except (tarfile.TarError, OSError) as exc:
            raise UserError(f"{shard}: not a readable tar shard ({exc}); re-export it (rerun the balance stage)") from None
        for key, members in found.items():
            image = next((members[e] for e in IMAGE_EXTENSIONS if e in members), None)
            if image is not None and "txt" in members:
                self.keys.append(key)
                self.images.append(image)
                self.texts.append(members["txt"])
                self.metas.append(members.get("json"))

    def __len__(self) -> int:
        return len(self.keys)

    def origins(self) -> dict[str, int]:
        """Pairs per folder of shards (a mixed recipe's real and synthetic runs)."""
        counts: dict[str, int] = {}
        for member in self.images:
            counts[str(member.path.parent)] = counts.get(str(member.path.parent), 0) + 1
        return counts

    def load(self, index: int) -> tuple[Image.Image, str]:
        image = Image.open(io.BytesIO(self.images[index].read()))
        image.load()
        return image, self.texts[index].read().decode("utf-8")


class CsvSource:
    """A real corpus: a CSV of image paths and report texts; a seeded, group-wise hash split holds part out.

    ``held_out=True`` gives the held-out part instead, the pairs the evaluate stage scores the model on."""

    def __init__(self, settings: RealDataSection, seed: int, held_out: bool = False) -> None:
        from synthvlp.csvfiles import read_csv_table

        table = read_csv_table(settings.csv, "pretrain.real.csv")
        wanted = [settings.image_column, settings.text_column] + ([settings.group_column] if settings.group_column else [])
        missing = [c for c in wanted if c not in table.columns]
        if missing:
            raise UserError(f"{settings.csv}: columns {missing} not found (pretrain.real.*_column); it has {list(table.columns)}")
        table = table.dropna(subset=[settings.image_column, settings.text_column])
        if settings.holdout_fraction > 0:
            groups = table[settings.group_column] if settings.group_column else table.index
            held = [sample_seed(seed, str(g), "real-holdout") / 2**63 < settings.holdout_fraction for g in groups]
            table = table[[h == held_out for h in held]]
        elif held_out:
            table = table.iloc[:0]
        root = settings.image_root or settings.csv.parent
        self.csv = settings.csv
        self.keys = [f"real-{i}" for i in table.index]
        self.paths = [root / str(p) for p in table[settings.image_column]]
        self.texts = [str(t) for t in table[settings.text_column]]
        if not self.keys:
            raise UserError(f"{settings.csv}: no rows held out (raise pretrain.real.holdout_fraction)" if held_out
                            else f"{settings.csv}: no rows left for pre-training (empty, or all held out)")

    def __len__(self) -> int:
        return len(self.keys)

    def origins(self) -> dict[str, int]:
        """Pairs per file: the CSV's rows left after the held-out share."""
        return {str(self.csv): len(self.keys)}

    def load(self, index: int) -> tuple[Image.Image, str]:
        image = Image.open(self.paths[index])
        image.load()
        return image, self.texts[index]


Source = ShardSource | CsvSource


@dataclass(frozen=True)
class Item:
    """What the sampler hands the dataset: a global sample number and the epoch it is drawn in."""

    index: int
    epoch: int


class PairDataset(torch.utils.data.Dataset):
    """The sources concatenated: global index ``i`` is sample ``i - offset`` of the source it falls in."""

    def __init__(self, sources: Sequence[Source], transform: Callable, tokenizer: Callable, seed: int,
                 labels: FindingLabels | None = None) -> None:
        self.sources = list(sources)
        self.sizes = [len(s) for s in self.sources]
        self.transform = transform
        self.tokenizer = tokenizer
        self.seed = seed
        self.labels = labels

    def __len__(self) -> int:
        return sum(self.sizes)

    def origins(self) -> dict[str, int]:
        """Training pairs per origin (a folder of shards or a CSV), for the run report of a mixed recipe."""
        return {where: count for source in self.sources for where, count in source.origins().items()}

    def locate(self, index: int) -> tuple[Source, int]:
        for source, size in zip(self.sources, self.sizes, strict=True):
            if index < size:
                return source, index
            index -= size
        raise IndexError(index)

    def __getitem__(self, item: Item) -> tuple[torch.Tensor, torch.Tensor, str, list[str], torch.Tensor | None]:
        """(image, tokens, key, keys of unreadable samples skipped to get here, finding labels or None)."""
        skipped: list[str] = []
        index = item.index
        for _ in range(MAX_SKIPS):
            source, local = self.locate(index)
            try:
                image, text = source.load(local)
                break
            except (OSError, ValueError, SyntaxError):  # what PIL raises for truncated or garbled files
                skipped.append(source.keys[local])
                index = (index + 1) % len(self)
        else:
            raise UserError(f"{MAX_SKIPS} unreadable images in a row, from {skipped[0]}: check the training data")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, f"{item.epoch}:{index}", "pretrain-augment"))
            pixels = self.transform(image.convert("RGB"))
        labels = self.labels(text) if self.labels is not None else None
        return pixels, self.tokenizer([text])[0], source.keys[local], skipped, labels


@dataclass
class Batch:
    images: torch.Tensor
    tokens: torch.Tensor
    keys: list[str]
    skipped: list[str]
    labels: torch.Tensor | None = None  # (n, n_labels) multi-hot finding labels when the targets need them


def collate(samples: list[tuple[torch.Tensor, torch.Tensor, str, list[str], torch.Tensor | None]]) -> Batch:
    return Batch(
        images=torch.stack([s[0] for s in samples]),
        tokens=torch.stack([s[1] for s in samples]),
        keys=[s[2] for s in samples],
        skipped=[k for s in samples for k in s[3]],
        labels=torch.stack([s[4] for s in samples]) if samples and samples[0][4] is not None else None,
    )
