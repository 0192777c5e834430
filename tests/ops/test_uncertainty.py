"""The uncertainty of each coordinate (``Refined.uncertainty``, the ``x_err``... columns) against the truth."""

import numpy as np
import pytest

import peakloc
from peakloc.ops.subpixel.dark import gaussian_bound
from peakloc.ops.windows import PeakShape

from ..conftest import gaussian


def _noisy(rng, n, shape, sigma, noise=0.0, background=0.0, counts=None):
    centres = rng.uniform(np.array(shape) / 2 - 3, np.array(shape) / 2 + 3, (n, len(shape)))
    maps = np.stack([gaussian(shape, c, sigma=sigma) for c in centres]) + background
    if counts:
        maps = rng.poisson(maps * counts).astype(np.float64)
    else:
        maps = maps + rng.normal(0, noise, maps.shape)
    return maps, centres


def _z(maps, centres, method="gaussian"):
    ndim = maps.ndim - 1
    start = peakloc.argmax(maps, ndim=ndim)[:, None, :]
    found = peakloc.refine(maps, start, method=method, ndim=ndim, full_output=True)
    error, reported = found.coords[:, 0] - centres, found.uncertainty[:, 0]
    assert np.all(np.isfinite(reported) & (reported > 0))
    return error / reported


# 400 maps: the SD of z is known to about 4%; a 12% band leaves room for that and catches a 20% miscalibration.
@pytest.mark.parametrize(
    "shape, sigma, noise, background, counts",
    [
        ((48, 40), 2.0, 0.05, 0.3, None),  # white noise over a background
        ((48, 40), 2.0, 0.1, 0.0, None),  # white noise, nothing clipped
        ((48, 40), 2.0, 0.0, 0.05, 400),  # Poisson: the variance grows with the signal
        ((20, 20, 20), 1.5, 0.05, 0.3, None),  # a volume
    ],
)
def test_gaussian_errors_over_their_uncertainty_have_unit_spread(shape, sigma, noise, background, counts):
    rng = np.random.default_rng(11)
    z = _z(*_noisy(rng, 400 if len(shape) == 2 else 200, shape, sigma, noise, background, counts))
    band = 0.12 if len(shape) == 2 else 0.15
    assert np.all(np.abs(z.std(axis=0) - 1) < band), z.std(axis=0)


def test_gaussian_uncertainty_follows_the_noise():
    rng = np.random.default_rng(3)
    maps, centres = _noisy(rng, 100, (48, 40), 2.0, 0.0, 0.3)
    noise = rng.normal(0, 1, maps.shape)
    start = peakloc.argmax(maps, ndim=2)[:, None, :]
    low = peakloc.refine(maps + 0.02 * noise, start, method="gaussian", full_output=True).uncertainty
    high = peakloc.refine(maps + 0.08 * noise, start, method="gaussian", full_output=True).uncertainty
    np.testing.assert_allclose(np.median(high / low), 4.0, rtol=0.1)


def test_dark_uncertainty_is_the_fisher_bound_of_a_gaussian_centre():
    # Independent: sum the squared derivative of the model with respect to the centre over a pixel grid.
    amplitude, sigma, noise = 2.0, 1.7, 0.1
    yy, xx = np.mgrid[-30:31, -30:31].astype(float)
    derivative = amplitude * np.exp(-(xx**2 + yy**2) / (2 * sigma**2)) * xx / sigma**2
    bound = noise / np.sqrt(np.sum(derivative**2))
    one = np.ones(1)
    shape = PeakShape(sigma * one, 0 * one, amplitude * one, noise * one)
    np.testing.assert_allclose(gaussian_bound(shape, 2), bound, rtol=1e-3)


def test_quadratic_uncertainty_matches_its_scatter_on_bright_peaks():
    rng = np.random.default_rng(5)
    z = _z(*_noisy(rng, 400, (48, 40), 2.0, 0.01, 0.3), method="quadratic")
    assert np.all(np.abs(z.std(axis=0) - 1) < 0.25), z.std(axis=0)


def test_methods_without_a_noise_model_and_fallbacks_have_no_uncertainty():
    heat = np.zeros((20, 20))
    heat[5, 5] = 1.0  # a single-pixel spike: quadratic and gaussian fall back
    found = peakloc.refine(heat, [[5, 5]], method="quadratic", full_output=True)
    assert found.fallback[0] and np.all(np.isnan(found.uncertainty))
    smooth = gaussian((20, 20), (9.3, 10.6))
    local = peakloc.refine(smooth, [[9, 11]], method="local", full_output=True)
    assert local.uncertainty.shape == (1, 2) and np.all(np.isnan(local.uncertainty))


def test_table_gives_the_error_of_each_axis_and_leaves_others_empty(tmp_path):
    import csv
    import io

    from click.testing import CliRunner

    from peakloc.cli import main

    rng = np.random.default_rng(1)
    volume = gaussian((16, 20, 24), (7.2, 9.6, 11.1)) + 0.3 + rng.normal(0, 0.02, (16, 20, 24))
    np.save(tmp_path / "v.npy", volume)
    result = CliRunner().invoke(main, ["find", str(tmp_path / "v.npy"), "-m", "argmax,gaussian", "--extra", "-q"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["method"] for r in rows] == ["argmax", "gaussian"]
    assert rows[0]["x_err"] == rows[0]["y_err"] == rows[0]["z_err"] == ""
    errors = [float(rows[1][k]) for k in ("x_err", "y_err", "z_err")]
    assert all(0 < e < 0.05 for e in errors)
    truth = {"x": 11.1, "y": 9.6, "z": 7.2}
    assert all(abs(float(rows[1][a]) - truth[a]) < 5 * float(rows[1][f"{a}_err"]) for a in truth)


def test_a_damaged_fit_has_no_uncertainty_and_spares_the_others():
    from peakloc.ops.subpixel.gaussian import _pinv

    good = np.diag([4.0, 2.0])
    out = _pinv(np.stack([good, np.full((2, 2), np.inf), np.array([[np.nan, 0], [0, 1.0]]), good]))
    np.testing.assert_allclose(out[0], np.diag([0.25, 0.5]))
    np.testing.assert_allclose(out[3], np.diag([0.25, 0.5]))
    assert np.isnan(out[1]).all() and np.isnan(out[2]).all()


def test_the_noise_of_a_camera_frame_is_one_model_for_all_its_spots():
    # Frames of 12 spots each, as a camera records them: pixel-integrated, offset 100, Poisson noise. One
    # spot's few samples leave its shot noise uncertain, and its error bar with it; pooled over the frame's
    # spots, errors over their uncertainty have unit spread (per spot alone: 1.1-1.2 on such a movie).
    from peakloc.io.axes import Layout
    from peakloc.run.locate import locate
    from peakloc.run.settings import Settings

    from ..conftest import pixel_gaussian

    rng = np.random.default_rng(11)
    frames, truth = [], []
    grid = np.array([(y, x) for y in (12, 36, 60) for x in (12, 36, 60, 84)], float)
    for _ in range(40):
        centres = grid + rng.uniform(-2, 2, grid.shape)
        photons = 800 * rng.lognormal(0, 0.3, len(centres))
        expected = 20 + sum(
            p / (2 * np.pi * 1.3**2) * pixel_gaussian((72, 96), c, 1.3) for c, p in zip(centres, photons)
        )
        frames.append(rng.poisson(expected) + 100.0)
        truth.append(centres)
    located = locate(
        np.stack(frames),
        Layout("B", (40,), "YX", (72, 96)),
        Settings(methods=("gaussian",), peaks=12, min_distance=3, extra=True),
    )
    g = located.peaks["gaussian"]
    z = []
    for b, centres in enumerate(truth):
        found, error = g.coords[b][g.present[b]], g.error[b][g.present[b]]
        nearest = np.argmin(np.linalg.norm(found[:, None] - centres[None], axis=2), axis=0)
        z.append((found[nearest] - centres) / error[nearest])
    z = np.concatenate(z)
    assert len(z) == 480 and np.all(np.isfinite(z))
    assert np.all((z.std(axis=0) > 0.9) & (z.std(axis=0) < 1.1))


def test_the_noise_line_of_a_heatmap_leaves_out_a_fit_whose_residuals_exceed_it():
    from peakloc.ops.subpixel.gaussian import pooled_noise

    # Ten fits of 100 samples each with white noise of variance 1 (sums: count, x, x^2, y, x y; x = 0), and
    # one spot with a neighbour's tail in its window: ten times the residuals. On their own heatmap, a fit
    # whose residuals are those of the others is kept.
    stats = np.array([[100, 0, 0, 100 * v, 0] for v in [1.0] * 10 + [10.0]], float)
    a, b = pooled_noise(np.concatenate([stats, stats[:1]]), np.array([0] * 11 + [1]))
    np.testing.assert_allclose(a, 1.0)
    np.testing.assert_allclose(b, 0.0)


def test_a_spot_wider_than_the_others_of_its_frame_has_an_error_bar_that_covers_the_pair_it_hides():
    # Ten isolated spots and, at (36, 48), two spots 1.4 sigma apart along x: one peak, a little wider than
    # the others, fitted between the two. Its x error must reach the half distance to them; the isolated
    # spots' error bars keep to their noise.
    from ..conftest import pixel_gaussian

    rng = np.random.default_rng(5)
    grid = np.array([(y, x) for y in (12, 60) for x in (12, 30, 48, 66, 84)], float)
    pair = np.array([[36.2, 48.0 - 0.91], [36.2, 48.0 + 0.91]])
    centres = np.concatenate([grid + rng.uniform(-1, 1, grid.shape), pair])
    expected = 20 + sum(1000 / (2 * np.pi * 1.3**2) * pixel_gaussian((72, 96), c, 1.3) for c in centres)
    frame = rng.poisson(expected) + 100.0
    found = peakloc.find_peaks(frame, 2, num_peaks=11, min_distance=3)
    result = peakloc.refine(frame, found, method="gaussian", full_output=True)
    coords, error = result.coords, result.uncertainty
    merged = np.argmin(np.linalg.norm(coords - pair.mean(axis=0), axis=1))
    assert np.linalg.norm(coords[merged] - pair.mean(axis=0)) < 0.3  # one fit, between the two
    assert error[merged, 1] >= 0.7 * 0.91
    isolated = np.delete(np.arange(len(coords)), merged)
    assert np.all(error[isolated] < 0.1)
