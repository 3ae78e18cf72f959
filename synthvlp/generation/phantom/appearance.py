"""RaSD-style appearance randomisation of a phantom, so a model cannot key on one texture or exposure.

The tissue densities were already drawn per sample (the intensity mixture, in ``anatomy``). This maps the
attenuation image to film intensity through a fixed per-patient window (metal saturates, as on a real film),
then reuses ``synthvlp.rasd.appearance.RandAppearance`` for a smooth multiplicative bias field, additive noise
and blur, and ends with a random gamma. Unlike RaSD it never min-max normalises: that would let a bright
finding dim the whole image, and a pixel's value should change only where something is drawn.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from synthvlp.rasd.appearance import RandAppearance
from synthvlp.rasd.config import AppearanceConfig

GAMMA = (0.7, 1.4)
FLOOR = 0.04  # film intensity of air outside the body, kept above 0 so noise is not clipped away


@lru_cache(maxsize=8)
def appearance_config(size: int) -> AppearanceConfig:
    """Bias fields a quarter to half the image wide, noise of 0.3-2% of the peak, blur up to ~1 px at 256."""
    return AppearanceConfig(
        bias_std=(0.02, 0.12),
        bias_fwhm=(size / 4, size / 2),
        noise_std=(0.003, 0.02),
        blur_sigma=(0.0, 0.2 + 0.8 * size / 256),
        gamma=(1.0, 1.0),
        normalize=False,
    )


def randomise(linear: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Film intensity in [0, 1] of an attenuation image whose tissue peaks near ``scale`` (dense metal saturates)."""
    low, high = 0.05 * rng.random(), scale * (1.1 + 0.15 * rng.random())
    film = FLOOR + (1.0 - FLOOR) * np.clip((linear - low) / (high - low), 0.0, 1.0)
    chain = RandAppearance(appearance_config(linear.shape[0]), seed=int(rng.integers(2**63)))
    with torch.no_grad():
        image = chain(torch.from_numpy(np.ascontiguousarray(film, dtype=np.float32))[None, None])[0, 0].numpy()
    return np.clip(image, 0.0, 1.0) ** (GAMMA[0] + (GAMMA[1] - GAMMA[0]) * rng.random())
