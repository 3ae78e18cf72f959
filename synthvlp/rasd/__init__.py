"""RaSD: randomized synthesis and disentanglement (Wei et al., arXiv 2602.12317), in torch, 2D and 3D.

A core-level subpackage: label maps from warped random fields (``fields``), SynthSeg-style appearance
(``appearance``), on-the-fly streams (``stream``), the prototype-disentangling loss (``loss``) and MONAI
backbones (``backbones``, MONAI imported only when one is built). It imports
nothing from the stages, so any stage can use it.
"""

from synthvlp.rasd.appearance import RandAppearance
from synthvlp.rasd.backbones import build_backbone
from synthvlp.rasd.config import (
    AppearanceConfig,
    BackboneConfig,
    FieldsConfig,
    LossConfig,
    RaSDConfig,
    StreamConfig,
)
from synthvlp.rasd.fields import RandLabelMap
from synthvlp.rasd.loss import PrototypeDisentangleLoss, PrototypeLossOutput
from synthvlp.rasd.stream import BufferedSynthesizer, RaSDStream, RaSDSynthesizer

__all__ = [
    "AppearanceConfig",
    "BackboneConfig",
    "BufferedSynthesizer",
    "FieldsConfig",
    "LossConfig",
    "PrototypeDisentangleLoss",
    "PrototypeLossOutput",
    "RandAppearance",
    "RandLabelMap",
    "RaSDConfig",
    "RaSDStream",
    "RaSDSynthesizer",
    "StreamConfig",
    "build_backbone",
]
