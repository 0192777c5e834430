import numpy as np
import pytest

import peakloc
from peakloc.ops.subpixel import refine_flat

from ..conftest import gaussian, pixel_gaussian


def _anisotropic(shape, centre, cov):
    grids = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"), -1)
    d = grids - centre
    return np.exp(-0.5 * np.einsum("...i,ij,...j->...", d, np.linalg.inv(cov), d))


def _maps(rng, n=40, shape=(64, 48), **kwargs):
    centres = rng.uniform(10, np.array(shape) - 10, size=(n, len(shape)))
    maps = np.stack([gaussian(shape, c, **kwargs) for c in centres])
    return maps, centres


def _refine(maps, method, **kwargs):
    ndim = maps.ndim - 1
    start = peakloc.argmax(maps, ndim=ndim)[:, None, :]
    return peakloc.refine(maps, start, method=method, ndim=ndim, full_output=True, **kwargs)


@pytest.mark.parametrize("method", ["quadratic", "dark", "gaussian"])
def test_exact_methods_find_noise_free_gaussian_centres(rng, method):
    maps, centres = _maps(rng)
    result = _refine(maps, method)
    assert not result.fallback.any()
    np.testing.assert_allclose(result.coords[:, 0], centres, atol=1e-3)


@pytest.mark.parametrize("method", ["quadratic", "dark", "gaussian"])
def test_exact_methods_work_in_3d(rng, method):
    maps, centres = _maps(rng, n=10, shape=(24, 26, 28), sigma=1.8)
    np.testing.assert_allclose(_refine(maps, method).coords[:, 0], centres, atol=2e-3)


def test_local_soft_argmax_beats_half_a_pixel(rng):
    maps, centres = _maps(rng)
    err = np.abs(_refine(maps, "local", beta=1.0, normalize="none").coords[:, 0] - centres)
    assert err.max() < 0.5


def test_gaussian_fit_handles_background_and_a_width_per_axis(rng):
    # Spots as a camera records them: integrated over each pixel, the model gaussian fits.
    sigma = np.array([2.0, 1.5])
    centres = rng.uniform(12, 36, size=(20, 2))
    maps = np.stack([0.3 + pixel_gaussian((48, 48), c, sigma) for c in centres])
    result = _refine(maps, "gaussian")
    np.testing.assert_allclose(result.coords[:, 0], centres, atol=1e-4)
    np.testing.assert_allclose(result.sigma[:, 0], np.sqrt(sigma.prod()), rtol=1e-3)
    np.testing.assert_allclose(result.amplitude[:, 0], 1.0, rtol=1e-3)


@pytest.mark.parametrize(
    "pixels", [np.arange(-6.0, 7.0), np.array([-6.0, -4.0, -1.0, 0.0, 2.0, 5.0])], ids=["box", "scattered"]
)
def test_the_pixel_integrated_profile_and_its_derivatives_match_numerical_integration(pixels):
    from scipy.integrate import quad

    from peakloc.ops.subpixel import gaussian as g

    x = pixels[None]
    theta = np.array([[0.3, 1.0, 0.0, 1 / 1.3**2]])  # centre 0.3, amplitude, background, precision

    def integrated(t):
        mu, p = t[0, 0], t[0, 3]
        return np.array([quad(lambda u: np.exp(-0.5 * p * (u - mu) ** 2), c - 0.5, c + 0.5)[0] for c in x[0]])

    e, by_centre, by_precision = g._profiles(theta, [x], 1).axis(0)
    np.testing.assert_allclose(e[0, 0], integrated(theta), rtol=5e-7, atol=1e-12)  # erfc_abs: 1.2e-7 of itself
    for column, got in ((0, by_centre), (3, by_precision)):
        step = np.zeros_like(theta)
        step[0, column] = 1e-5
        numeric = (integrated(theta + step) - integrated(theta - step)) / 2e-5
        np.testing.assert_allclose(got[0, 0], numeric, rtol=1e-5, atol=1e-8)


def test_erfc_abs_is_scipys_erfc_within_its_published_relative_error():
    from scipy.special import erfc

    from peakloc.ops.subpixel.gaussian import erfc_abs

    x = np.concatenate([np.linspace(-26.0, 26.0, 100001), [0.0, np.inf, -np.inf]])
    with np.errstate(over="ignore"):
        got = erfc_abs(x, np.exp(-x * x))
    np.testing.assert_allclose(got, erfc(np.abs(x)), rtol=1.2e-7, atol=0)


def test_gaussian_fit_of_a_rotated_elongated_peak_stays_within_a_hundredth_of_a_pixel(rng):
    # The model's widths lie along the array axes; a rotated peak is still symmetric about its centre.
    cov = np.array([[4.0, 1.5], [1.5, 2.25]])
    centres = rng.uniform(12, 36, size=(20, 2))
    maps = np.stack([0.3 + _anisotropic((48, 48), c, cov) for c in centres])
    np.testing.assert_allclose(_refine(maps, "gaussian").coords[:, 0], centres, atol=1e-2)


def test_gaussian_fit_treats_saturated_tops_as_censored(rng):
    maps, centres = _maps(rng)
    clipped = np.minimum(1.5 * maps, 1.0)
    np.testing.assert_allclose(_refine(clipped, "gaussian").coords[:, 0], centres, atol=5e-3)
    eight_bit = np.round(np.minimum(1.5 * maps, 1.0) * 255).astype(np.uint8)
    err = np.abs(_refine(eight_bit, "gaussian").coords[:, 0] - centres)
    assert np.sqrt((err**2).mean()) < 0.02


@pytest.mark.parametrize("method", ["local", "quadratic", "dark", "gaussian"])
def test_peaks_on_the_border_stay_inside_and_finite(method):
    maps = np.stack([gaussian((20, 20), (0.0, 19.0)), gaussian((20, 20), (19.0, 0.3))])
    result = _refine(maps, method)
    assert np.isfinite(result.coords).all()
    assert (result.coords >= 0).all() and (result.coords <= 19).all()
    if method == "dark":
        assert result.fallback.all()  # MMPose's stencil needs two pixels on each side


def test_flat_or_non_positive_neighbourhoods_fall_back_to_the_integer_peak():
    flat = np.zeros((2, 9, 9))
    flat[0, 4, 4] = 1
    flat[0, 4, 5] = 1
    flat[1] = -np.abs(np.arange(81).reshape(9, 9) - 40.0)
    peaks = np.array([[[4, 4]], [[4, 4]]])
    result = peakloc.refine(flat, peaks, method="quadratic", full_output=True)
    assert result.fallback.all()
    np.testing.assert_array_equal(result.coords, peaks)


def test_refine_keeps_the_shape_of_its_peaks():
    heat = gaussian((30, 30), (10.2, 20.7)) + gaussian((30, 30), (22.6, 5.1))
    single = peakloc.refine(heat, peakloc.find_peaks(heat, num_peaks=2), method="gaussian")
    assert single.shape == (2, 2)
    np.testing.assert_allclose(single, [[10.2, 20.7], [22.6, 5.1]], atol=2e-3)
    batch = peakloc.refine(np.stack([heat, heat]), np.array([[[10, 21]], [[23, 5]]]), method="dark")
    assert batch.shape == (2, 1, 2)


def test_refine_refuses_peaks_outside_or_of_the_wrong_shape():
    with pytest.raises(ValueError, match="inside the heatmap"):
        peakloc.refine(np.ones((5, 5)), [[5, 0]])
    with pytest.raises(ValueError, match="must have shape"):
        peakloc.refine(np.ones((5, 5)), [[1, 2, 3]])


def test_refine_reads_a_torch_tensor():
    torch = pytest.importorskip("torch")
    heat = gaussian((30, 30), (10.2, 20.7))
    np.testing.assert_allclose(peakloc.refine(torch.tensor(heat), [[10, 21]], method="quadratic"), [[10.2, 20.7]])


def test_noisy_maps_gaussian_fit_is_not_worse_than_dark():
    rng = np.random.default_rng(7)
    maps, centres = _maps(rng, n=150)
    noisy = np.clip(maps + 0.3 + rng.normal(0, 0.05, maps.shape), 0, None)
    rmse = {m: np.sqrt(((_refine(noisy, m).coords[:, 0] - centres) ** 2).sum(-1).mean()) for m in ("dark", "gaussian")}
    assert rmse["gaussian"] <= rmse["dark"]


def test_refine_flat_with_no_peaks_returns_empty_shapes():
    out = refine_flat(np.ones((1, 5, 5)), np.empty(0, int), np.empty((0, 2), int), "dark")
    assert out.coords.shape == (0, 2) and out.fallback.shape == (0,)


def test_a_spots_own_fit_leaves_out_the_samples_of_its_neighbours():
    # Two noise-free spots (sigma 1.6) 4.5 px apart share their 15x15 windows. Fitted on every sample, each
    # single Gaussian lands 2 px off, between the two; leaving out the samples nearer to the other peak,
    # within a third of a pixel (the neighbour's tail on its own side remains).
    from peakloc.ops.subpixel import gaussian
    from peakloc.ops.windows import estimate_shape

    yy, xx = np.mgrid[:40, :48].astype(float)
    truth = np.array([[20.3, 18.2], [20.6, 22.7]])
    heat = sum(np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.6**2)) for y, x in truth)[None]
    peaks = peakloc.find_peaks(heat[0], num_peaks=2)
    owner = np.zeros(2, np.int64)
    fits = gaussian.fit_peaks(heat, owner, peaks, estimate_shape(heat, owner, peaks), threads=1)
    errors = [np.linalg.norm(truth - c, axis=1).min() for c in fits.coords]
    assert len(peaks) == 2 and max(errors) < 0.4


def test_samples_nearer_to_a_neighbour_are_those_of_its_voronoi_cell(rng):
    from peakloc.ops.windows import nearer_to_others, offsets

    d = offsets(4, 2).astype(float)
    delta = rng.integers(-12, 13, (40, 2))  # near and far: (9, 4) still takes the corner (4, 4)
    rows = rng.integers(0, 6, 40)
    got = nearer_to_others(d, rows, delta.astype(float), 6)
    for r in range(6):
        mine = delta[rows == r]
        want = np.zeros(len(d), bool)
        for k, sample in enumerate(d):
            want[k] = any(np.sum((sample - m) ** 2) < np.sum(sample**2) for m in mine)
        np.testing.assert_array_equal(got[r], want)


def test_beside_a_neighbour_a_fit_may_not_drag_its_peak_off_its_local_maximum():
    # A peak given 2 px from its spot's centre: alone, its fit goes to the centre; with another peak near, a
    # move that far means the fit took in another spot, and the peak keeps its integer position, flagged.
    from peakloc.ops.subpixel import gaussian
    from peakloc.ops.windows import estimate_shape

    yy, xx = np.mgrid[:40, :48].astype(float)
    heat = (
        np.exp(-((yy - 20.0) ** 2 + (xx - 15.0) ** 2) / (2 * 1.5**2))
        + 0.8 * np.exp(-((yy - 20.0) ** 2 + (xx - 26.0) ** 2) / (2 * 1.5**2))
    )[None]
    off = np.array([[20, 17]])  # the first spot's peak, 2 px to the side
    for peaks, moved in ((off, True), (np.concatenate([off, [[20, 26]]]), False)):
        owner = np.zeros(len(peaks), np.int64)
        fits = gaussian.fit_peaks(heat, owner, peaks, estimate_shape(heat, owner, peaks), threads=1)
        pull = np.linalg.norm(fits.coords[0] - peaks[0])
        assert (pull > gaussian.CROWDED_PULL) == moved and fits.fallback[0] == (not moved)


def test_the_covariances_inverse_is_each_matrixs_own_pseudo_inverse_singular_or_not():
    from peakloc.ops.subpixel.gaussian import _pinv

    rng = np.random.default_rng(3)
    jac = rng.normal(size=(4, 30, 5))
    jac[1, :, 4] = 0.0  # a parameter no sample moves: singular
    jac[2, :, 3] = 2 * jac[2, :, 0] + 1e-9 * jac[2, :, 3]  # two columns dependent but for rounding's noise
    a = jac.transpose(0, 2, 1) @ jac
    a[3, 0, 0] = np.nan
    got = _pinv(a)
    for n in range(3):
        np.testing.assert_allclose(got[n], np.linalg.pinv(a[n]), rtol=1e-9, atol=1e-12)
    assert np.isnan(got[3]).all()


def _fits_of_widths(widths: np.ndarray):
    from peakloc.ops.subpixel.gaussian import Fits

    n, ndim = widths.shape
    zeros, false = np.zeros(n), np.zeros(n, bool)
    return Fits(
        np.zeros((n, ndim)), false.copy(), zeros, zeros, zeros, zeros, widths, zeros, np.full((n, ndim), 4), zeros,
        zeros, np.zeros((n, 2 * ndim)), np.zeros((n, 2 * ndim)), np.zeros((n, 5)), false.copy(), false.copy(),
    )  # fmt: skip


def test_a_spot_wide_along_one_axis_takes_its_excess_width_on_every_axis_it_is_wider_on():
    from peakloc.ops.subpixel.gaussian import unresolved_spread

    spread = np.linspace(-0.03, 0.03, 40)  # one spot's widths, measured with noise: none past the gate
    widths = np.c_[2.0 + spread, 1.3 + spread[::-1], 1.3 + np.roll(spread, 7)]
    widths[0] = [2.0, 1.6, 1.31]  # two spots apart along y, and a little along z: y's excess is far past the gate
    added = unresolved_spread(_fits_of_widths(widths), np.zeros(40, int), np.full(widths.shape, 0.02))
    typical = np.median(widths, axis=0)
    np.testing.assert_allclose(added[0], np.maximum(widths[0] ** 2 - typical**2, 0.0))
    assert added[0, 1] > 0 and added[0, 2] > 0  # z too: a pair's distance has a share along it
    assert not added[1:].any()


def test_a_spot_a_little_wider_than_typical_is_taken_for_two_only_where_its_own_width_is_measured_that_well():
    from peakloc.ops.subpixel.gaussian import WIDTH_GATE, unresolved_spread

    widths = np.full((20, 2), 1.3)
    widths[0, 0] = 1.3 * 1.05  # a pair 0.7 widths apart along y: 5% wider
    fits, owner = _fits_of_widths(widths), np.zeros(20, int)
    bright = unresolved_spread(fits, owner, np.full(widths.shape, 0.065 / (WIDTH_GATE + 0.5)))
    dim = unresolved_spread(fits, owner, np.full(widths.shape, 0.065 / (WIDTH_GATE - 0.5)))
    np.testing.assert_allclose(bright[0], [1.365**2 - 1.3**2, 0.0])
    assert not bright[1:].any() and not dim.any()


def test_width_errors_cover_the_fitted_widths_of_noisy_spots_as_standard_errors_do():
    # Pixel-integrated spots of sigma 1.5 in white noise; the reference is the true width.
    from scipy.special import erf

    from peakloc.ops.subpixel import gaussian
    from peakloc.ops.windows import estimate_shape

    rng = np.random.default_rng(8)
    n, side, sigma = 400, 21, 1.5
    centre = 10 + rng.uniform(-0.5, 0.5, (n, 2))
    edges = np.arange(side + 1) - 0.5
    profile = [np.diff(erf((edges[None] - centre[:, a, None]) / (np.sqrt(2) * sigma)), axis=1) for a in (0, 1)]
    heat = (
        profile[0][:, :, None]
        * profile[1][:, None, :]
        / (np.diff(erf(np.array([-0.5, 0.5]) / (np.sqrt(2) * sigma)))[0] ** 2)
    )
    heat = heat + rng.normal(0, 0.05, heat.shape)
    owner, peaks = np.arange(n), np.unravel_index(heat.reshape(n, -1).argmax(1), (side, side))
    peaks = np.stack(peaks, axis=1)
    fits = gaussian.fit_peaks(heat, owner, peaks, estimate_shape(heat, owner, peaks), threads=1)
    a, b = gaussian.pooled_noise(fits.stats, np.zeros(n, int))  # one camera made every map
    precision_errors = gaussian.NoiseTerms(fits.spread0, fits.spread1, fits.stats).errors(a, b)[:, 2:]
    z = (fits.widths - sigma) / gaussian.width_errors(fits.widths, precision_errors)
    assert not fits.fallback.any()
    assert np.all((z.std(axis=0) > 0.85) & (z.std(axis=0) < 1.15)), z.std(axis=0)


def test_fit_boxes_are_the_window_or_a_square_of_its_largest_half_width_rounded_up_to_even():
    from peakloc.ops.subpixel.gaussian import fit_box

    halves = np.array([[4, 4], [5, 3], [4, 7], [6, 5], [9, 4], [10, 10]])
    expected = [[4, 4], [5, 3], [8, 8], [6, 6], [10, 10], [10, 10]]
    np.testing.assert_array_equal(fit_box(halves), expected)
    np.testing.assert_array_equal(fit_box(np.array([[6, 4, 4], [5, 3, 6]])), [[6, 4, 4], [5, 3, 6]])  # 3-D: own


def test_a_wide_window_fitted_in_a_larger_box_uses_only_its_own_samples():
    # A spot twice as wide along x: its window is 4 x 7 px a side, fitted in a box of 8 a side. Bright pixels
    # inside that box but outside the window must not move it from its true centre.
    from ..conftest import pixel_gaussian

    centre = (20.3, 24.6)
    heat = pixel_gaussian((41, 49), centre, (1.3, 2.6))
    heat[20, 25 + 8] = heat[20 + 6, 25] = 0.6
    got = peakloc.refine(heat, np.array([[20, 25]]), "gaussian")
    np.testing.assert_allclose(got[0], centre, atol=1e-6)


def test_where_a_heatmaps_spots_vary_in_width_a_spot_within_that_variation_is_not_taken_for_two():
    # Spots out of focus: widths 1.2 to 2.2 px, each measured to 0.02 px. One spot is 0.5 px wider than the
    # typical one: 25 of its own errors, but well within how much the spots vary; another lies past it all.
    from peakloc.ops.subpixel.gaussian import unresolved_spread

    widths = np.repeat(np.r_[np.linspace(1.2, 2.2, 41), 4.0][:, None], 2, axis=1)
    errors = np.full(widths.shape, 0.02)
    added = unresolved_spread(_fits_of_widths(widths), np.zeros(len(widths), int), errors)
    assert not added[:-1].any()  # the widest of the varying spots, 2.2 px, too
    assert added[-1].all()  # far past the variation: two spots, or more
