"""The chest's frame that both phantoms draw a patient from: where the lungs, diaphragm and heart lie.

Each renderer's ``Anatomy`` (``patient.Anatomy`` for the projection phantom, ``classic.anatomy.Anatomy``) adds its
own tissue model to these shape parameters, and its findings read them by the same names.
"""

from __future__ import annotations

from dataclasses import dataclass

from synthvlp.generation.phantom.scene import Scene

CTR_RANGES = {"normal": (0.38, 0.48), "any": (0.38, 0.5), "enlarged": (0.56, 0.68)}
"""Cardiothoracic ratio per heart state: normal below 0.5, cardiomegaly clearly above it."""


@dataclass(frozen=True)
class Frame:
    """One patient's shape parameters, in normalised image units (y down, x to the image's right)."""

    mid: float  # midline x
    apex: float  # lung apex y
    base: dict[str, float]  # costophrenic angle y per side
    dome: dict[str, float]  # dome height above the angle per side
    half_width: float  # widest lateral lung border, from the midline
    medial: dict[str, float]  # medial lung border, from the midline, per side
    ctr: float  # cardiothoracic ratio
    heart_height: float  # vertical heart radius
    body_margin: float  # chest wall and soft tissue outside the lungs (habitus)
    ribs: int  # posterior ribs visible above the diaphragm

    @property
    def height(self) -> float:
        """Apex to the lower costophrenic angle."""
        return max(self.base.values()) - self.apex


@dataclass(frozen=True)
class FramePriors:
    """Where a renderer draws its frames from: each range is (low, span) of a uniform draw."""

    level: tuple[float, float]  # costophrenic angle y
    dome: tuple[float, float]  # dome height
    medial: tuple[float, float, float]  # medial border: right low, left low, common span
    apex: tuple[float, float]
    half_width: tuple[float, float]
    heart_height: tuple[float, float]
    body_margin: tuple[float, float]


def draw_frame(scene: Scene, u: list[float], priors: FramePriors, level_shift: float = 0.0) -> dict:
    """``Frame`` fields for ``scene`` from the uniform draws ``u[0:14]``: size, inspiration and habitus vary per
    sample; emphysema lowers and flattens the domes, widens the chest and adds a rib; atelectasis raises its side's
    hemidiaphragm; the heart's width is the scene's cardiothoracic ratio. Both renderers draw it alike."""
    emphysema = scene.has("emphysema")
    base_level = priors.level[0] + priors.level[1] * u[0] + (0.06 if emphysema else 0.0) + level_shift
    height = priors.dome[0] + priors.dome[1] * u[1] if not emphysema else 0.008 + 0.012 * u[1]
    right_higher = 0.01 + 0.02 * u[2]
    base = {"right": base_level - right_higher * 0.5, "left": base_level + right_higher * 0.5}
    for side in scene.sides("atelectasis"):  # volume loss: the hemidiaphragm rises
        base[side] -= 0.03 + 0.03 * u[3]
    right, left, span = priors.medial
    low, high = CTR_RANGES[scene.heart]
    return dict(
        mid=0.5 + 0.03 * (u[6] - 0.5),
        apex=priors.apex[0] + priors.apex[1] * u[7] - (0.02 if emphysema else 0.0),
        base=base,
        dome={"right": height, "left": height * (0.85 + 0.15 * u[8])},
        half_width=priors.half_width[0] + priors.half_width[1] * u[9] + (0.02 if emphysema else 0.0),
        medial={"right": right + span * u[4], "left": left + span * u[5]},
        ctr=low + (high - low) * u[10],
        heart_height=priors.heart_height[0] + priors.heart_height[1] * u[11],
        body_margin=priors.body_margin[0] + priors.body_margin[1] * u[12],
        ribs=9 + int(3 * u[13]) + (1 if emphysema else 0),
    )
