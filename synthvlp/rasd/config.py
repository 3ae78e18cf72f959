"""Every range RaSD draws from, with the public reference's values as defaults.

Ranges are ``(low, high)`` pairs drawn uniformly per sample. Grids are given as node counts per axis, not as
voxel spacings: the reference draws its label noise on ``size // (size // 8) = 8`` nodes whatever the image size,
so node counts keep 2D 512^2 and 3D 128^3 on the same footing. Sizes in voxels (bias-field FWHM, blur sigma) are
voxel units, as in the reference.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from synthvlp.config import operational

Range = tuple[float, float]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class FieldsConfig(_Section):
    """The label map: argmax over ``num_labels`` smooth random fields, each warped by its own displacement."""

    num_labels: int = Field(8, ge=2, description="K; the reference uses 8 for 3D 128^3 and 16 for 2D 512^2.")
    field_grids: tuple[int, ...] = Field((8, 4), min_length=1, description="Node counts of the noise grids.")
    field_std_max: float = Field(1.0, gt=0, description="Each grid's noise sd ~ U(0, this), drawn per sample.")
    flow_grids: tuple[int, ...] = Field((16, 8, 4), description="Node counts of the displacement grids.")
    flow_std_max: float = Field(
        1 / 16, ge=0, description="Each displacement grid's sd ~ U(0, this * axis size) voxels, per sample."
    )
    padding: Literal["zeros", "border"] = Field(
        "zeros",
        description="Field value where a displacement points outside the image: 'zeros' as the reference "
        "(a band of label 0 along the border), 'border' continues the structures.",
    )

    @field_validator("field_grids", "flow_grids")
    @classmethod
    def _at_least_two_nodes(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(n < 2 for n in value):
            raise ValueError(f"every grid needs at least 2 nodes per axis, got {value}")
        return value


class AppearanceConfig(_Section):
    """Label map to image: SynthSeg-style intensities, then bias, noise, blur, min-max and gamma."""

    mean: Range = Field((0.0, 1.0), description="Per-label mean intensity ~ U(mean).")
    std: Range = Field((0.0, 0.0), description="Per-label sd ~ U(std) (SynthSeg); the reference has none.")
    bias_std: Range = Field((0.01, 0.1), description="Log bias field noise sd; (0, 0) switches the bias off.")
    bias_fwhm: Range = Field((16.0, 32.0), description="Bias smoothing FWHM in voxels, drawn per axis.")
    noise_std: Range = Field((0.05, 0.4), description="Additive noise sd as a fraction of the image's max |value|.")
    blur_sigma: Range = Field((0.0, 1.0), description="Gaussian blur sigma in voxels, drawn per axis.")
    gamma: Range = Field((0.5, 1.5), description="Gamma exponent after min-max normalisation; (1, 1) is off.")
    normalize: bool = Field(True, description="Min-max normalise each image to [0, 1] before gamma.")

    @field_validator("mean", "std", "bias_std", "bias_fwhm", "noise_std", "blur_sigma", "gamma")
    @classmethod
    def _ordered(cls, value: Range) -> Range:
        if value[0] > value[1]:
            raise ValueError(f"range low ({value[0]}) exceeds high ({value[1]}); write it as (low, high)")
        return value

    @model_validator(mode="after")
    def _gamma_needs_normalize(self) -> AppearanceConfig:
        if self.gamma != (1.0, 1.0) and not self.normalize:
            raise ValueError("gamma needs normalize=true: a power of negative intensities is undefined")
        if self.bias_fwhm[0] <= 0 and self.bias_std[1] > 0:
            raise ValueError("bias_fwhm must be positive while the bias field is on (bias_std high > 0)")
        return self


class StreamConfig(_Section):
    """On-the-fly generation: image size, batch and the reference's buffer reuse."""

    spatial_size: tuple[int, ...] = Field((128, 128, 128), min_length=2, max_length=3)
    batch_size: int = Field(2, ge=1, description="Samples per buffered batch (the reference uses 16 in 2D).")
    refresh_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Share of the buffered batch replaced per step; the reference replaces a tenth (0.1). 1.0 is "
        "a fresh batch every step.",
    )
    seed: int = Field(0, ge=0, description="Seed every generator derives from.")


class LossConfig(_Section):
    """Prototype disentangling: pull each voxel to its label's prototype, push prototypes apart."""

    tau: float = Field(0.07, gt=0, description="Softmax temperature of both terms.")
    pull_weight: float = Field(1.0, ge=0)
    push_weight: float = Field(1.0, ge=0)


class BackboneConfig(_Section):
    """The dense network pre-trained by RaSD: a MONAI SwinUNETR (the paper's) or UNet, 2D or 3D, or (2D) the image
    tower of an open_clip model config, which then initialises a MedVLP model (``pretrain.image_encoder``)."""

    name: Literal["swinunetr", "unet", "clip"] = "swinunetr"
    clip_model: str = Field("synthvlp-tiny", description="clip: the registered model config whose image tower is trained.")
    in_channels: int = Field(1, ge=1)
    out_channels: int = Field(32, ge=1, description="Feature channels the loss sees (32 in the paper).")
    feature_size: int = Field(48, ge=12, description="SwinUNETR embedding size (48 in the reference), multiple of 12.")
    channels: tuple[int, ...] = Field((32, 64, 128, 256), min_length=2, description="UNet channels per level.")


class TrainConfig(_Section):
    """``synthvlp pretrain rasd``: optimisation, checkpoints and where the run lives."""

    out_dir: str = operational("runs/rasd", description="Run folder: state/, log.csv, backbone.pt (and encoder.pt for a clip backbone).")
    steps: int = Field(1000, ge=1, description="Optimiser steps; each sees one buffered batch per process.")
    lr: float = Field(1e-4, gt=0, description="Peak AdamW learning rate.")
    weight_decay: float = Field(1e-5, ge=0)
    warmup_steps: int = Field(50, ge=0, description="Linear warm-up, then cosine decay to 0.")
    checkpoint_every: int = operational(100, ge=1, description="Write a resumable state every this many steps.")
    keep_checkpoints: int = operational(2, ge=1)
    threads: int | None = operational(None, ge=1, description="CPU threads per process; None: the CPUs this process may use (synthvlp.threads).")
    seed: int = Field(0, ge=0, description="Initial weights; synthesis is seeded by stream.seed (plus the process rank).")
    tensorboard: bool = operational(True)


class RaSDConfig(_Section):
    """The whole RaSD recipe; defaults reproduce the reference's 3D 128^3 setting."""

    fields: FieldsConfig = Field(default_factory=FieldsConfig)
    appearance: AppearanceConfig = Field(default_factory=AppearanceConfig)
    stream: StreamConfig = Field(default_factory=StreamConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
