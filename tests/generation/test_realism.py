"""The realism measurement: distances sit at their real-vs-real floor for films of one kind and grow for another,
the discriminator tells different sets apart and not like ones, and the command writes its table and sheet."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from synthvlp.cli import app
from synthvlp.errors import UserError
from synthvlp.generation.realism import Films, Protocol, measure
from synthvlp.generation.realism.discriminator import discriminator_auc
from synthvlp.generation.realism.distances import NAMES, contrast, distances
from synthvlp.generation.realism.probes import probe
from synthvlp.store import write_shard


def _films(seed: int, n: int, size: int = 32, lung: float = 0.3, noise: float = 0.0) -> np.ndarray:
    """Chest-like toy films: a bright frame and mediastinum, two darker lung ovals, smooth random texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    ovals = sum(((y - 0.45) / 0.3) ** 2 + ((x - cx) / 0.15) ** 2 < 1 for cx in (0.28, 0.72))
    out = []
    for _ in range(n):
        shade = rng.normal(0, 0.03)
        coarse = rng.normal(0, 0.05, (4, 4))
        texture = np.kron(coarse, np.ones((size // 4, size // 4)))
        film = 0.8 + shade + texture - (0.8 - lung) * ovals + noise * rng.standard_normal((size, size))
        out.append(np.clip(film, 0, 1).astype(np.float32))
    return np.stack(out)


def _set(images: np.ndarray) -> Films:
    held_out = np.arange(len(images)) % 3 == 0
    return Films(images, held_out, [str(i) for i in range(len(images))])


def test_contrast_reads_mediastinum_over_lungs():
    films = _films(0, 4, size=64, lung=0.3)
    assert np.allclose(contrast(films), 0.5, atol=0.1)  # the lung ovals sit 0.5 below the rest, texture aside


@pytest.mark.parametrize("name", NAMES)
def test_distance_is_near_its_floor_for_like_films_and_larger_for_unlike_ones(name):
    a, b = _films(1, 60), _films(2, 60)
    unlike = _films(3, 60, lung=0.55, noise=0.15)
    assert distances(a, unlike)[name] > 3 * distances(a, b)[name], (distances(a, unlike), distances(a, b))


def test_discriminator_separates_unlike_sets_only():
    protocol = Protocol(steps=40, batch_size=16, input_size=32, seeds=(0, 1))
    real = _set(_films(4, 90))
    like = _set(_films(5, 90))
    unlike = _set(_films(6, 90, lung=0.5, noise=0.1))
    assert np.mean(discriminator_auc(real, unlike, protocol)) > 0.9
    assert np.mean(discriminator_auc(real, like, protocol)) < 0.75


def _lopsided(seed: int, n: int, size: int = 32) -> np.ndarray:
    """Toy films whose left lung is always darker than the right one: mirrored, their layout changes and their
    histogram does not."""
    films = _films(seed, n, size)
    films[:, :, : size // 2] *= 0.85
    return films


def test_layout_probe_sees_a_mirrored_layout_and_the_intensity_probe_does_not():
    real, mirrored = _set(_lopsided(11, 120)), _set(_lopsided(12, 120)[:, :, ::-1].copy())
    found = probe(real, mirrored)
    assert found.layout > 0.95 and found.intensity < 0.7, found
    cells = np.asarray(found.cell_auc)
    assert cells[:, :4].mean() > 0.65 and cells[:, 4:].mean() < 0.35, cells  # mirrored: the left half is brighter


def test_intensity_probe_sees_a_contrast_change_and_the_layout_probe_does_not():
    real, flat = _set(_films(13, 120)), _set(0.5 + 0.6 * (_films(14, 120) - 0.5))
    found = probe(real, flat)
    assert found.intensity > 0.95 and found.layout < 0.7, found


def test_probes_find_nothing_between_like_sets():
    found = probe(_set(_films(15, 120)), _set(_films(16, 120)))
    assert found.layout < 0.7 and found.intensity < 0.7, found


def _png(film: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.round(film * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_realism_command_writes_table_figures_and_sheet(tmp_path):
    run = tmp_path / "run"
    write_shard(run / "images" / "shard-000000.tar", [{"__key__": f"s{i:08d}", "png": _png(f)} for i, f in enumerate(_films(7, 40))])
    real = tmp_path / "real"
    (real / "images").mkdir(parents=True)
    rows = ["path,split"]
    for i, film in enumerate(_films(8, 40)):
        (real / "images" / f"{i}.png").write_bytes(_png(film))
        rows.append(f"images/{i}.png,{'test' if i % 3 == 0 else 'train'}")
    (real / "labels.csv").write_text("\n".join(rows) + "\n")
    args = ["render", "realism", str(run), "--real", str(real), "--size", "32", "--steps", "5", "--seeds", "2", "--input-size", "16"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    figures = json.loads((run / "realism" / "realism.json").read_text())
    assert len(figures["auc"]) == 2 and set(figures["distances"]) == set(NAMES)
    assert "discriminator AUC" in (run / "realism" / "realism.md").read_text()
    assert Image.open(run / "realism" / "sheet.png").width > 0
    assert len(figures["probes"]["cell_auc"]) == 8 and "layout probe AUC" in result.output
    assert Image.open(run / "realism" / "blocks.png").width > 0
    missing = CliRunner().invoke(app, ["render", "realism", str(run), "--real", str(tmp_path / "nowhere")])
    assert isinstance(missing.exception, UserError) and "nowhere" in str(missing.exception)


def test_measure_refuses_films_of_different_sizes():
    with pytest.raises(ValueError, match="differ in size"):
        measure(_set(_films(0, 30, size=32)), _set(_films(0, 30, size=64)))


def test_calibration_fits_ranges_and_writes_a_fragment_the_renderer_reads(tmp_path):
    import yaml

    from synthvlp.config import RunConfig
    from synthvlp.generation.renderers.phantom import phantom_appearance
    from synthvlp.generation.phantom.appearance import Appearance
    from synthvlp.generation.realism.calibrate import calibrate, fragment

    real = _set(_films(9, 40))
    fit = calibrate(real, films=20, size=32, iterations=6)
    assert fit.best <= fit.start and set(fit.terms) == set(NAMES)
    ranges = yaml.safe_load(fragment(fit, "toy films"))["images"]["appearance"]
    assert len(ranges["tone"]) == 33 and len(set(ranges["tone"])) > 2
    assert Appearance.from_dict(ranges) == fit.appearance
    config = RunConfig.model_validate({"images": {"appearance": ranges}})
    assert phantom_appearance(config) == fit.appearance


def test_appearance_settings_are_checked():
    from synthvlp.config import RunConfig
    from synthvlp.errors import ConfigError
    from synthvlp.generation.renderers.phantom import phantom_appearance

    with pytest.raises(Exception, match="low 2.0 is above high 1.0"):
        RunConfig.model_validate({"images": {"appearance": {"noise": [2.0, 1.0]}}})
    with pytest.raises(ConfigError, match="images.appearance: unknown appearance setting"):
        phantom_appearance(RunConfig.model_validate({"images": {"appearance": {"sparkle": [0.0, 1.0]}}}))
    with pytest.raises(Exception, match="tone: levels must not decrease, 0.6 then 0.5"):
        RunConfig.model_validate({"images": {"appearance": {"tone": [0.0, 0.6, 0.5, 1.0]}}})
    with pytest.raises(ConfigError, match=r"tone: a look-up table is 2 or more non-decreasing levels in \[0, 1\]"):
        phantom_appearance(RunConfig.model_validate({"images": {"appearance": {"tone": [0.0, 0.6, 1.2]}}}))
    with pytest.raises(Exception, match=r"noise: a range is \[low, high\]"):  # when the config is read, not when images start
        RunConfig.model_validate({"images": {"appearance": {"noise": [0.0, 0.01, 0.02]}}})


def test_tone_maps_film_levels_and_none_leaves_the_film_alone():
    from synthvlp.generation.phantom.appearance import apply_tone

    film = np.array([[0.0, 0.25], [0.75, 1.0]], dtype=np.float32)
    assert apply_tone(film, ()) is film
    assert np.allclose(apply_tone(film, (0.0, 0.5, 1.0)), film)
    toned = apply_tone(film, (0.0, 0.0, 1.0))
    assert toned.dtype == np.float32 and np.allclose(toned, [[0.0, 0.0], [0.5, 1.0]])


def test_fitted_tone_undoes_a_monotone_distortion_of_the_histogram():
    from synthvlp.generation.phantom.appearance import apply_tone
    from synthvlp.generation.realism.calibrate import fit_tone
    from synthvlp.generation.realism.distances import histograms

    real, other = _films(9, 40), _films(10, 40)
    distorted = other**2.5  # darker films: a different display curve of the same kind of films
    tone = fit_tone(distorted, histograms(real).sum(axis=0), 33)
    assert len(tone) == 33 and all(b >= a for a, b in zip(tone, tone[1:]))
    before = distances(distorted, real)["histogram"]
    after = distances(apply_tone(distorted, tone), real)["histogram"]
    assert after < 0.15 * before, (before, after)
    assert after < 2 * distances(other, real)["histogram"] + 1e-3  # about as close as undistorted films


def test_develop_applies_the_tone_last_and_findings_stay_inside_their_masks():
    """The look-up table works pixel by pixel on the finished film, so a finding still changes the film only
    inside its mask and halo."""
    from scipy.ndimage import binary_dilation

    from synthvlp.generation import phantom
    from synthvlp.generation.phantom.appearance import Appearance, apply_tone, halo

    tone = (0.0, 0.02, 0.3, 0.7, 1.0)
    effusion = [{"name": "pleural effusion", "category": "ABNORMALITY", "assertion": "present", "laterality": "left"}]
    plain = phantom.project([], 64, np.random.default_rng(3))
    sick = phantom.project(effusion, 64, np.random.default_rng(3))
    toned = phantom.develop(sick, Appearance(tone=tone))
    assert np.array_equal(toned, apply_tone(phantom.develop(sick, Appearance()), tone))
    mask = np.asarray(sick.effects[0].shape) >= 0.5
    reach = halo(64)
    grown = binary_dilation(mask, np.ones((2 * reach + 1, 2 * reach + 1), bool))
    changed = toned != phantom.develop(plain, Appearance(tone=tone))
    assert changed[mask].any() and not changed[~grown].any()


def test_calibrate_command_writes_a_fragment(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    for i, film in enumerate(_films(10, 60)):  # a fixed hash holds out ~30% without a split column
        (real / f"{i}.png").write_bytes(_png(film))
    out = tmp_path / "appearance.yaml"
    result = CliRunner().invoke(app, ["render", "calibrate", "--real", str(real), "--out", str(out), "--films", "20", "--size", "32", "--iterations", "2"])
    assert result.exit_code == 0, result.output
    assert "appearance:" in out.read_text() and "objective" in result.output
