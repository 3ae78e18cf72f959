"""The visible lung fields of a rendered patient as one exact mask, in the convention human annotators draw.

Public lung-segmentation masks (JSRT/SCR, Montgomery, the COVID-19 collection's V7 masks) outline the lung field a
reader sees: apex to the domes, chest wall to the mediastinum, with the heart's silhouette cut out, not the
retrocardiac lung or the posterior recesses under the domes. Both renderers' ``Body`` carries the soft lung
fields (above the domes by construction) and the soft heart silhouette, so that mask is their thresholded
difference. Findings are effects on top of the anatomy, so the mask is the anatomical field whatever is drawn in
it (an effusion or consolidation stays inside it), as the human masks keep opacified lung.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class HasLungs(Protocol):
    """What both renderers' ``Body`` share: soft lung fields per side and a soft heart silhouette, in [0, 1]."""

    lungs: dict[str, np.ndarray]
    heart: np.ndarray


def lung_mask(body: HasLungs, behind_heart: bool = False) -> np.ndarray:
    """Boolean (size, size) mask of the lung fields (either soft field >= 0.5), minus the heart's silhouette
    (>= 0.5) unless ``behind_heart`` keeps the retrocardiac lung."""
    lungs = np.maximum.reduce([np.asarray(field) for field in body.lungs.values()]) >= 0.5
    return lungs if behind_heart else lungs & (np.asarray(body.heart) < 0.5)
