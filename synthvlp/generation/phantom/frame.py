"""The chest's frame that both phantoms draw a patient from: where the lungs, diaphragm and heart lie.

Each renderer's ``Anatomy`` (``patient.Anatomy`` for the projection phantom, ``classic.anatomy.Anatomy``) adds its
own tissue model to these shape parameters, and its findings read them by the same names.
"""

from __future__ import annotations

from dataclasses import dataclass


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
