"""The phantom renderer: deterministic, findings drawn where their masks say, anatomy honours the report."""

from __future__ import annotations

import numpy as np
import pytest

from synthvlp.generation import phantom
from synthvlp.generation.images import encode_png
from synthvlp.generation.phantom import classic
from synthvlp.generation.phantom.anatomy import build_body, draw_anatomy
from synthvlp.masks import box, decode_masks, encode_masks
from synthvlp.generation.phantom.scene import read_scene
from synthvlp.generation.phantom.shapes import ellipse, make_grid
from synthvlp.seeding import sample_rng

SIZE = 96


def _entity(name, side=None, assertion="present", category="ABNORMALITY"):
    return {"name": name, "category": category, "assertion": assertion, "laterality": side}


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_deterministic_with_the_requested_depth(bit_depth):
    plan = [_entity("nodule", "left"), _entity("pleural effusion", "right")]
    a = phantom.render(plan, 48, np.random.default_rng(3), bit_depth=bit_depth)
    b = phantom.render(plan, 48, np.random.default_rng(3), bit_depth=bit_depth)
    assert a.image.dtype == (np.uint8 if bit_depth == 8 else np.uint16) and a.image.shape == (48, 48)
    assert np.array_equal(a.image, b.image)
    assert [f.name for f in a.findings] == ["nodule", "pleural effusion"]
    assert all(np.array_equal(f.mask, g.mask) for f, g in zip(a.findings, b.findings, strict=True))
    assert a.image.std() > (10 if bit_depth == 8 else 2500)


# (entity, side, sign of the intensity change inside its mask); emphysema reshapes the whole chest, so its
# change outside the (lung) mask is allowed to be larger
CASES = [
    ("pleural effusion", "left", +1),
    ("pleural effusion", "bilateral", +1),
    ("pneumothorax", "right", -1),
    ("cardiomegaly", None, +1),
    ("consolidation", "right", +1),
    ("pneumonia", "left", +1),
    ("pulmonary edema", None, +1),
    ("atelectasis", "left", +1),
    ("nodule", "right", +1),
    ("mass", "left", +1),
    ("opacity", "right", +1),
    ("emphysema", None, -1),
    ("rib fracture", "left", -1),
    ("endotracheal tube", None, +1),
    ("enteric tube", None, +1),
    ("central venous catheter", "right", +1),
    ("chest tube", "left", +1),
    ("pacemaker", None, +1),
    ("sternotomy wires", None, +1),
]


@pytest.mark.parametrize(("name", "side", "sign"), CASES)
def test_mask_lines_up_with_what_is_drawn(name, side, sign):
    """Same sample with and without the finding: pixels change inside its mask, barely outside it."""
    for seed in range(3):
        plain = phantom.render([], SIZE, np.random.default_rng(seed)).image.astype(np.float32)
        rendering = phantom.render([_entity(name, side)], SIZE, np.random.default_rng(seed))
        (drawn,) = rendering.findings
        mask = drawn.mask
        assert mask.any() and drawn.box == box(mask)
        change = rendering.image.astype(np.float32) - plain
        inside, outside = np.abs(change[mask]).mean(), np.abs(change[~mask]).mean()
        ratio = 2 if name == "emphysema" else 4
        assert inside > ratio * outside + 1.0, (seed, inside, outside)
        assert sign * change[mask].mean() > 0, (seed, change[mask].mean())


@pytest.mark.parametrize(("side", "half"), [("right", slice(0, SIZE // 2)), ("left", slice(SIZE // 2, SIZE))])
def test_the_patients_right_is_the_images_left(side, half):
    rendering = phantom.render([_entity("pleural effusion", side)], SIZE, np.random.default_rng(0))
    mask = rendering.findings[0].mask
    assert mask[:, half].sum() == mask.sum()


@pytest.mark.parametrize(("side", "image_half"), [("right", "left"), ("left", "right"), (None, "right")])
def test_pacemaker_generator_sits_on_the_stated_side(side, image_half):
    """The generator (the mask's top rows: the lead runs down from it) is on the patient's stated side, the
    patient's left by default; the patient's right is the image's left."""
    mask = phantom.render([_entity("pacemaker", side)], SIZE, np.random.default_rng(0)).findings[0].mask
    top = np.flatnonzero(mask.any(axis=1))[0]
    columns = np.flatnonzero(mask[top : top + 3].any(axis=0))
    assert (columns.mean() < SIZE / 2) == (image_half == "left"), columns


def _ctr(plan, seed):
    """Cardiothoracic ratio measured on the drawn masks: heart width over the widest span of both lungs."""
    body = build_body(draw_anatomy(read_scene(plan), np.random.default_rng(seed)), 128, np.random.default_rng(seed))
    lungs = np.maximum(body.lungs["right"], body.lungs["left"]) >= 0.5
    heart_cols = np.flatnonzero((body.heart >= 0.5).any(axis=0))
    thorax = max(np.ptp(np.flatnonzero(row)) + 1 for row in lungs if row.any())
    return (heart_cols[-1] - heart_cols[0] + 1) / thorax


def test_heart_size_follows_the_report():
    enlarged = [_ctr([_entity("cardiomegaly")], s) for s in range(8)]
    normal = [_ctr([_entity("cardiomegaly", assertion="absent")], s) for s in range(8)]
    stated = [_ctr([_entity("normal heart size", category="NON-ABNORMALITY")], s) for s in range(8)]
    assert min(enlarged) > 0.52, enlarged
    assert max(normal) < 0.5 and max(stated) < 0.5, (normal, stated)


def test_emphysema_flattens_and_lowers_the_diaphragm():
    plain = draw_anatomy(read_scene([]), np.random.default_rng(0))
    inflated = draw_anatomy(read_scene([_entity("emphysema")]), np.random.default_rng(0))
    assert inflated.base["left"] > plain.base["left"] and inflated.dome["left"] < plain.dome["left"]


def test_scene_maps_entities_and_reports_what_it_cannot_draw():
    scene = read_scene(
        [
            _entity("rib fracture", "left"),
            _entity("clear lungs", category="NON-ABNORMALITY"),
            _entity("hiatal hernia"),
            _entity("pneumothorax", "right", assertion="absent"),
            _entity("pleural effusion", "left"),
        ],
        "There is a large left pleural effusion.",
    )
    kinds = {f.name: f.kind for f in scene.findings}
    assert kinds == {"rib fracture": "fracture", "hiatal hernia": "opacity", "pleural effusion": "pleural effusion"}
    assert scene.undrawable == ["hiatal hernia"]
    assert {f.name: f.severity for f in scene.findings}["pleural effusion"] == 2


def test_undrawable_entity_becomes_an_opacity_and_is_listed():
    rendering = phantom.render([_entity("hiatal hernia", "left")], 64, np.random.default_rng(0))
    assert rendering.undrawable == ["hiatal hernia"]
    assert rendering.findings[0].mask.any()


@pytest.mark.parametrize(("size", "angle"), [(48, 0.0), (96, 0.08), (257, -0.06)])
def test_shapes_drawn_in_their_window_equal_the_whole_image_formula(size, angle):
    """Small shapes are computed only in their bounding window: nothing may be cut off there, rotated or not."""
    grid = make_grid(size, angle, (0.02, -0.01))
    for cy, cx, ry, rx in [(0.5, 0.5, 0.1, 0.2), (0.03, 0.97, 0.03, 0.01), (1.05, 0.5, 0.2, 0.2), (0.4, 0.3, 0.004, 0.05)]:
        radius = np.sqrt(((grid.y - cy) / ry) ** 2 + ((grid.x - cx) / rx) ** 2)
        whole = np.clip((1.0 - radius) * min(ry, rx) / grid.pixel + 0.5, 0.0, 1.0)
        np.testing.assert_allclose(ellipse(grid, cy, cx, ry, rx), whole, atol=1e-4)


@pytest.mark.parametrize("count", [0, 3, 12])
def test_masks_round_trip_through_one_png(count):
    rng = np.random.default_rng(count)
    masks = [rng.random((20, 24)) < 0.3 for _ in range(count)]
    decoded = decode_masks(encode_masks(masks), count)
    assert all(np.array_equal(a, b) for a, b in zip(masks, decoded, strict=True))


def test_box_is_exclusive_and_none_when_empty():
    mask = np.zeros((10, 10), bool)
    assert box(mask) is None
    mask[2:5, 3:7] = True
    assert box(mask) == (3, 2, 7, 5)


@pytest.mark.parametrize("renderer", ["classic", "projection"])
def test_images_stage_stores_masks_and_boxes(renderer):
    """Each sample carries <key>.seg.png whose bit i is masks[i] of <key>.json, and the same boxes in the manifest;
    ``images.phantom`` picks the renderer, named in the manifest."""
    import json

    import pyarrow as pa

    from synthvlp import schema
    from synthvlp.config import RunConfig
    from synthvlp.generation.images import render_images

    config = RunConfig.model_validate({"images": {"size": 48, "phantom": renderer}})
    plans = [[_entity("pleural effusion", "bilateral"), _entity("nodule", "left")], [], [_entity("hiatal hernia", "right")]]
    plan = pa.table({"id": ["s00000000", "s00000001", "s00000002"], "split": ["train"] * 3, "planned_entities": pa.array(plans, pa.list_(schema.ENTITY))})
    reports = pa.table({"findings": ["A large bilateral pleural effusion. A left nodule.", "Clear.", "Hernia."], "impression": ["Effusions; nodule.", "Normal.", "Hernia."]})
    batch = render_images(config, plan, reports)
    assert batch.undrawable == {"hiatal hernia": 1}
    assert batch.columns.schema.field("finding_boxes").type.equals(schema.COLUMNS.field("finding_boxes").type)
    boxes = batch.columns.column("finding_boxes").to_pylist()
    for sample, sample_boxes in zip(batch.samples, boxes, strict=True):
        meta = json.loads(sample["json"])
        masks = decode_masks(sample["seg.png"], len(meta["masks"]))
        assert [m["name"] for m in meta["masks"]] == [b["name"] for b in sample_boxes]
        for entry, mask in zip(meta["masks"], masks, strict=True):
            assert (entry["x0"], entry["y0"], entry["x1"], entry["y1"]) == box(mask)
    assert [b["name"] for b in boxes[0]] == ["pleural effusion", "nodule"] and boxes[1] == []
    expected = {"classic": classic.render, "projection": phantom.render}[renderer](plans[0], 48, sample_rng(0, "s00000000", "image", 0), "A large bilateral pleural effusion. A left nodule. Effusions; nodule.")
    assert batch.samples[0]["png"] == encode_png(expected.image)
    assert set(batch.columns.column("image_generator").to_pylist()) == {"phantom@" + {"classic": "1.0.0", "projection": phantom.VERSION}[renderer]}


def test_classic_appearance_ranges_are_refused():
    """``images.appearance`` belongs to the projection renderer: with the classic one it is a ConfigError, not ignored."""
    import pyarrow as pa

    from synthvlp import schema
    from synthvlp.config import RunConfig
    from synthvlp.errors import ConfigError
    from synthvlp.generation.images import render_images

    config = RunConfig.model_validate({"images": {"size": 32, "phantom": "classic", "appearance": {"noise": [0.0, 0.01]}}})
    plan = pa.table({"id": ["s0"], "split": ["train"], "planned_entities": pa.array([[]], pa.list_(schema.ENTITY))})
    with pytest.raises(ConfigError, match="images.phantom: projection"):
        render_images(config, plan, pa.table({"findings": ["Clear."], "impression": ["Normal."]}))


def test_classic_renderer_is_deterministic_with_masks():
    plan = [_entity("pleural effusion", "right"), _entity("pneumothorax", "left")]
    a, b = (classic.render(plan, 48, np.random.default_rng(5)) for _ in range(2))
    assert np.array_equal(a.image, b.image) and a.image.std() > 10
    assert [f.name for f in a.findings] == ["pleural effusion", "pneumothorax"] and all(f.mask.any() for f in a.findings)


LOCAL = [case for case in CASES if case[0] not in ("emphysema", "atelectasis", "cardiomegaly")]
"""Findings that leave the patient alone. Emphysema and atelectasis move the diaphragm and cardiomegaly widens the
heart, by design; the exposure is set from the patient (``appearance.expose``), so those shift the whole film a
little, as an automatic exposure would."""


@pytest.mark.parametrize(("name", "side", "sign"), LOCAL)
def test_a_finding_changes_pixels_only_inside_its_mask_and_halo(name, side, sign):
    """Same patient with and without the finding, 16-bit: no pixel farther than ``halo`` from the mask moves."""
    from scipy.ndimage import binary_dilation

    from synthvlp.generation.phantom.appearance import halo

    reach = halo(SIZE)
    for seed in range(4):
        plain = phantom.render([], SIZE, np.random.default_rng(seed), bit_depth=16).image
        rendering = phantom.render([_entity(name, side)], SIZE, np.random.default_rng(seed), bit_depth=16)
        mask = rendering.findings[0].mask
        grown = binary_dilation(mask, np.ones((2 * reach + 1, 2 * reach + 1), bool))
        changed = rendering.image != plain
        assert changed[mask].any(), seed
        assert not changed[~grown].any(), (seed, int(changed[~grown].sum()))
