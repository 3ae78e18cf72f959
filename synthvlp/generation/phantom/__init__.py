"""The phantom renderer: a frontal CXR-like image drawn from a report's entity plan, with exact finding masks.

No weights: randomised parametric anatomy (``anatomy``), each finding drawn where and how it appears
(``findings``), combined physically (``compose``) and given a RaSD-style random appearance (``appearance``).
Because the renderer knows where it drew every finding, each image comes with a mask and box per finding
(``masks``): pixel-exact grounding labels. Entities it cannot draw become a generic opacity and are reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from synthvlp.generation.phantom.anatomy import build_body, draw_anatomy
from synthvlp.generation.phantom.appearance import randomise
from synthvlp.generation.phantom.composite import compose
from synthvlp.generation.phantom.findings import draw
from synthvlp.generation.phantom.masks import box
from synthvlp.generation.phantom.memory import keep_heap
from synthvlp.generation.phantom.scene import read_scene

NAME = "phantom"
VERSION = "1.0.0"


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
