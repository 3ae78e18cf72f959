"""Random appearance: label map (or intensity image) to a realistic-looking image, SynthSeg/RaSD style.

Chain: per-label mean (and optional sd) intensity, multiplicative smooth bias field, additive Gaussian noise,
anisotropic Gaussian blur, min-max normalisation, gamma. Every step is batched with per-sample parameters; the
smooth steps are per-axis matrices (``separable``), so a sample costs a few matmuls instead of long convolutions.
"""

from __future__ import annotations

import math

import torch

from synthvlp.rasd.config import AppearanceConfig
from synthvlp.rasd.separable import apply_separable, gaussian_matrix, interp_matrix

FWHM_PER_SIGMA = 2 * math.sqrt(2 * math.log(2))


class RandAppearance:
    """Turns a (B, 1, *spatial) integer label map or float image (2D or 3D) into a float image in [0, 1].

    Owns its ``torch.Generator``; reusable on any label map or intensity image, 2D or 3D (the phantom renderer
    applies the same chain and ranges in NumPy, because one small image is below torch's per-call overhead).
    """

    def __init__(
        self, config: AppearanceConfig | None = None, device: torch.device | str = "cpu", seed: int = 0
    ) -> None:
        self.config = config or AppearanceConfig()
        self.device = torch.device(device)
        self.set_random_state(seed)

    def set_random_state(self, seed: int) -> RandAppearance:
        """Reseed this generator's own random state; returns ``self`` for chaining."""
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        return self

    def _uniform(self, bounds: tuple[float, float], *shape: int) -> torch.Tensor:
        low, high = bounds
        return low + (high - low) * torch.rand(shape, generator=self.generator, device=self.device)

    def _randn(self, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, device=self.device)

    def intensities(self, labels: torch.Tensor, num_labels: int) -> torch.Tensor:
        """Piecewise-constant image: each label's mean ~ U(mean), plus per-voxel noise of sd ~ U(std) if set."""
        batch = labels.shape[0]
        flat = labels.reshape(batch, -1)
        image = self._uniform(self.config.mean, batch, num_labels).gather(1, flat)
        if self.config.std[1] > 0:
            image = image + self._uniform(self.config.std, batch, num_labels).gather(1, flat) * self._randn(flat.shape)
        return image.view(labels.shape)

    def log_bias(self, batch: int, spatial: tuple[int, ...]) -> torch.Tensor:
        """(B, 1, *spatial) smooth log bias field, as the reference's blurred white noise rescaled to its max.

        The reference blurs full-size white noise (sigma = FWHM / 2.355 per axis, at least ~7 voxels) and rescales
        it so its max equals the noise's pre-blur max, sd * max of N normals. A Gaussian that wide passes nothing
        above the frequency of a grid at half its sigma, so the noise is drawn on that coarse grid (padded by 3 sigma
        so the border sees a stationary field), blurred there and interpolated up; the max of N normals is drawn
        exactly from its distribution, Phi^-1(U^(1/N)). The field is scaled by its largest magnitude rather than its
        max, which is the same for a wide symmetric field and cannot divide by a negative number.
        """
        cfg = self.config
        sigma_min, sigma_max = (f / FWHM_PER_SIGMA for f in cfg.bias_fwhm)
        step = max(sigma_min / 2, 1.0)
        pad = 3 * sigma_max
        fwhm = self._uniform(cfg.bias_fwhm, batch, len(spatial))
        nodes = [math.ceil((size - 1 + 2 * pad) / step) + 1 for size in spatial]
        mats = []
        for axis, (size, n) in enumerate(zip(spatial, nodes)):
            spacing = (size - 1 + 2 * pad) / (n - 1)
            up = interp_matrix(n, size, pad / spacing, (size - 1 + pad) / spacing, device=self.device)
            mats.append(up @ gaussian_matrix(fwhm[:, axis] / FWHM_PER_SIGMA / spacing, n))
        field = apply_separable(self._randn((batch, *nodes)), mats).unsqueeze(1)
        count = math.prod(spatial)
        u = torch.rand(batch, generator=self.generator, device=self.device, dtype=torch.float64)
        normal_max = -torch.special.ndtri(-torch.expm1(torch.log(u) / count))
        target = self._uniform(cfg.bias_std, batch) * normal_max.float()
        peak = field.abs().flatten(1).amax(1).clamp_min(1e-12)
        return field * (target / peak).view(batch, *([1] * (len(spatial) + 1)))

    def __call__(self, image: torch.Tensor, num_labels: int | None = None) -> torch.Tensor:
        """Randomise the appearance of a (B, 1, *spatial) batch.

        An integer tensor is a label map (``num_labels`` defaults to its max + 1); a float tensor is an intensity
        image and skips the per-label step. The input is never modified.
        """
        if image.dim() not in (4, 5) or image.shape[1] != 1:
            raise ValueError(f"expected a (B, 1, H, W) or (B, 1, D, H, W) tensor, got shape {tuple(image.shape)}")
        cfg, batch, spatial = self.config, image.shape[0], tuple(image.shape[2:])
        image = image.to(self.device)
        if image.is_floating_point():
            image = image.float()
        else:
            image = self.intensities(image.long(), num_labels or int(image.max()) + 1)
        per_sample = (batch, *([1] * (len(spatial) + 1)))
        if cfg.bias_std[1] > 0:
            image = image * self.log_bias(batch, spatial).exp()
        if cfg.noise_std[1] > 0:
            peak = image.abs().flatten(1).amax(1)
            sd = self._uniform(cfg.noise_std, batch) * peak
            image = image + sd.view(per_sample) * self._randn(image.shape)
        if cfg.blur_sigma[1] > 0:
            sigma = self._uniform(cfg.blur_sigma, batch, len(spatial))
            mats = [gaussian_matrix(sigma[:, axis], size) for axis, size in enumerate(spatial)]
            image = apply_separable(image.squeeze(1), mats).unsqueeze(1)
        if cfg.normalize:
            flat = image.flatten(1)
            low, high = flat.amin(1).view(per_sample), flat.amax(1).view(per_sample)
            image = (image - low) / (high - low + 1e-6)
        if cfg.gamma != (1.0, 1.0):
            image = image.pow(self._uniform(cfg.gamma, batch).view(per_sample))
        return image
