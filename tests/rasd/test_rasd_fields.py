"""Random label maps: shapes, reproducibility, own RNG, and equality with a naive full-resolution build."""

import pytest
import torch
import torch.nn.functional as F

from synthvlp.rasd.config import FieldsConfig
from synthvlp.rasd.fields import RandLabelMap
from synthvlp.rasd.separable import apply_separable, common_grid, interp_matrix


def naive_label_map(config: FieldsConfig, size: tuple[int, ...], batch: int, seed: int) -> torch.Tensor:
    """The reference's recipe at full resolution (every field and displacement upsampled, then warped).

    It consumes the same random numbers in the same order as ``RandLabelMap``, so the two must agree.
    """
    gen = torch.Generator().manual_seed(seed)
    ndim, k = len(size), config.num_labels
    mode = "bilinear" if ndim == 2 else "trilinear"

    def up(x):
        return F.interpolate(x, size=size, mode=mode, align_corners=True)

    fields = torch.zeros(batch, k, *size)
    for n in config.field_grids:
        std = torch.rand(batch, generator=gen) * config.field_std_max
        noise = torch.randn(batch, k, *([n] * ndim), generator=gen) * std.view(batch, 1, *([1] * ndim))
        fields += up(noise)
    flow_std = torch.rand(batch, len(config.flow_grids), generator=gen)
    coefs = [
        torch.randn(batch, k, *([n] * ndim), ndim, generator=gen) * flow_std[:, j].view(-1, *([1] * (ndim + 1)), 1)
        for j, n in enumerate(config.flow_grids)
    ]
    axes = torch.tensor(size[::-1], dtype=torch.float32)
    identity = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, s) for s in size], indexing="ij")[::-1], -1)
    best, labels = torch.full((batch, 1, *size), -torch.inf), torch.zeros(batch, 1, *size, dtype=torch.long)
    for label in range(k):
        flow = sum(up(coef[:, label].movedim(-1, 1)) for coef in coefs)
        flow = flow.movedim(1, -1) * config.flow_std_max * axes  # voxels
        grid = identity + flow * 2 / (axes - 1)
        value = F.grid_sample(fields[:, label : label + 1], grid, align_corners=True, padding_mode=config.padding)
        better = value > best
        best, labels = torch.where(better, value, best), labels.masked_fill(better, label)
    return labels


# sizes with (size - 1) a multiple of 21, so the naive build's full-size field interpolates the 8- and 4-node
# grids exactly too (elsewhere it is itself an approximation, off by a voxel at some label borders)
@pytest.mark.parametrize("size", [(64, 43), (22, 22, 22)])
@pytest.mark.parametrize("padding", ["border", "zeros"])
@pytest.mark.parametrize("max_voxels", [1, 2**23])  # one field per pass, or all at once
def test_equals_naive_full_resolution_build(size, padding, max_voxels):
    config = FieldsConfig(num_labels=5, padding=padding, flow_std_max=0.125)
    fast = RandLabelMap(config, size, seed=3, max_voxels=max_voxels)(2)
    slow = naive_label_map(config, size, 2, seed=3)
    assert (fast == slow).float().mean() > 0.999


@pytest.mark.parametrize("size", [(32, 24), (12, 10, 8)])
def test_shapes_range_and_reproducibility(size):
    gen = RandLabelMap(FieldsConfig(num_labels=4), size, seed=5)
    first = gen(3)
    assert first.shape == (3, 1, *size) and first.dtype == torch.int64
    assert 0 <= int(first.min()) and int(first.max()) < 4
    assert torch.equal(gen.set_random_state(5)(3), first)
    assert not torch.equal(gen(3), first)


def test_global_rng_untouched():
    state = torch.random.get_rng_state()
    RandLabelMap(FieldsConfig(num_labels=3), (16, 16), seed=0)(1)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_default_3d_setting_uses_every_label():
    labels = RandLabelMap(FieldsConfig(num_labels=8), (64, 64, 64), seed=0)(1)
    assert torch.bincount(labels.flatten(), minlength=8).gt(0).all()


def test_common_grid_interpolation_is_exact():
    coarse = torch.randn(1, 4)
    refined = apply_separable(coarse, [interp_matrix(4, common_grid((8, 4), 100))])
    direct = coarse @ interp_matrix(4, 50).T
    via_refined = refined @ interp_matrix(common_grid((8, 4), 100), 50).T
    assert torch.allclose(direct, via_refined, atol=1e-5)


def test_config_rejects_one_node_grids():
    with pytest.raises(ValueError, match="at least 2 nodes"):
        FieldsConfig(flow_grids=(16, 1))
