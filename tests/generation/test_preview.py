"""The contact sheet: tiles of a run's samples with mask outlines, and the CLI command that writes it."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from synthvlp.cli import app
from synthvlp.generation import phantom
from synthvlp.generation.images import encode_png
from synthvlp.masks import encode_masks
from synthvlp.generation.preview import COLOURS, contact_sheet
from synthvlp.store import write_shard


def _sample(index: int, bit_depth: int = 8) -> dict:
    entities = [{"name": "pleural effusion", "category": "ABNORMALITY", "assertion": "present", "laterality": "left"}]
    rendering = phantom.render(entities, 48, np.random.default_rng(index), bit_depth=bit_depth)
    meta = {"id": f"s{index:08d}", "impression": "Left pleural effusion.", "masks": [{"name": "pleural effusion", "laterality": "left", "bit": 0}]}
    return {
        "__key__": meta["id"],
        "png": encode_png(rendering.image),
        "seg.png": encode_masks([f.mask for f in rendering.findings]),
        "json": json.dumps(meta).encode(),
    }


def test_sheet_tiles_samples_and_outlines_masks():
    sheet = contact_sheet([_sample(i, bit_depth=8 if i % 2 else 16) for i in range(5)], tile=96, columns=3)
    tile_width = (sheet.width - 2 * 4) // 3
    assert tile_width == 96 and sheet.height > 2 * 96
    pixels = np.asarray(sheet)
    assert (pixels == COLOURS[0]).all(axis=-1).sum() > 20  # the effusion's outline


def test_render_preview_command(tmp_path):
    run = tmp_path / "run"
    write_shard(run / "images" / "shard-000000.tar", [_sample(i) for i in range(3)])
    out = tmp_path / "sheet.png"
    result = CliRunner().invoke(app, ["render", "preview", str(run), "--out", str(out), "--n", "2", "--tile", "64", "--columns", "2"])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size[0] == 2 * 64 + 4
    missing = CliRunner().invoke(app, ["render", "preview", str(tmp_path / "nothing"), "--out", str(out)])
    assert missing.exit_code != 0
