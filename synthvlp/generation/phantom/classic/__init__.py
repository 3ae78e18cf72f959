"""The classic phantom: the renderer before the projected thorax, kept as a choice (``images.phantom: classic``).

Randomised parametric 2D anatomy (``anatomy``: a rectangular body, a round heart, banded ribs), each finding
drawn where it appears (``findings``), combined (``compose``) and given a RaSD-style random appearance
(``appearance``), with the same exact masks and result types as the projection renderer. Its films are easy to
learn from and easy to tell from real ones (BENCHMARKS.md, "Realism of the rendered films"); it stays the default
until the projection renderer keeps the quickstart's grounding target (docs/rendering.md).
"""

from __future__ import annotations

import numpy as np

from synthvlp.generation.phantom import DrawnFinding, Rendering
from synthvlp.generation.phantom.classic.anatomy import build_body, draw_anatomy
from synthvlp.generation.phantom.classic.appearance import randomise
from synthvlp.generation.phantom.classic.composite import compose
from synthvlp.generation.phantom.classic.findings import draw
from synthvlp.generation.phantom.memory import keep_heap
from synthvlp.generation.phantom.scene import read_scene
from synthvlp.masks import box

NAME = "phantom"
VERSION = "1.0.0"


def render(entities: list[dict], size: int, rng: np.random.Generator, report_text: str = "", bit_depth: int = 8) -> Rendering:
    """Render one sample from its plan ``entities`` (dicts with name, category, assertion, laterality).

    ``report_text`` lends severity words ("large effusion") to the drawing. Anatomy, pose, each finding and the
    appearance draw from separate children of ``rng``, so adding a finding leaves everything else unchanged.
    """
    keep_heap()
    scene = read_scene(entities, report_text)
    anatomy_rng, pose_rng, findings_rng, appearance_rng = rng.spawn(4)
    body = build_body(draw_anatomy(scene, anatomy_rng), size, pose_rng)
    effects = [draw(f, body, r) for f, r in zip(scene.findings, findings_rng.spawn(len(scene.findings)), strict=True)]
    d = body.anatomy.density
    image = randomise(compose(body, effects), d["body"] + d["organ"] + 0.5 * d["bone"], appearance_rng)
    peak = 255 if bit_depth == 8 else 65535
    pixels = np.round(image * peak).astype(np.uint8 if bit_depth == 8 else np.uint16)
    drawn = []
    for finding, effect in zip(scene.findings, effects, strict=True):
        mask = np.asarray(effect.shape) >= 0.5
        drawn.append(DrawnFinding(finding.name, finding.laterality, mask, box(mask)))
    return Rendering(image=pixels, findings=drawn, undrawable=scene.undrawable)
