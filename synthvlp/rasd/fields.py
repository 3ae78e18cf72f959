"""Random label maps: the voxel-wise argmax over K smooth, independently warped random fields.

The reference builds every field and every displacement at full resolution and then warps. Both are linear
interpolants of coarse noise, so here nothing smooth is upsampled on its own: each field stays on its coarse grid
(the noise grids summed exactly on their common refinement) and is sampled once at the displaced positions, and
the displaced positions come straight out of one matmul per pass in ``grid_sample``'s layout (the identity folded
into the coarse coefficients). Same fields, same warps, a fraction of the memory traffic; a test checks the maps
against the full-size recipe built from the same random numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from synthvlp.rasd.config import FieldsConfig
from synthvlp.rasd.separable import apply_along, apply_separable, common_grid, interp_matrix


class RandLabelMap:
    """Draws batches of (B, 1, *spatial_size) int64 label maps in [0, K); 2D or 3D, on any device.

    Owns its ``torch.Generator`` (MONAI's ``Randomizable`` habit): the same seed on the same device gives the same
    maps, and the global RNGs are never touched.
    """

    def __init__(
        self,
        config: FieldsConfig | None = None,
        spatial_size: Sequence[int] = (128, 128, 128),
        device: torch.device | str = "cpu",
        seed: int = 0,
        max_voxels: int = 2**23,
    ) -> None:
        self.config = config or FieldsConfig()
        self.max_voxels = max_voxels
        self.spatial_size = tuple(int(s) for s in spatial_size)
        if len(self.spatial_size) not in (2, 3) or min(self.spatial_size) < 2:
            raise ValueError(f"spatial_size must be 2 or 3 sizes of at least 2, got {spatial_size}")
        self.device = torch.device(device)
        grids = self.config.field_grids
        self._common = tuple(common_grid(grids, size) for size in self.spatial_size)
        self._refine = {n: [interp_matrix(n, m, device=self.device) for m in self._common] for n in grids}
        flow = self.config.flow_grids
        self._flow_up = {n: [interp_matrix(n, s, device=self.device) for s in self.spatial_size] for n in flow}
        self._flow_first = torch.cat([self._flow_up[n][0] for n in flow], dim=1)
        self.set_random_state(seed)

    def set_random_state(self, seed: int) -> RandLabelMap:
        """Reseed this generator's own random state; returns ``self`` for chaining."""
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        return self

    def _rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator, device=self.device)

    def _randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, device=self.device)

    def coarse_fields(self, batch: int) -> torch.Tensor:
        """(B, K, *common grid) field values: each noise grid, its sd ~ U(0, max) per sample, refined and summed."""
        ndim, k = len(self.spatial_size), self.config.num_labels
        total = torch.zeros(batch, k, *self._common, device=self.device)
        for n in self.config.field_grids:
            std = self._rand(batch) * self.config.field_std_max
            noise = self._randn(batch, k, *([n] * ndim)) * std.view(batch, 1, *([1] * ndim))
            total += apply_separable(noise, self._refine[n], first_dim=2)
        return total

    def flow_coefficients(self, batch: int) -> list[torch.Tensor]:
        """Per displacement grid, (B, K, *nodes, ndim) coarse coordinates: normalised, x first, identity included.

        Each grid's displacement sd ~ U(0, flow_std_max * axis size) voxels is drawn per sample and grid (shared by
        the K fields, as in the reference). The identity is linear, so the first grid carries it exactly.
        """
        k, ndim = self.config.num_labels, len(self.spatial_size)
        # channel c displaces along spatial axis ndim-1-c; voxels -> normalised [-1, 1] coordinates
        axis_sizes = torch.tensor(self.spatial_size[::-1], dtype=torch.float32, device=self.device)
        to_norm = self.config.flow_std_max * axis_sizes * 2 / (axis_sizes - 1)
        flow_std = self._rand(batch, len(self.config.flow_grids))
        coefs = []
        for j, n in enumerate(self.config.flow_grids):
            scale = flow_std[:, j].view(batch, *([1] * (ndim + 1)), 1) * to_norm
            coef = self._randn(batch, k, *([n] * ndim), ndim) * scale
            if j == 0:
                ramp = torch.linspace(-1, 1, n, device=self.device)
                for c in range(ndim):
                    view = [1] * (ndim + 2)
                    view[ndim + 1 - c] = n  # spatial axis ndim-1-c, after batch and field
                    coef[..., c] += ramp.view(view)
            coefs.append(coef)
        return coefs

    def sampling_grid(self, coefs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Full-size ``grid_sample`` coordinates from coarse ones, each (N, *nodes, ndim) for N field samples.

        Returns [(N, *spatial, 2) x and y], plus [(N, *spatial, 1) z] in 3D, each contiguous for the sampler.
        """
        ndim = len(self.spatial_size)
        parts = []
        for n, coef in zip(self.config.flow_grids, coefs):
            for axis in range(1, ndim):
                coef = apply_along(coef, self._flow_up[n][axis], dim=1 + axis)
            parts.append(coef)
        coef = torch.cat(parts, dim=1)
        groups = [coef] if ndim == 2 else [coef[..., :2].contiguous(), coef[..., 2:].contiguous()]
        return [apply_along(group, self._flow_first, dim=1) for group in groups]

    def _fade(self, grid: list[torch.Tensor]) -> torch.Tensor:
        """(B, 1, *spatial) zero-padding weight of each sampled position: 1 inside, fading to 0 one voxel out.

        That is what the reference's full-size bilinear sampling with zero padding does at the border. The weight
        is a product over axes, and over x and y it is exactly a bilinear sample of a full-size image of ones with
        zero padding: one vectorised ``grid_sample`` call instead of a dozen passes over the coordinates.
        """
        xy = grid[0]
        batch, ndim = xy.shape[0], len(self.spatial_size)
        ones = torch.ones(1, 1, *self.spatial_size[-2:], device=self.device).expand(batch, -1, -1, -1)
        weight = F.grid_sample(ones, xy.view(batch, 1, -1, 2), align_corners=True, padding_mode="zeros")
        if ndim == 3:  # z: clamp(1 + h - h|z|, 0, 1), with h = (depth - 1) / 2 voxels per unit
            h = (self.spatial_size[0] - 1) / 2
            weight *= grid[1].view(batch, 1, 1, -1).abs().mul(-h).add_(1 + h).clamp_(0, 1)
        return weight.view(batch, 1, *self.spatial_size)

    def __call__(self, batch_size: int = 1) -> torch.Tensor:
        """A (B, 1, *spatial_size) int64 label map.

        Fields are warped ``max_voxels // voxels`` at a time (a pass holds about 32 bytes per sampled voxel), with
        a running argmax across passes; few large tensor operations also keep two threads busy on shared cores.
        """
        fields = self.coarse_fields(batch_size)
        coefs = self.flow_coefficients(batch_size)
        num_labels, voxels = self.config.num_labels, batch_size * math.prod(self.spatial_size)
        per_pass = max(1, min(num_labels, self.max_voxels // voxels))
        best = labels = None
        for first in range(0, num_labels, per_pass):
            count = min(per_pass, num_labels - first)
            flat = [c[:, first : first + count].flatten(0, 1) for c in coefs]  # (B * count, *nodes, ndim)
            grid = self.sampling_grid(flat)
            fade = self._fade(grid) if self.config.padding == "zeros" else None
            volumes = fields[:, first : first + count].flatten(0, 1)
            if len(grid) == 1:
                value = F.grid_sample(volumes.unsqueeze(1), grid[0], align_corners=True, padding_mode="border")
            else:
                value = sample_volume(volumes, *grid)
            if fade is not None:
                value = value.mul_(fade)
            top, index = value.view(batch_size, count, *self.spatial_size).max(1, keepdim=True)  # first max wins
            index += first
            if best is None:
                best, labels = top, index
            else:
                better = top > best
                best, labels = torch.where(better, top, best), torch.where(better, index, labels)
        return labels


def sample_volume(volume: torch.Tensor, xy: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Trilinear sampling of a small (B, D, H, W) volume with border padding, via the 2D sampler.

    PyTorch's 2D ``grid_sample`` is vectorised on CPU and its 3D one is not (about 3x slower here). The volume's
    z-slices are laid side by side, each paired with its successor in a second channel; one bilinear sample gives
    both neighbouring slices and a lerp in z finishes the job. ``xy`` (B, *spatial, 2) and ``z`` (B, *spatial, 1)
    are normalised coordinates as for ``grid_sample``; both are overwritten.
    """
    batch, depth, height, width = volume.shape
    following = torch.cat([volume[:, 1:], volume[:, -1:]], dim=1)
    atlas = torch.stack([volume, following], 1).transpose(2, 3).reshape(batch, 2, height, depth * width)
    z = z.clamp_(-1, 1).add_(1).mul_((depth - 1) / 2)
    z0 = z.floor().clamp_(max=depth - 2)
    frac = z.sub_(z0)
    atlas_width = depth * width - 1
    offset = z0.mul_(2 * width / atlas_width).add_((width - 1) / atlas_width - 1)
    x = xy[..., :1].clamp_(-1, 1)  # a slice's x must not run into the next slice
    x.mul_((width - 1) / atlas_width).add_(offset)
    both = F.grid_sample(atlas, xy.view(batch, 1, -1, 2), align_corners=True, padding_mode="border")
    return torch.lerp(both[:, 0], both[:, 1], frac.view(batch, 1, -1)).view(batch, 1, *xy.shape[1:-1])
