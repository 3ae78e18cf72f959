"""The renderer registry: ``images.backend`` names a registered ``Renderer``; an unknown name is a ConfigError
listing the known ones, and a renderer registered from outside the package runs the images stage."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from rich.console import Console

from synthvlp.config import RENDERERS, RunConfig, load_config
from synthvlp.errors import ConfigError
from synthvlp.generation.images import (Advance, ImageBatch, Renderer, encode_png, manifest_columns, sample_files,
                                        sample_meta)
from synthvlp.seeding import sample_rng, sample_seed
from synthvlp.store import read_shard


class FlatRenderer(Renderer):
    """A film of one grey level drawn from the sample's seed: the least a renderer does."""

    @classmethod
    def check(cls, config: RunConfig) -> None:
        if config.images.bit_depth != 8:
            raise ValueError("images.backend 'flat' draws 8-bit films; set images.bit_depth: 8")

    def render(self, rows: list[dict], advance: Advance) -> ImageBatch:
        size, seed = self.config.images.size, self.config.run.seed
        samples, seeds = [], []
        for row in rows:
            level = int(sample_rng(seed, row["id"], "image", row["image_attempt"]).integers(0, 256))
            samples.append(sample_files(row, encode_png(np.full((size, size), level, np.uint8)), sample_meta(row)))
            seeds.append(sample_seed(seed, row["id"], "image", row["image_attempt"]))
            advance(1)
        return ImageBatch(samples, manifest_columns(rows, ["flat@1"] * len(rows), seeds, [None] * len(rows)), {})


@pytest.fixture
def flat():
    RENDERERS.register("flat", FlatRenderer)
    yield FlatRenderer
    RENDERERS.unregister("flat")


def test_an_unknown_backend_is_a_config_error_naming_the_known_ones():
    with pytest.raises(ConfigError, match=r"images\.backend = 'nope': unknown images\.backend 'nope'; known: diffusers, phantom, source"):
        load_config(None, ["images.backend=nope"])


def test_the_registry_names_its_renderers_and_refuses_a_taken_name(flat):
    assert RENDERERS.names() == ["diffusers", "flat", "phantom", "source"]
    assert all(issubclass(RENDERERS.load(name), Renderer) for name in RENDERERS.names())
    with pytest.raises(ValueError, match="already registered"):
        RENDERERS.register("phantom", FlatRenderer)


def test_a_renderers_own_check_runs_when_the_config_loads(flat):
    with pytest.raises(ConfigError, match="draws 8-bit films"):
        load_config(None, ["images.backend=flat", "images.bit_depth=16"])
    with pytest.raises(ConfigError, match="plan.labels"):
        load_config(None, ["images.backend=source"])


def test_a_registered_renderer_runs_the_images_stage_from_a_config(flat, write_config):
    """A class defined here and one ``register`` line: the run's shards hold its films and the manifest names it."""
    from synthvlp.runfolder import prepare_run_folder
    from synthvlp.runner import Runner

    config = load_config(write_config(images={"size": 32, "backend": "flat"}, filter={"regenerate": 0}))
    runner = Runner(config, prepare_run_folder(config), console=Console(record=True, width=200))
    runner.run(["plan", "reports", "images"])
    assert runner.work_kind("images") == "small"
    columns = pq.read_table(runner.layout.part("images", 0))
    assert set(columns.column("image_generator").to_pylist()) == {"flat@1"}
    samples = list(read_shard(runner.layout.image_shard(0)))
    assert len(samples) == columns.num_rows == 20
    levels = {int(np.asarray(Image.open(io.BytesIO(s["png"]))).max()) for s in samples}
    assert len(levels) > 1 and all(json.loads(s["json"])["id"] == s["__key__"] for s in samples)
