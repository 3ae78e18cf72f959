"""One patient's randomised shape, habitus, view and tissue attenuation: the parameters every map is drawn from.

Drawn from a fixed number of random numbers whatever the findings, so the same sample rendered with and without a
finding has the same patient, except where the finding changes the anatomy itself (cardiomegaly widens the heart,
hyperinflation lowers and flattens the diaphragm, volume loss raises one hemidiaphragm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthvlp.generation.phantom.frame import Frame, FramePriors, draw_frame
from synthvlp.generation.phantom.scene import Scene
from synthvlp.generation.phantom.shapes import power

SIDES = ("right", "left")
SIGN = {"right": -1.0, "left": 1.0}
PRIORS = FramePriors(
    level=(0.7, 0.1), dome=(0.045, 0.045), medial=(0.06, 0.07, 0.03), apex=(0.07, 0.05), half_width=(0.32, 0.07),
    heart_height=(0.11, 0.035), body_margin=(0.035, 0.06),
)
"""The projection phantom's frame ranges (its body margin is the habitus draw ``u[12]``)."""
AP_SHARE = 0.4  # share of portable (AP) films, about ChestX-ray14's


@dataclass(frozen=True)
class Anatomy(Frame):
    """One patient's shape (``Frame``), habitus, view and tissue attenuations."""

    density: dict[str, float]  # attenuation per unit thickness (body, bone, vessel) and a fluid layer's (organ)
    view: str = "PA"  # "PA" (standing, departmental) or "AP" (portable)
    depth: float = 0.24  # half the chest's front-to-back thickness
    lung_share: float = 0.6  # share of that thickness the lungs fill at their deepest
    neck: float = 0.09  # neck half width
    shoulder: float = 0.08  # y of the shoulders' top at the chest wall
    arm: float = 0.06  # upper arm radius
    arm_gap: float = 0.02  # air between chest wall and arm
    breast: float = 0.0  # breast radius (0: no breast shadow)
    scapula: float = 1.0  # medial border of the scapula, in lung half widths from the midline
    rib_drop: float = 0.35  # how far the posterior ribs sweep down laterally (share of their span)
    clavicle_rise: float = 0.06  # how far the clavicles rise from the sternum to the shoulder
    rotation: float = 0.0  # spinous processes off the midline (patient rotated about the vertical axis)
    trachea: float = 0.016  # trachea half width

    @property
    def wall(self) -> float:
        """Outer chest wall, from the midline."""
        return self.half_width + self.body_margin

    def hilum(self, side: str) -> tuple[float, float]:
        return self.apex + 0.42 * self.height, self.mid + SIGN[side] * (self.medial[side] + 0.03)


def draw_anatomy(scene: Scene, rng: np.random.Generator) -> Anatomy:
    """Random anatomy for ``scene``: size, inspiration, habitus, view and tissue attenuation vary per sample."""
    u = rng.random(32).tolist()  # Python floats: a NumPy float64 scalar would promote every float32 map
    emphysema = scene.has("emphysema")
    portable = u[20] < AP_SHARE
    frame = draw_frame(scene, u, PRIORS, level_shift=-0.03 if portable else 0.0)  # a supine film: a shallower breath
    habitus = u[12]
    female = u[21] < 0.5
    mu = 1.9 + 0.4 * u[15]
    return Anatomy(
        **frame,
        density={
            "body": mu,
            "bone": mu * (2.2 + 0.8 * u[17]),
            "vessel": mu * (3.0 + 1.5 * u[18]),
            "organ": mu * (0.1 + 0.03 * u[16]),  # a fluid layer's attenuation, the scale findings draw with
        },
        view="AP" if portable else "PA",
        depth=0.2 + 0.08 * habitus + 0.02 * u[14],
        lung_share=(0.45 + 0.1 * u[19]) * (1.12 if emphysema else 1.0),
        neck=0.075 + 0.03 * u[22],
        shoulder=frame["apex"] + 0.0 + 0.06 * u[23],
        arm=0.05 + 0.03 * habitus + 0.01 * u[24],
        arm_gap=0.01 * u[25] if portable else 0.02 + 0.08 * u[25],
        breast=(0.09 + 0.08 * u[26]) * (0.6 + 0.8 * habitus) if female else 0.0,
        scapula=(0.7 + 0.15 * u[27]) if portable else (0.95 + 0.12 * u[27]),
        rib_drop=0.28 + 0.14 * u[28],
        clavicle_rise=(0.0 + 0.04 * u[29]) if portable else (0.03 + 0.05 * u[29]),
        rotation=0.025 * (u[30] - 0.5) * (2.0 if portable else 1.0),
        trachea=0.016 + 0.008 * u[31],
    )


def lung_width(a: Anatomy, v: np.ndarray | float) -> np.ndarray | float:
    """Lateral lung border from the midline at fraction ``v`` from apex to costophrenic angle: the narrow apex
    widening quickly, then slowly, to ``half_width`` at the base. A Python float for a float ``v`` (a NumPy
    scalar would promote the float32 maps it meets)."""
    if isinstance(v, np.ndarray):
        return a.half_width * (0.5 + 0.5 * power(v, 0.5))
    return a.half_width * (0.5 + 0.5 * float(v) ** 0.5)
