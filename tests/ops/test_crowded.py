"""Crowded spots: joint fits of spots that share pixels, and merged pairs split in two."""

import csv
import io

import numpy as np
import pytest

import peakloc
from peakloc.cli import main
from peakloc.io.axes import layout_of
from peakloc.ops.subpixel import crowded
from peakloc.run.locate import locate
from peakloc.run.settings import Settings

from ..conftest import StrictRunner, pixel_gaussian


def _pair(rng, separation, sigma=2.0, noise=0.05, ratio=1.0, shape=(48, 48)):
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    middle = rng.uniform(20, 28, 2)
    angle = rng.uniform(0, np.pi)
    half = 0.5 * separation * sigma * np.array([np.sin(angle), np.cos(angle)])
    truth = np.stack([middle + half, middle - half])
    heat = sum(a * np.exp(-((yy - c[0]) ** 2 + (xx - c[1]) ** 2) / (2 * sigma**2)) for c, a in zip(truth, (1, ratio)))
    return np.clip(heat + rng.normal(0, noise, shape), 0, None), truth


def _distances(found, truth):
    direct = np.linalg.norm(found - truth, axis=1)
    swapped = np.linalg.norm(found[::-1] - truth, axis=1)
    return direct if direct.sum() <= swapped.sum() else swapped


def test_two_spots_three_sigma_apart_are_fitted_together_near_the_truth():
    rng = np.random.default_rng(0)
    errors = []
    for _ in range(30):
        heat, truth = _pair(rng, 3.0)
        peaks = peakloc.find_peaks(heat, num_peaks=2, threshold="30%")
        assert len(peaks) == 2
        errors.extend(_distances(peakloc.refine(heat, peaks, method="gaussian"), truth))
    # The two-spot model's Cramer-Rao bound here is 0.060 px (benchmarks/bench_accuracy.py, pair_bound).
    assert np.sqrt(np.mean(np.square(errors))) < 1.2 * 0.060


def test_a_merged_pair_is_split_and_flagged():
    rng = np.random.default_rng(1)
    heat, truth = _pair(rng, 1.8)  # closer than 2 sigma: one maximum between the two spots
    located = locate(
        heat[None],
        layout_of((1, 48, 48), "CYX"),
        Settings(methods=("gaussian",), peaks=3, min_distance=3, threshold="30%", extra=True),
    )
    g = located.peaks["gaussian"]
    found = g.coords[0][g.present[0]]
    assert len(found) == 2 and g.split[0][g.present[0]].all()
    assert np.all(_distances(found, truth) < 0.3)


def test_noisy_single_spots_are_not_split():
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:48, :48].astype(float)
    centres = rng.uniform(18, 30, (60, 2))
    maps = np.stack([np.exp(-((yy - c[0]) ** 2 + (xx - c[1]) ** 2) / 8) for c in centres])
    maps = np.clip(maps + rng.normal(0, 0.05, maps.shape), 0, None)
    settings = Settings(methods=("gaussian",), peaks=2, threshold="30%", extra=True)
    located = locate(maps, layout_of(maps.shape, "CYX"), settings)
    assert not located.peaks["gaussian"].split.any()


def test_split_threshold_inf_never_splits_and_the_table_says_so(tmp_path):
    heat, _ = _pair(np.random.default_rng(1), 1.8)
    np.save(tmp_path / "pair.npy", heat)
    args = [
        "find",
        str(tmp_path / "pair.npy"),
        "--peaks",
        "3",
        "--min-distance",
        "3",
        "--threshold",
        "30%",
        "-m",
        "gaussian",
        "--extra",
        "-q",
    ]
    split = list(csv.DictReader(io.StringIO(StrictRunner().invoke(main, args).stdout)))
    whole = list(csv.DictReader(io.StringIO(StrictRunner().invoke(main, [*args, "--split-threshold", "inf"]).stdout)))
    assert [r["split"] for r in split] == ["True", "True"]
    assert [r["split"] for r in whole] == ["False"]


def test_the_command_lines_default_split_threshold_is_the_librarys():
    option = next(p for p in main.commands["find"].params if p.name == "split_threshold")
    assert option.default == crowded.SPLIT_THRESHOLD == Settings().split_threshold


def test_a_spot_may_not_wander_off_onto_its_neighbour():
    # Two spots far apart but in one box: each fit stays within reach of its own start.
    heat = pixel_gaussian((30, 30), (8, 8)) + pixel_gaussian((30, 30), (20, 21))
    slices, axes = crowded.box(heat.shape, np.array([[8, 8], [20, 21]]), 5)
    fit = crowded.fit_group(heat[slices], axes, np.array([[8.0, 8.0], [20.0, 21.0]]), np.ones(2), 0.0, 2.0, reach=3)
    assert fit.ok
    np.testing.assert_allclose(fit.centres, [[8, 8], [20, 21]], atol=1e-6)
    np.testing.assert_allclose(fit.sigma, 2.0, rtol=1e-6)


def _numeric_normal(theta, r_of, eps=1e-6):
    """``J^T J`` and ``J^T r`` of the residual function ``r_of`` by central differences (the reference)."""
    r = r_of(theta).ravel()
    columns = []
    for p in range(theta.size):
        step = np.zeros_like(theta)
        step[0, p] = eps
        columns.append(-(r_of(theta + step).ravel() - r_of(theta - step).ravel()) / (2 * eps))
    jac = np.stack(columns, axis=1)
    return jac.T @ jac, jac.T @ r


def test_normal_equations_from_per_axis_profiles_match_a_numeric_jacobian():
    from peakloc.ops.subpixel import gaussian

    rng = np.random.default_rng(4)
    axes = [np.arange(5.0)[None], np.arange(7.0)[None], np.arange(6.0)[None]]  # a 3-D box, unequal sides
    k = 2
    theta = np.concatenate([[1.6, 2.9, 2.2, 2.8, 4.1, 3.0], [1.0, 0.7], [0.2], [0.3, 0.6, 0.5]])[None]
    y = rng.normal(0, 1, (1, 5, 7, 6))

    def residuals(t):
        return y - gaussian._value(t, gaussian._profiles(t, axes, k), k)

    profiles = gaussian._profiles(theta, axes, k)
    # Every sample, and a third of them left out (a neighbour's side, the map's edge): subtracted.
    for active in (np.ones(y.shape, bool), rng.random(y.shape) > 0.33):
        want_jtj, want_jtr = _numeric_normal(theta, lambda t, active=active: residuals(t) * active)
        r = residuals(theta) * active
        jtj, jtr = gaussian._normal(theta, profiles, r, active.all(axis=(1, 2, 3)), active.reshape(1, -1), k)
        # atol: the derivatives are the exact erf's; the values come from erfc_abs, within 1.2e-7 of it
        np.testing.assert_allclose(jtj[0], want_jtj, rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(jtr[0], want_jtr, rtol=1e-6, atol=1e-5)


def test_normal_equations_of_a_box_cut_short_come_from_its_profiles_zeroed_outside_it():
    # A window cut by the map's edge (or a group's box padded with missing samples): the samples of a smaller
    # box within the shared one. Its profiles zeroed outside that box give its normal equations exactly.
    from peakloc.ops.subpixel import gaussian

    rng = np.random.default_rng(5)
    axes = [np.arange(5.0)[None], np.arange(7.0)[None], np.arange(6.0)[None]]
    k = 2
    theta = np.concatenate([[1.6, 2.9, 2.2, 2.8, 4.1, 3.0], [1.0, 0.7], [0.2], [0.3, 0.6, 0.5]])[None]
    y = rng.normal(0, 1, (1, 5, 7, 6))
    extent = [np.arange(5) < 3, np.arange(7) >= 1, np.ones(6, bool)]  # z rows 3-4 and y column 0 missing
    box = extent[0][:, None, None] & extent[1][None, :, None] & extent[2][None, None, :]
    edges = gaussian._edges(axes)
    inside = edges.slots([e[None] for e in extent])[:, None, :]

    def residuals(t):
        return (y - gaussian._value(t, gaussian._profiles(t, axes, k), k)) * box

    want_jtj, want_jtr = _numeric_normal(theta, residuals)
    profiles = gaussian._profiles(theta, edges, k, inside)
    jtj, jtr = gaussian._normal(theta, profiles, residuals(theta), np.ones(1, bool), box.reshape(1, -1), k)
    np.testing.assert_allclose(jtj[0], want_jtj, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(jtr[0], want_jtr, rtol=1e-6, atol=1e-5)


def test_a_fit_on_a_box_padded_with_missing_samples_is_the_fit_on_the_box_alone():
    from peakloc.ops.subpixel import gaussian

    rng = np.random.default_rng(6)
    heat = 0.2 + pixel_gaussian((9, 11), (4.3, 5.6), 1.4) + rng.normal(0, 0.01, (9, 11))
    theta = np.array([[4.0, 5.0, 1.0, 0.2, 0.5, 0.5]])
    accept = lambda t, rows: np.ones(len(rows), bool)  # noqa: E731
    alone = gaussian.fit_spots(heat[None], [np.arange(9.0)[None], np.arange(11.0)[None]], theta, *_no_clip(), 1, accept)
    padded = np.full((12, 14), np.nan)
    padded[2:11, 1:12] = heat  # two rows above, one below, one column each side: missing
    axes = [np.arange(-2.0, 10.0)[None], np.arange(-1.0, 13.0)[None]]
    fit = gaussian.fit_spots(padded[None], axes, theta, *_no_clip(), 1, accept)
    np.testing.assert_allclose(fit.theta, alone.theta, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(fit.errors, alone.errors, rtol=1e-9)
    assert fit.used[0] == alone.used[0] == heat.size


def _no_clip():
    return np.full(1, -np.inf), np.full(1, np.inf)


def test_a_group_in_a_volume_shares_one_width_per_axis():
    sigma = np.array([2.0, 1.3, 1.3])
    truth = np.array([[10.0, 10.2, 9.7], [10.4, 13.1, 13.6]])
    heat = 0.1 + sum(pixel_gaussian((20, 24, 24), c, sigma) for c in truth)
    slices, axes = crowded.box(heat.shape, np.rint(truth).astype(int), 5)
    fit = crowded.fit_group(heat[slices], axes, np.rint(truth), np.ones(2), 0.0, 1.5, reach=3)
    assert fit.ok
    np.testing.assert_allclose(fit.centres, truth, atol=1e-5)
    np.testing.assert_allclose(fit.widths, sigma, rtol=1e-5)


def test_a_crowd_too_large_for_a_joint_fit_keeps_each_spots_own_fit_flagged_fallback():
    # Nine spots 4 px apart in a row: one chain of overlapping windows, more than MAX_GROUP.
    yy, xx = np.mgrid[:24, :56].astype(float)
    truth = np.array([[12.0, 8.0 + 4.5 * k] for k in range(9)])
    heat = sum(np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.2**2)) for y, x in truth)
    peaks = peakloc.find_peaks(heat, num_peaks=9, min_distance=2)
    assert len(peaks) == 9 > crowded.MAX_GROUP
    found = peakloc.refine(heat, peaks, method="gaussian", full_output=True)
    assert found.fallback.all()
    # Each spot's own fit: within a pixel of its spot, not its integer peak.
    own = found.coords[np.argsort(found.coords[:, 1])]
    assert np.all(np.abs(own - truth).max(axis=1) < 1.0) and not np.all(own == np.round(own))


def test_a_pair_fitted_jointly_is_not_flagged_fallback():
    heat, _ = _pair(np.random.default_rng(3), 3.0)
    peaks = peakloc.find_peaks(heat, num_peaks=2, threshold="30%")
    assert not peakloc.refine(heat, peaks, method="gaussian", full_output=True).fallback.any()


def test_a_spot_wider_than_its_window_is_left_to_its_own_fit():
    from peakloc.ops.subpixel import gaussian
    from peakloc.ops.windows import estimate_shape

    # A blob of sigma 30 (its window capped at 10 px) and a spot of sigma 2 in one 8-bit map.
    heat = 0.8 * pixel_gaussian((160, 200), (80, 60), 30.0) + pixel_gaussian((160, 200), (80, 170), 2.0)
    heat = np.round(heat / heat.max() * 255).astype(np.uint8)
    owner, centres = np.zeros(2, int), np.array([[80, 60], [80, 170]])
    fits = gaussian.fit_peaks(heat[None], owner, centres, estimate_shape(heat[None], owner, centres))
    assert (~fits.capped).tolist() == [False, True]  # only the spot its window holds
    assert crowded.split_merged(heat[None], owner, centres, fits, crowded.SPLIT_THRESHOLD) == [None, None]


def test_an_own_fit_pulled_over_1_5_px_towards_a_hidden_spot_keeps_the_integer_peak():
    # A 3-D spot with a dimmer one 5 px away in z (2.5 widths: one local maximum for both), and a neighbour
    # 7.5 px away in x whose window overlaps (so the fit leaves its samples out) but too far for a joint
    # fit. The one-spot fit goes 1.9 px towards the hidden spot, between the two; the row keeps the integer
    # peak, the true spot's, flagged fallback.
    shape, sigma = (28, 32, 40), (2.0, 1.3, 1.3)
    spot, hidden, neighbour = np.array([9.0, 16.0, 14.0]), np.array([14.0, 16.0, 14.0]), np.array([9.0, 16.0, 21.5])
    volume = 100 + 300 * sum(
        h * pixel_gaussian(shape, c, sigma) for c, h in ((spot, 1.0), (hidden, 0.75), (neighbour, 1.0))
    )
    peaks = peakloc.find_peaks(volume, 3, num_peaks=5, min_distance=2, threshold=150)
    assert peaks.tolist() == [[9, 16, 14], [9, 16, 21]]
    found = peakloc.refine(volume, peaks, method="gaussian", ndim=3, full_output=True)
    assert found.fallback.tolist() == [True, False]
    assert np.linalg.norm(found.coords[0] - spot) < 0.5
    assert np.linalg.norm(found.coords[1] - neighbour) < 0.05


def test_among_spots_their_own_fits_explain_a_merged_pair_is_still_split_and_they_are_not_tested(monkeypatch):
    # Six single spots and a pair 1.8 sigma apart on one map: the pooled noise model judges each own fit, and
    # only a window it leaves unexplained (reduced chi-square above 1) gets a two-spot fit. Without the
    # screen, all 7 would be.
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:96, :128].astype(float)
    singles = np.array([[16.0, 16], [16, 64], [16, 110], [78, 16], [78, 64], [78, 110]]) + rng.uniform(
        -0.5, 0.5, (6, 2)
    )
    pair = np.array([[47.0, 62.2], [47.0, 65.8]])
    heat = sum(np.exp(-((yy - c[0]) ** 2 + (xx - c[1]) ** 2) / 8) for c in [*singles, *pair])
    heat = heat + rng.normal(0, 0.02, heat.shape)
    tested = []
    run = crowded._run

    def counting(jobs, starts, threads=None, cost_tolerance=0.0, shared=False, errors=True):
        if cost_tolerance == crowded.SPLIT_TOLERANCE:
            tested.append(len(starts))
        return run(jobs, starts, threads, cost_tolerance, shared, errors)

    monkeypatch.setattr(crowded, "_run", counting)
    located = locate(
        heat[None],
        layout_of((1, 96, 128), "CYX"),
        Settings(methods=("gaussian",), peaks=10, threshold="30%", extra=True),
    )
    g = located.peaks["gaussian"]
    split = g.coords[0][g.present[0] & g.split[0]]
    assert len(split) == 2 and np.all(_distances(split, pair) < 0.3)
    assert sum(tested) == 4  # the pair, and the three singles whose own fits the noise left above 1


def test_a_spot_whose_neighbour_was_split_is_fitted_as_if_afresh():
    # A merged pair 1.8 sigma apart, split in two, and 9 px away a spot too faint to crowd it (under 5 noise
    # levels): the faint spot's window loses other samples to the two split spots than to the merged peak.
    # Its fit is made again, equal to a fit of the final peaks from scratch (refine_flat, no earlier fits).
    from peakloc.ops.subpixel import refine_flat

    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:64, :64].astype(float)
    spots = [(32.0, 26.2, 1.0), (32.0, 29.8, 1.0), (32.0, 38.4, 0.09)]
    heat = sum(a * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 8) for y, x, a in spots) + rng.normal(0, 0.02, (64, 64))
    settings = Settings(methods=("argmax", "gaussian"), peaks=5, min_distance=3, threshold=0.075, extra=True)
    located = locate(heat[None], layout_of((1, 64, 64), "CYX"), settings)
    g, present = located.peaks["gaussian"], located.peaks["gaussian"].present[0]
    assert g.split[0][present].sum() == 2 and present.sum() == 3  # and the faint spot's own peak
    # Kept, the earlier fit (beside the merged peak) would be 1.3e-4 px off.
    points = located.peaks["argmax"].coords[0][present]
    afresh = refine_flat(heat[None], np.zeros(len(points), np.int64), points, "gaussian")
    np.testing.assert_array_equal(g.coords[0][present], afresh.coords)


def test_a_fit_asked_for_no_uncertainty_gives_every_other_number_as_with_it():
    # Spots alone, in pairs fitted jointly and in a failed-fit corner: the noise terms are skipped, nothing
    # else moves (the command line asks for them with --extra, refine with full_output).
    from peakloc.ops.subpixel import refine_flat

    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[:96, :96].astype(float)
    spots = [(20.0, 20.0), (20.0, 24.5), (60.0, 30.0), (62.5, 33.0), (70.0, 75.0), (1.0, 94.0)]
    heat = sum(np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 6) for y, x in spots) + rng.normal(0, 0.03, (96, 96))
    points = np.array([[20, 20], [20, 25], [60, 30], [62, 33], [70, 75], [1, 94]])
    owner = np.zeros(len(points), np.int64)
    full = refine_flat(heat[None], owner, points, "gaussian", threads=1)
    bare = refine_flat(heat[None], owner, points, "gaussian", threads=1, uncertainty=False)
    for name in ("coords", "fallback", "sigma", "amplitude", "snr"):
        np.testing.assert_array_equal(getattr(bare, name), getattr(full, name))
    assert np.isfinite(full.uncertainty[~full.fallback]).all() and np.isnan(bare.uncertainty).all()


def test_a_wide_windows_two_spot_test_takes_only_its_own_windows_samples_in_a_larger_box():
    # One spot twice as wide along x: its window is 4 x 7 px a side, tested in a box of 8 a side. The box's
    # samples past the window are left out (NaN), so that the test sees what the peak's own fit saw.
    from peakloc.ops.subpixel import gaussian
    from peakloc.ops.windows import estimate_shape

    heat = pixel_gaussian((41, 49), (20.3, 24.6), (1.3, 2.6))[None]
    owner, centres = np.zeros(1, int), np.array([[20, 25]])
    fits = gaussian.fit_peaks(heat, owner, centres, estimate_shape(heat, owner, centres))
    assert fits.half.tolist() == [[4, 7]]
    box = gaussian.fit_box(fits.half)[0]
    jobs, _, _ = crowded._split_jobs(heat, owner, centres, fits, box, np.ones(1), np.zeros(1))
    yy, xx = np.abs(np.mgrid[-8:9, -8:9])
    np.testing.assert_array_equal(np.isfinite(jobs.values[0]), (yy <= 4) & (xx <= 7))


@pytest.mark.parametrize("seed", range(6))
def test_groups_of_a_few_links_are_those_of_scipys_graph_components(seed, monkeypatch):
    # Few links go to SciPy's union-find, many to its compiled graph module: the same groups, members and
    # order (by first member, each ascending), whichever is used.
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    first, second = rng.integers(0, n, (2, int(rng.integers(1, 200))))
    keep = first != second
    first, second = np.r_[first[keep], second[keep]], np.r_[second[keep], first[keep]]
    few = crowded._components(n, first, second)
    monkeypatch.setattr(crowded, "FEW_LINKS", -1)
    many = crowded._components(n, first, second)
    assert [g.tolist() for g in few] == [g.tolist() for g in many]
    assert all(g.dtype == np.int64 for g in few)
