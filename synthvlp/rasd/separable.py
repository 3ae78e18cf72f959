"""Separable linear maps (upsampling, Gaussian blur) as one small matrix per axis.

Both RaSD stages spend their time on smooth fields: coarse noise upsampled to full size and images blurred
along each axis. Written as a matrix per axis, each is a batched matmul: BLAS-fast on CPU and GPU, one kernel per
sample (no per-sample Python loop), any border rule folded into the matrix, and an upsample followed by a blur
collapses into a single product.
"""

from __future__ import annotations

import math

import torch


def interp_matrix(
    n_in: int, n_out: int, start: float = 0.0, stop: float | None = None, *, device: torch.device | str | None = None
) -> torch.Tensor:
    """The (n_out, n_in) matrix of linear interpolation at ``n_out`` even positions from ``start`` to ``stop``.

    Positions are in input-node units; the default spans first to last node (``align_corners=True``).
    """
    stop = n_in - 1 if stop is None else stop
    if not 0 <= start <= stop <= n_in - 1:
        raise ValueError(f"positions {start}..{stop} fall outside the {n_in} input nodes")
    if n_in == 1:
        return torch.ones(n_out, 1, device=device)
    pos = torch.linspace(start, stop, n_out, dtype=torch.float64, device=device)
    left = pos.floor().clamp(max=n_in - 2)
    frac = pos - left
    mat = torch.zeros(n_out, n_in, dtype=torch.float64, device=device)
    rows = torch.arange(n_out, device=device)
    mat[rows, left.long()] = 1 - frac
    mat[rows, left.long() + 1] += frac
    return mat.float()


def common_grid(nodes: tuple[int, ...], limit: int) -> int:
    """Node count of the coarsest grid on which every listed grid's linear interpolant is exact.

    A piecewise-linear function with knots every 1/(n-1) is reproduced exactly by linear interpolation on any
    grid whose spacing divides 1/(n-1), so summing several noise grids on the common refinement and
    interpolating once gives the same field as upsampling each and summing. Capped at ``limit`` (the image size).
    """
    return min(math.lcm(*(n - 1 for n in nodes)) + 1, limit)


def gaussian_matrix(sigma: torch.Tensor, size: int) -> torch.Tensor:
    """Per-sample (B, size, size) Gaussian blur matrices for sigmas of shape (B,), in voxels.

    Rows are renormalised, so near the border the kernel averages only voxels inside the image (no darkening as
    with zero padding). A sigma of 0 gives the identity. The matrix is Toeplitz: one exp per offset, then a gather.
    """
    offsets = torch.arange(size, dtype=sigma.dtype, device=sigma.device)
    kernel = torch.exp(-offsets.square() / (2 * sigma.clamp_min(1e-4)[:, None].square()))  # (B, size)
    kernel = kernel.masked_fill(kernel < 1e-8, 0.0)  # past ~6 sigma: no denormals, which are 10x slower in BLAS
    index = torch.arange(size, device=sigma.device)
    weights = kernel[:, (index[:, None] - index[None, :]).abs()]
    return weights / weights.sum(-1, keepdim=True)


def apply_along(x: torch.Tensor, mat: torch.Tensor, dim: int) -> torch.Tensor:
    """Multiply axis ``dim`` of ``x`` (batch first) by ``mat``: (n_out, n_in) shared or (B, n_out, n_in) per sample."""
    shape = x.shape
    batch, n_in = shape[0], shape[dim]
    pre = math.prod(shape[1:dim])
    post = math.prod(shape[dim + 1 :])
    if post == 1:
        out = x.reshape(batch, pre, n_in) @ mat.transpose(-1, -2)
    else:
        out = (mat.unsqueeze(1) if mat.dim() == 3 else mat) @ x.reshape(batch, pre, n_in, post)
    return out.reshape(*shape[:dim], mat.shape[-2], *shape[dim + 1 :])


def apply_separable(x: torch.Tensor, mats: list[torch.Tensor], first_dim: int = 1) -> torch.Tensor:
    """Apply one matrix per axis, to axes ``first_dim``, ``first_dim + 1``, ... in turn."""
    for offset, mat in enumerate(mats):
        x = apply_along(x, mat, first_dim + offset)
    return x
