import warnings

import numpy as np
import pytest

import peakloc.ops.windows as windows_module
from peakloc.ops.windows import (
    c_strides,
    estimate_shape,
    groups,
    nanpercentile_rows,
    near_pair_blocks,
    near_pairs,
    offsets,
    peak_grid,
    windows,
)

from ..conftest import gaussian


def test_windows_hold_the_neighbourhood_with_nan_outside_and_at_non_finite_values():
    maps = np.arange(2 * 4 * 5, dtype=np.float64).reshape(2, 4, 5)
    maps[1, 0, 1] = np.inf
    got = windows(maps, np.array([1]), np.array([[0, 0]]), 1)
    expected = np.array([[np.nan, np.nan, np.nan], [np.nan, 20.0, np.nan], [np.nan, 25.0, 26.0]])
    np.testing.assert_array_equal(got[0], expected)


# Small maps: every window near an edge, gathered from padded maps; one large map with a few peaks: its edge
# windows by index.
@pytest.mark.parametrize("shape,count", [((3, 30, 40), 200), ((2, 9, 10, 12), 200), ((2, 50), 200), ((1, 300, 200), 8)])
@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_windows_inside_and_at_the_edges_equal_a_padded_maps_boxes(rng, shape, count, dtype):
    maps = (rng.random(shape) * 1000).astype(dtype)
    if dtype == np.float32:
        maps.flat[rng.integers(0, maps.size, 30)] = np.nan
        maps.flat[rng.integers(0, maps.size, 5)] = -np.inf
    owner = rng.integers(0, shape[0], count)
    centres = np.stack([rng.integers(0, s, count) for s in shape[1:]], axis=1)
    centres[: count // 2, 0] = rng.integers(0, 3, count // 2)  # half of them at the first edge
    half = 3
    # Reference: each box cut from the map padded with NaN, one peak at a time.
    padded = np.pad(maps.astype(np.float64), [(0, 0)] + [(half, half)] * (len(shape) - 1), constant_values=np.nan)
    padded[~np.isfinite(padded)] = np.nan
    expected = [padded[(b, *(slice(c, c + 2 * half + 1) for c in centre))] for b, centre in zip(owner, centres)]
    got = windows(maps, owner, centres, half)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, np.array(expected))


def test_offsets_and_strides_are_in_c_order():
    assert offsets(1, 2)[:4].tolist() == [[-1, -1], [-1, 0], [-1, 1], [0, -1]]
    assert c_strides((3, 4, 5)).tolist() == [20, 5, 1]


def test_groups_partition_positions_by_key():
    assert [(k, p.tolist()) for k, p in groups(np.array([4, 2, 4, 4]))] == [(2, [1]), (4, [0, 2, 3])]


def test_shape_estimate_finds_a_gaussians_width_background_and_height():
    heat = 0.2 + 3.0 * gaussian((41, 41), (20, 20), 2.5)
    shape = estimate_shape(heat[None], np.array([0]), np.array([[20, 20]]))
    assert abs(shape.sigma[0] - 2.5) < 0.2 and abs(shape.background[0] - 0.2) < 1e-3
    assert abs(shape.amplitude[0] - 3.0) < 1e-2 and shape.noise[0] < 1e-3


def test_widths_per_axis_are_each_spots_own_beside_neighbours_off_its_lines():
    # An anisotropic volume spot (sigma 2.0, 1.3, 1.3) with four equal neighbours 4 px away on both y and x:
    # the area above half maximum counts them too; the lines through the peak pass them by.
    zz, yy, xx = np.mgrid[:33, :33, :33].astype(float)

    def spot(z, y, x):
        return np.exp(-((zz - z) ** 2 / 8 + (yy - y) ** 2 / 3.38 + (xx - x) ** 2 / 3.38))

    heat = 10 + 100 * sum(spot(16, 16 + dy, 16 + dx) for dy, dx in [(0, 0), (4, 4), (-4, 4), (4, -4), (-4, -4)])
    shape = estimate_shape(heat[None], np.array([0]), np.array([[16, 16, 16]]))
    np.testing.assert_allclose(shape.widths[0], [2.0, 1.3, 1.3], rtol=0.06)
    assert shape.sigma[0] > 1.5 * np.cbrt(2.0 * 1.3 * 1.3)  # the area's estimate, inflated by the neighbours


def test_near_pairs_with_a_reach_per_peak_take_the_mean_of_the_two():
    centres = np.array([[0, 0], [0, 5], [0, 9]])
    i, j = near_pairs(peak_grid(np.zeros(3, int), centres, np.array([6, 4, 4])))  # pairs within (r_i + r_j) / 2
    assert sorted(zip(i.tolist(), j.tolist())) == [(0, 1), (1, 0), (1, 2), (2, 1)]  # 0 and 2: 9 > 5


def _pairs_by_brute_force(owner, centres, reach):
    reach = np.broadcast_to(np.asarray(reach, np.float64), (len(centres),))
    d = np.abs(centres[:, None] - centres[None]).max(axis=2)
    close = (d <= (reach[:, None] + reach[None]) / 2) & (owner[:, None] == owner[None])
    return {(a, b) for a, b in zip(*np.nonzero(close)) if a != b}


@pytest.mark.parametrize("seed", range(40))
def test_near_pairs_are_every_pair_of_one_heatmap_within_reach_once_and_no_other(seed):
    rng = np.random.default_rng(seed)
    n, ndim = int(rng.integers(0, 50)), int(rng.integers(1, 4))
    owner = rng.integers(0, 3, n)
    centres = rng.integers(-5, 30, (n, ndim)) + (rng.random((n, ndim)) if seed % 2 else 0)
    reach = rng.uniform(0, 10, n) if seed % 3 else float(rng.choice([0.0, 0.5, 7.0]))
    i, j = near_pairs(peak_grid(owner, centres, reach))
    found = list(zip(i.tolist(), j.tolist()))
    assert len(found) == len(set(found))
    assert set(found) == _pairs_by_brute_force(owner, centres, reach)


def test_near_pairs_of_peaks_far_apart_for_their_reach_are_found_too():
    # Cells of 1.5 px over 10^7 px in 3-D would be too many to number: they are renumbered.
    rng = np.random.default_rng(7)
    centres = rng.integers(0, 4, (60, 3)) * rng.choice([1, 10**7], (60, 3)) + rng.integers(0, 3, (60, 3))
    owner = rng.integers(0, 2, 60)
    i, j = near_pairs(peak_grid(owner, centres, 1.5))
    assert set(zip(i.tolist(), j.tolist())) == _pairs_by_brute_force(owner, centres, 1.5)


def test_near_pairs_of_a_thin_volume_are_all_found():
    # 48 planes deep and wide in y and x: the same pairs as by brute force.
    rng = np.random.default_rng(2)
    centres = np.stack([rng.integers(0, 48, 300), rng.integers(0, 512, 300), rng.integers(0, 512, 300)], axis=1)
    i, j = near_pairs(peak_grid(np.zeros(300, int), centres, 20))
    d = np.abs(centres[:, None] - centres[None]).max(axis=2)
    expected = {(a, b) for a, b in zip(*np.nonzero(d <= 20)) if a != b}
    assert set(zip(i.tolist(), j.tolist())) == expected


@pytest.mark.parametrize("seed", range(10))
def test_near_pairs_of_some_peaks_are_their_pairs_alone(seed):
    rng = np.random.default_rng(seed)
    owner, centres = rng.integers(0, 2, 80), rng.integers(0, 40, (80, 2))
    query = rng.choice(80, int(rng.integers(0, 30)), replace=False)
    i, j = near_pairs(peak_grid(owner, centres, 6), query)
    expected = {(a, b) for a, b in _pairs_by_brute_force(owner, centres, 6) if a in set(query.tolist())}
    assert sorted(zip(i.tolist(), j.tolist())) == sorted(expected)


def test_near_pairs_come_in_blocks_of_bounded_size_with_the_same_pairs(monkeypatch):
    # 400 peaks within reach of one another: every pair at once would be 160 000; blocks of at most 2000
    # candidates per cell searched hold a few query peaks each.
    rng = np.random.default_rng(3)
    owner, centres = np.zeros(400, int), rng.integers(0, 20, (400, 2))
    monkeypatch.setattr(windows_module, "PAIR_BLOCK", 2000)
    grid = peak_grid(owner, centres, 20)
    blocks = list(near_pair_blocks(grid))
    assert len(blocks) > 1
    assert all(len(i) <= 2000 * len(grid.shifts) for i, _ in blocks)
    found = [(a, b) for i, j in blocks for a, b in zip(i.tolist(), j.tolist())]
    assert sorted(found) == sorted(_pairs_by_brute_force(owner, centres, 20))


@pytest.mark.parametrize("q", [0, 10, 50, 100])
def test_row_percentiles_ignoring_nan_equal_numpys(rng, q):
    values = np.round(rng.random((40, 25)) * 5)
    values[rng.random(values.shape) < 0.3] = np.nan
    values[3] = np.nan
    with pytest.warns(RuntimeWarning):  # numpy warns about the all-NaN row; the copy says nothing
        expected = np.nanpercentile(values, q, axis=1)
    np.testing.assert_array_equal(nanpercentile_rows(values, q), expected)


def test_nanmedian_rows_equals_numpys_nanmedian_bit_for_bit(rng):
    from peakloc.ops.windows import nanmedian_rows

    for _ in range(50):
        values = np.round(rng.normal(size=(int(rng.integers(1, 30)), int(rng.integers(1, 40)))) * 4)
        values[rng.random(values.shape) < rng.uniform(0, 1)] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # rows of NaN only: NaN, and numpy says so
            want = np.nanmedian(values, axis=1)
        np.testing.assert_array_equal(nanmedian_rows(values), want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_order_statistics_equal_numpys_bit_for_bit(dtype):
    from peakloc.ops.windows import median_rows, percentile_rows

    rng = np.random.default_rng(4)
    for trial in range(60):
        n, m = int(rng.integers(1, 3000)), int(rng.integers(1, 8))
        draw = (rng.poisson(120, (m, n)), rng.normal(0, 1, (m, n)), rng.random((m, n)) * 1e4)[trial % 3]
        values = draw.astype(dtype)
        for q in (0, 10, 25, 33.3, 50, 90, 100):
            got, want = percentile_rows(values, q), np.percentile(values, q, axis=1)
            assert got.dtype == want.dtype and np.array_equal(got, want), (n, q)
        got, want = median_rows(values), np.median(values, axis=1)
        assert got.dtype == want.dtype and np.array_equal(got, want), n


def test_the_shape_of_no_peaks_is_empty():
    shape = estimate_shape(np.zeros((1, 8, 8)), np.zeros(0, np.int64), np.zeros((0, 2), np.int64))
    assert all(len(getattr(shape, name)) == 0 for name in ("sigma", "background", "amplitude", "noise"))


def test_each_peaks_shape_is_the_same_on_threads_and_in_any_number_at_a_time_without_warnings(rng, monkeypatch):
    # Spots on noise, a clipped background, and maps of 3x3 whose windows' outer rings lie wholly outside.
    maps = np.clip(rng.normal(0.05, 0.05, (6, 40, 40)), 0, None)
    maps[:, 10:13, 10:13] += 1.0
    owner = np.repeat(np.arange(6), 40)
    centres = rng.integers(0, 40, (240, 2))
    tiny = rng.random((3, 3, 3))
    tiny_owner, tiny_centres = np.arange(3), np.ones((3, 2), np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        alone = estimate_shape(maps, owner, centres, threads=1)
        tiny_alone = estimate_shape(tiny, tiny_owner, tiny_centres, threads=1)
        monkeypatch.setattr(windows_module, "SHAPE_VALUES", 3000)  # a few peaks a chunk, chunks on threads
        shared = estimate_shape(maps, owner, centres, threads=3)
        tiny_shared = estimate_shape(tiny, tiny_owner, tiny_centres, threads=2)
    for name in ("sigma", "background", "amplitude", "noise", "widths"):
        np.testing.assert_array_equal(getattr(shared, name), getattr(alone, name))
        np.testing.assert_array_equal(getattr(tiny_shared, name), getattr(tiny_alone, name))
    assert np.isnan(tiny_alone.noise).all()
