"""Shared fixtures: small run configs that finish in seconds on a CPU, and the packaged entity vocabulary."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def small_config(out_dir: Path, **sections) -> dict:
    """A plain config for a tiny run: 60 samples in 3 units, tiny model, 1 epoch."""
    config = {
        "run": {"name": "tiny", "out_dir": str(out_dir), "seed": 7, "n_samples": 60, "test_fraction": 0.25, "shard_size": 20},
        "images": {"size": 32},
        "pretrain": {"epochs": 1, "batch_size": 16, "warmup_steps": 1, "threads": 1},
        "evaluate": {"bootstrap": 20},
    }
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    return config


@pytest.fixture
def write_config(tmp_path: Path):
    """Write a small config to a YAML file and return its path."""

    def write(out_dir: Path | None = None, name: str = "config.yaml", **sections) -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(small_config(out_dir or tmp_path / "run", **sections)))
        return path

    return write


@pytest.fixture(scope="session")
def vocab():
    """The packaged entity vocabulary; building its phrases and extractor takes seconds, so once per session."""
    from synthvlp.entities import load_vocabulary

    return load_vocabulary()


@pytest.fixture(scope="session")
def extractor(vocab):
    """The rule-based extractor over the packaged vocabulary (its sentence cache only ever returns the same
    mentions, so sharing it between test modules changes no result)."""
    from synthvlp.entities import EntityExtractor

    return EntityExtractor(vocab)
