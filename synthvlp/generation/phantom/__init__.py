"""The phantom renderer: a frontal CXR-like image drawn from a report's entity plan, with exact finding masks.

No weights: a randomised thorax projected as attenuation (``frame``, ``patient``, ``anatomy``, ``skeleton``,
``vessels``), each finding drawn where and how it appears (``findings``), combined physically (``compose``), then
exposed and displayed as a detector would (``appearance``), with what departments add (``acquisition``: leads,
markers, labels, collimation).
Because the renderer knows where it drew every finding, each image comes with a mask and box per finding
(coded by ``synthvlp.masks``, which evaluation reads them with): pixel-exact grounding labels. Entities it cannot
draw become a generic opacity and are reported.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from synthvlp.generation.phantom.acquisition import burn_in, monitoring
from synthvlp.generation.phantom.anatomy import Body, build_body, draw_anatomy
from synthvlp.generation.phantom.appearance import Appearance, apply_tone, expose
from synthvlp.generation.phantom.composite import compose
from synthvlp.generation.phantom.findings import Effect, draw
from synthvlp.generation.phantom.memory import keep_heap
from synthvlp.generation.phantom.scene import Scene, read_scene
from synthvlp.masks import box

NAME = "phantom"
VERSION = "2.1.0"


@dataclass(frozen=True)
class DrawnFinding:
    """One finding as drawn: its plan entity, side, mask and box (x0, y0, x1, y1; None if off the image)."""

    name: str
    laterality: str | None
    mask: np.ndarray
    box: tuple[int, int, int, int] | None


@dataclass
class Rendering:
    image: np.ndarray  # uint8 or uint16, (size, size)
    findings: list[DrawnFinding] = field(default_factory=list)
    undrawable: list[str] = field(default_factory=list)


@dataclass
class Projection:
    """A sample before exposure: the patient with and without findings as attenuation, and what develops it."""

    scene: Scene
    body: Body
    effects: list[Effect]
    attenuation: np.ndarray  # the composite with every finding
    plain: np.ndarray  # the same patient without findings
    exposure_rng: np.random.Generator
    labels_rng: np.random.Generator


def project(entities: list[dict], size: int, rng: np.random.Generator, report_text: str = "") -> Projection:
    """Everything up to the film: anatomy, findings and monitoring leads projected as attenuation.

    Anatomy, pose, each finding and the acquisition draw from separate children of ``rng``, so adding a finding
    leaves everything else unchanged.
    """
    keep_heap()
    scene = read_scene(entities, report_text)
    anatomy_rng, pose_rng, findings_rng, appearance_rng = rng.spawn(4)
    body = build_body(draw_anatomy(scene, anatomy_rng), size, pose_rng)
    effects = [draw(f, body, r) for f, r in zip(scene.findings, findings_rng.spawn(len(scene.findings)), strict=True)]
    leads_rng, exposure_rng, labels_rng = appearance_rng.spawn(3)
    leads = monitoring(body.grid, body.anatomy, leads_rng)
    plain = compose(body, []) + leads
    attenuation = compose(body, effects) + leads if effects else plain
    return Projection(scene, body, effects, attenuation, plain, exposure_rng, labels_rng)


def develop(projection: Projection, appearance: Appearance | None = None) -> np.ndarray:
    """The film in [0, 1]: exposed and displayed with ``appearance``'s ranges, markers and labels burnt in, then
    its look-up table applied (if any). Draws from copies of the projection's generators, so developing twice gives
    the same film."""
    exposure_rng, labels_rng = (copy.deepcopy(r) for r in (projection.exposure_rng, projection.labels_rng))
    settings = appearance or Appearance()
    film = expose(projection.attenuation, projection.plain, exposure_rng, settings)
    return apply_tone(np.clip(burn_in(film, projection.body.anatomy, labels_rng), 0.0, 1.0), settings.tone)


def render(
    entities: list[dict],
    size: int,
    rng: np.random.Generator,
    report_text: str = "",
    bit_depth: int = 8,
    appearance: Appearance | None = None,
) -> Rendering:
    """Render one sample from its plan ``entities`` (dicts with name, category, assertion, laterality).

    ``report_text`` lends severity words ("large effusion") to the drawing; ``appearance`` overrides the
    exposure and display ranges (``synthvlp render calibrate`` fits them to real films).
    """
    projection = project(entities, size, rng, report_text)
    image = develop(projection, appearance)
    peak = 255 if bit_depth == 8 else 65535
    pixels = np.round(image * peak).astype(np.uint8 if bit_depth == 8 else np.uint16)
    drawn = []
    for finding, effect in zip(projection.scene.findings, projection.effects, strict=True):
        mask = np.asarray(effect.shape) >= 0.5
        drawn.append(DrawnFinding(finding.name, finding.laterality, mask, box(mask)))
    return Rendering(image=pixels, findings=drawn, undrawable=projection.scene.undrawable)
