"""Random appearance: shapes, reproducibility, each step on its own, and statistics against the reference recipe."""

import math

import pytest
import torch
import torch.nn.functional as F

from synthvlp.rasd.appearance import RandAppearance
from synthvlp.rasd.config import AppearanceConfig, FieldsConfig
from synthvlp.rasd.fields import RandLabelMap

OFF = dict(bias_std=(0.0, 0.0), noise_std=(0.0, 0.0), blur_sigma=(0.0, 0.0), gamma=(1.0, 1.0), normalize=False)


def blur_full(x: torch.Tensor, sigmas: list[float]) -> torch.Tensor:
    """The reference's separable blur: a 3-sigma (max) kernel per axis, zero padding."""
    for axis, sigma in enumerate(sigmas):
        radius = max(1, round(3 * sigma))
        taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-taps.square() / (2 * sigma**2))
        shape = [1, 1, 1, 1]
        shape[2 + axis] = -1
        pad = [0, 0, 0, 0]
        pad[2 * (1 - axis)] = pad[2 * (1 - axis) + 1] = radius
        x = F.conv2d(F.pad(x, pad), (kernel / kernel.sum()).view(shape))
    return x


def naive_appearance(labels: torch.Tensor, num_labels: int, gen: torch.Generator) -> torch.Tensor:
    """The reference chain on 2D maps, written plainly at full size with its default ranges."""
    out = []
    for lab in labels:
        mean = torch.rand(num_labels, generator=gen)
        image = mean[lab][None]  # (1, 1, H, W)
        white = torch.randn(image.shape, generator=gen) * (0.01 + 0.09 * torch.rand(1, generator=gen))
        fwhm = 16 + 16 * torch.rand(2, generator=gen)
        field = blur_full(white, (fwhm / 2.355).tolist())
        image = image * torch.exp(field * white.max() / field.max())
        noise_sd = (0.05 + 0.35 * torch.rand(1, generator=gen)) * image.abs().max()
        image = image + torch.randn(image.shape, generator=gen) * noise_sd
        image = blur_full(image, (torch.rand(2, generator=gen) + 1e-3).tolist())
        image = (image - image.min()) / (image.max() - image.min() + 1e-6)
        out.append(image.pow(0.5 + torch.rand(1, generator=gen))[0])
    return torch.stack(out)


@pytest.mark.parametrize("spatial", [(24, 20), (10, 12, 8)])
def test_shapes_range_reproducible(spatial):
    labels = torch.randint(0, 5, (3, 1, *spatial))
    app = RandAppearance(seed=4)
    image = app(labels, 5)
    assert image.shape == labels.shape and image.dtype == torch.float32
    assert 0 <= float(image.min()) and float(image.max()) <= 1
    assert torch.equal(app.set_random_state(4)(labels, 5), image)
    assert not torch.equal(app(labels, 5), image)


def test_global_rng_untouched_and_input_kept():
    image = torch.linspace(0, 1, 256).view(1, 1, 16, 16)
    copy, state = image.clone(), torch.random.get_rng_state()
    RandAppearance()(image)
    assert torch.equal(torch.random.get_rng_state(), state) and torch.equal(image, copy)


def test_all_off_gives_per_label_means():
    labels = torch.randint(0, 4, (2, 1, 12, 12))
    image = RandAppearance(AppearanceConfig(**OFF))(labels, 4)
    for b in range(2):
        for k in labels[b].unique():
            values = image[b][labels[b] == k]
            assert torch.allclose(values, values[0].expand_as(values))


def test_per_label_std_adds_texture():
    labels = torch.zeros(1, 1, 32, 32, dtype=torch.long)
    image = RandAppearance(AppearanceConfig(**{**OFF, "std": (0.2, 0.2)}))(labels, 1)
    assert 0.15 < float(image.std()) < 0.25


def test_float_image_input_for_renderers():
    image = torch.linspace(0, 1, 64 * 64).view(1, 1, 64, 64)
    out = RandAppearance(seed=1)(image)
    assert out.shape == image.shape and not torch.equal(out, image)


def test_bias_field_amplitude_and_smoothness():
    app = RandAppearance(AppearanceConfig(bias_std=(0.1, 0.1), bias_fwhm=(24.0, 24.0)), seed=2)
    field = app.log_bias(4, (96, 96))
    expected_max = 0.1 * math.sqrt(2 * math.log(96 * 96))  # sd x typical max of N normals
    peaks = field.abs().flatten(1).amax(1)
    assert torch.all((peaks > 0.7 * expected_max) & (peaks < 1.3 * expected_max))
    step = (field[..., 1:] - field[..., :-1]).abs().mean()
    assert step < 0.15 * field.abs().mean()  # correlation length ~ sigma * sqrt(2) = 14 voxels


def test_bias_field_correlation_matches_blurred_white_noise():
    """Lag correlation of our coarse-grid field and of full-size blurred white noise (the reference)."""
    gen = torch.Generator().manual_seed(0)
    ours = RandAppearance(AppearanceConfig(bias_fwhm=(20.0, 20.0)), seed=0).log_bias(16, (128, 128))
    white = torch.randn(16, 1, 128, 128, generator=gen)
    theirs = blur_full(white, [20 / 2.355] * 2)

    def corr(field, lag):
        field = field - field.mean(dim=(-1, -2), keepdim=True)
        inner = field[..., 32:96, 32:96]
        shifted = field[..., 32:96, 32 + lag : 96 + lag]
        return float((inner * shifted).mean() / inner.square().mean())

    for lag in (4, 8, 16):
        assert corr(ours, lag) == pytest.approx(corr(theirs, lag), abs=0.08)


def test_intensity_histogram_matches_reference_chain():
    labels = RandLabelMap(FieldsConfig(num_labels=16), (96, 96), seed=0)(48)
    ours = RandAppearance(seed=0)(labels, 16)
    theirs = naive_appearance(labels, 16, torch.Generator().manual_seed(1))
    again = naive_appearance(labels, 16, torch.Generator().manual_seed(2))
    bins = dict(bins=20, min=0.0, max=1.0)
    hist = [torch.histc(x, **bins) / x.numel() for x in (ours, theirs, again)]
    same_recipe = (hist[1] - hist[2]).abs().sum()
    assert (hist[0] - hist[1]).abs().sum() < max(2 * same_recipe, 0.1)
    doing_less = RandAppearance(AppearanceConfig(noise_std=(0.0, 0.0)), seed=0)(labels, 16)
    assert (torch.histc(doing_less, **bins) / doing_less.numel() - hist[1]).abs().sum() > 3 * same_recipe
    for statistic in (torch.mean, torch.std):
        assert float(statistic(ours)) == pytest.approx(float(statistic(theirs)), abs=0.03)
