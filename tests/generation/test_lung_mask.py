"""The lung-field mask the sim-to-real bench (``bench/lung_transfer.py``) trains on: the visible lung fields of the
film's own anatomy (soft fields >= 0.5 minus the heart silhouette), air-filled, above the domes, on each side."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest

from synthvlp.generation import phantom
from synthvlp.generation.phantom import classic
from synthvlp.generation.phantom.lungmask import lung_mask

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from lung_transfer import classic_body, render_lungs  # noqa: E402

FINDINGS = [
    {"name": "pleural effusion", "category": "ABNORMALITY", "assertion": "present", "laterality": "right"},
    {"name": "consolidation", "category": "ABNORMALITY", "assertion": "present", "laterality": "left"},
]


def _sides(body, mask: np.ndarray) -> dict[str, np.ndarray]:
    """The mask's pixels on the patient's right (image left of the midline) and left."""
    right = body.grid.x < body.anatomy.mid
    return {"right": mask & right, "left": mask & ~right}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_projection_lung_mask_is_the_visible_aerated_field(seed):
    projection = phantom.project(FINDINGS, 64, np.random.default_rng(seed))
    body, mask = projection.body, lung_mask(projection.body)
    fields = np.maximum(body.lungs["right"], body.lungs["left"])
    assert np.array_equal(mask, (fields >= 0.5) & (body.heart < 0.5))
    behind = lung_mask(body, behind_heart=True)
    assert (mask <= behind).all() and behind.sum() > mask.sum()  # the heart does hide lung, and only that is cut
    for side, pixels in _sides(body, mask).items():
        assert pixels.sum() > 0.08 * 64 * 64 / 2  # each lung is a sizeable field on its own side
        assert (body.grid.y[pixels] < body.anatomy.base[side]).all()  # nothing below the costophrenic angle
    heart = (body.heart >= 0.5) & ~behind
    assert projection.plain[mask].mean() < projection.plain[heart].mean() - 0.2  # aerated: lung air, not tissue
    assert np.array_equal(render_lungs("projection", FINDINGS, 64, np.random.default_rng(seed))[1], mask)


def test_projection_lung_mask_is_the_anatomical_field_whatever_is_drawn_in_it():
    with_findings = phantom.project(FINDINGS, 64, np.random.default_rng(5))
    plain = phantom.project([], 64, np.random.default_rng(5))
    assert not np.array_equal(with_findings.attenuation, plain.attenuation)
    assert np.array_equal(lung_mask(with_findings.body), lung_mask(plain.body))


@pytest.mark.parametrize("seed", [0, 3])
def test_classic_body_is_the_rendered_films_own(seed):
    """The bench rebuilds the classic renderer's anatomy from the generator ``render`` spawns from; redrawing the
    film from that body gives the rendered film bit for bit, so the mask is this film's."""
    from synthvlp.generation.phantom.classic.appearance import randomise
    from synthvlp.generation.phantom.classic.composite import compose
    from synthvlp.generation.phantom.classic.findings import draw
    from synthvlp.generation.phantom.scene import read_scene

    rng = np.random.default_rng(seed)
    film = classic.render(FINDINGS, 64, copy.deepcopy(rng)).image
    body = classic_body(FINDINGS, 64, copy.deepcopy(rng))
    _, _, findings_rng, appearance_rng = rng.spawn(4)
    scene = read_scene(FINDINGS, "")
    effects = [draw(f, body, r) for f, r in zip(scene.findings, findings_rng.spawn(len(scene.findings)), strict=True)]
    d = body.anatomy.density
    redrawn = randomise(compose(body, effects), d["body"] + d["organ"] + 0.5 * d["bone"], appearance_rng)
    assert np.array_equal(np.round(redrawn * 255).astype(np.uint8), film)
    mask = lung_mask(body)
    for side, pixels in _sides(body, mask).items():
        assert pixels.sum() > 0.08 * 64 * 64 / 2
        assert (body.grid.y[pixels] < body.anatomy.base[side]).all()
    assert not (mask & (body.heart >= 0.5)).any()
    rendered_film, rendered_mask = render_lungs("classic", FINDINGS, 64, np.random.default_rng(seed))
    assert np.array_equal(rendered_mask, mask) and np.array_equal(np.round(rendered_film * 255).astype(np.uint8), film)


def test_an_unknown_renderer_is_refused():
    with pytest.raises(ValueError, match="classic"):
        render_lungs("painted", [], 32, np.random.default_rng(0))
