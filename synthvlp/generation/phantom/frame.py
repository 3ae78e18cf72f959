"""The chest's frame that both phantoms draw a patient from: where the lungs, diaphragm and heart lie.

Each renderer's ``Anatomy`` (``patient.Anatomy`` for the projection phantom, ``classic.anatomy.Anatomy``) adds its
own tissue model to these shape parameters, and its findings read them by the same names.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import ClassVar

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
class LungProportions:
    """A normal law of the lungs' proportions, each over the half width (so framing does not enter), fitted to human
    lung masks by ``bench/fit_lung_proportions.py``: the height from apex to the lower costophrenic angle, each
    medial border, each dome, and how much lower the left angle lies. Drawn jointly, so a wide chest comes with a
    wide mediastinum as it does in real films, and cut to the range the fitted films span."""

    names: ClassVar[tuple[str, ...]] = ("height", "medial_right", "medial_left", "dome_right", "dome_left", "left_lower")
    mean: tuple[float, ...]
    cholesky: tuple[tuple[float, ...], ...]  # lower triangular factor of the covariance
    low: tuple[float, ...]
    high: tuple[float, ...]

    def draw(self, u: list[float]) -> dict[str, float]:
        """Proportions from one uniform draw per name (through the normal quantile, so a fixed number of draws)."""
        z = [NormalDist().inv_cdf(min(max(v, 1e-6), 1.0 - 1e-6)) for v in u]
        values = [m + sum(row[j] * z[j] for j in range(i + 1)) for i, (m, row) in enumerate(zip(self.mean, self.cholesky, strict=True))]
        return {n: min(max(v, lo), hi) for n, v, lo, hi in zip(self.names, values, self.low, self.high, strict=True)}


@dataclass(frozen=True)
class FramePriors:
    """Where a renderer draws its frames from: each range is (low, span) of a uniform draw. The lungs' dimensions
    come either from their own ranges (``level``, ``dome``, ``medial``) or, with ``proportions``, from the half
    width times proportions drawn jointly."""

    apex: tuple[float, float]
    half_width: tuple[float, float]
    heart_height: tuple[float, float]
    body_margin: tuple[float, float]
    level: tuple[float, float] | None = None  # costophrenic angle y
    dome: tuple[float, float] | None = None  # dome height
    medial: tuple[float, float, float] | None = None  # medial border: right low, left low, common span
    proportions: LungProportions | None = None


def draw_frame(scene: Scene, u: list[float], priors: FramePriors, level_shift: float = 0.0) -> dict:
    """``Frame`` fields for ``scene`` from the uniform draws ``u[0:14]``: size, inspiration and habitus vary per
    sample; emphysema lowers and flattens the domes, widens the chest and adds a rib; atelectasis raises its side's
    hemidiaphragm; the heart's width is the scene's cardiothoracic ratio. Both renderers draw it alike."""
    emphysema = scene.has("emphysema")
    draw_lungs = _lungs_in_proportion if priors.proportions else _lungs_from_ranges
    lungs = draw_lungs(u, priors, emphysema, level_shift)
    if emphysema:
        lungs["dome"] = {"right": 0.008 + 0.012 * u[1], "left": (0.008 + 0.012 * u[1]) * (0.85 + 0.15 * u[8])}
    for side in scene.sides("atelectasis"):  # volume loss: the hemidiaphragm rises
        lungs["base"][side] -= 0.03 + 0.03 * u[3]
    low, high = CTR_RANGES[scene.heart]
    return dict(
        mid=0.5 + 0.03 * (u[6] - 0.5),
        **lungs,
        ctr=low + (high - low) * u[10],
        heart_height=priors.heart_height[0] + priors.heart_height[1] * u[11],
        body_margin=priors.body_margin[0] + priors.body_margin[1] * u[12],
        ribs=9 + int(3 * u[13]) + (1 if emphysema else 0),
    )


def _apex_and_half_width(u: list[float], priors: FramePriors, emphysema: bool) -> tuple[float, float]:
    apex = priors.apex[0] + priors.apex[1] * u[7] - (0.02 if emphysema else 0.0)
    return apex, priors.half_width[0] + priors.half_width[1] * u[9] + (0.02 if emphysema else 0.0)


def _lungs_from_ranges(u: list[float], priors: FramePriors, emphysema: bool, level_shift: float) -> dict:
    """Each dimension from its own range: the angles' level, the domes, the medial borders and the half width."""
    apex, half_width = _apex_and_half_width(u, priors, emphysema)
    base_level = priors.level[0] + priors.level[1] * u[0] + (0.06 if emphysema else 0.0) + level_shift
    height = priors.dome[0] + priors.dome[1] * u[1]
    right_higher = 0.01 + 0.02 * u[2]
    right, left, span = priors.medial
    return dict(
        apex=apex,
        base={"right": base_level - right_higher * 0.5, "left": base_level + right_higher * 0.5},
        dome={"right": height, "left": height * (0.85 + 0.15 * u[8])},
        half_width=half_width,
        medial={"right": right + span * u[4], "left": left + span * u[5]},
    )


def _lungs_in_proportion(u: list[float], priors: FramePriors, emphysema: bool, level_shift: float) -> dict:
    """The half width from its range, the rest from ``priors.proportions`` times it. Emphysema and
    ``level_shift`` then move the apex, angles and wall as they do with ranges, the proportions staying the patient's."""
    apex, half_width = _apex_and_half_width(u, priors, emphysema=False)
    p = priors.proportions.draw([u[0], u[1], u[2], u[4], u[5], u[8]])
    drop = p["left_lower"] * half_width
    lower = apex + p["height"] * half_width + (0.06 if emphysema else 0.0) + level_shift
    wider = 0.02 if emphysema else 0.0
    return dict(
        apex=apex - wider,
        base={"right": lower - max(drop, 0.0), "left": lower + min(drop, 0.0)},
        dome={side: p[f"dome_{side}"] * half_width for side in ("right", "left")},
        half_width=half_width + wider,
        medial={side: p[f"medial_{side}"] * half_width for side in ("right", "left")},
    )
