import numpy as np
import pytest
from scipy import ndimage

from peakloc.ops import filters
from peakloc.ops.filters import correlate, maximum_filter


@pytest.mark.parametrize("shape", [(17,), (9, 12), (5, 6, 7)])
@pytest.mark.parametrize("radius", [1, 2, 4])
def test_maximum_filter_matches_scipy_with_minus_inf_outside(rng, shape, radius):
    x = rng.random(shape)
    expected = ndimage.maximum_filter(x, size=2 * radius + 1, mode="constant", cval=-np.inf)
    np.testing.assert_array_equal(maximum_filter(x, radius), expected)


@pytest.mark.parametrize("axis", [0, 1])
def test_correlate_matches_scipy_with_mirrored_borders(rng, axis):
    x = rng.random((8, 11))
    taps = np.array([0.1, 0.2, 0.4, 0.2, 0.1])
    expected = ndimage.correlate1d(x, taps, axis=axis, mode="mirror")
    np.testing.assert_allclose(correlate(x, taps, axis), expected, rtol=1e-12)


def test_correlate_on_a_single_pixel_axis_repeats_it():
    x = np.array([[2.0, 3.0]])
    np.testing.assert_allclose(correlate(x, np.array([0.25, 0.5, 0.25]), 0), x)


def test_filters_wider_than_the_array_match_scipy(rng):
    x = rng.random((6, 9))
    np.testing.assert_array_equal(
        maximum_filter(x, 50), ndimage.maximum_filter(x, size=101, mode="constant", cval=-np.inf)
    )
    taps = np.exp(-0.5 * (np.arange(-20, 21) / 7.0) ** 2)
    np.testing.assert_allclose(correlate(x, taps, 1), ndimage.correlate1d(x, taps, axis=1, mode="mirror"), rtol=1e-12)
    np.testing.assert_allclose(correlate(x, taps, 0), ndimage.correlate1d(x, taps, axis=0, mode="mirror"), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.float32])
@pytest.mark.parametrize("radius", [1, 2, 3, 7, 40])
def test_maximum_filter_keeps_the_dtype_and_matches_scipy(rng, dtype, radius):
    x = (rng.random((31, 45)) * 100 - (50 if dtype == np.int16 else 0)).astype(dtype)
    lowest = -np.inf if x.dtype.kind == "f" else np.iinfo(dtype).min
    expected = ndimage.maximum_filter(x, size=2 * radius + 1, mode="constant", cval=lowest)
    got = maximum_filter(x, radius)
    assert got.dtype == x.dtype
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("tile", [1, 7, 64, 1 << 17])
@pytest.mark.parametrize("shape", [(23,), (9, 13), (6, 11, 7)])
@pytest.mark.parametrize("radius", [1, 3, 5])
def test_maximum_filter_in_pieces_of_any_size_matches_scipy(monkeypatch, rng, tile, shape, radius):
    monkeypatch.setattr(filters, "TILE_VALUES", tile)
    x = rng.random(shape).astype(np.float32)
    expected = ndimage.maximum_filter(x, size=2 * radius + 1, mode="constant", cval=-np.inf)
    np.testing.assert_array_equal(maximum_filter(x, radius), expected)


@pytest.mark.parametrize("tile", [5, 1 << 17])
@pytest.mark.parametrize("rows", [(0, 3), (2, 6), (4, 9), (8, 9)])
def test_maximum_filter_of_some_rows_reads_the_others_as_neighbours(monkeypatch, rng, tile, rows):
    monkeypatch.setattr(filters, "TILE_VALUES", tile)
    x = rng.random((9, 8, 10))
    expected = ndimage.maximum_filter(x, size=5, mode="constant", cval=-np.inf)[rows[0] : rows[1]]
    np.testing.assert_array_equal(maximum_filter(x, 2, rows), expected)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64])
def test_maxima_mask_is_the_filter_comparison_and_the_float64_threshold(rng, dtype):
    x = (rng.random((7, 9, 12)) * 40 - (20 if dtype == np.int16 else 0)).astype(dtype)
    lowest = -np.inf if x.dtype.kind == "f" else np.iinfo(dtype).min
    peak = ndimage.maximum_filter(x, size=3, mode="constant", cval=lowest)
    for above in (None, 3.5, 7.0, float(np.float32(7.3)) + 1e-9, -1e300, 1e300, -np.inf, np.nan):
        expected = x == peak
        if above is not None:
            expected &= x.astype(np.float64) > above
        np.testing.assert_array_equal(filters.maxima_mask(x, 1, (1, 6), above), expected[1:6], err_msg=str(above))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (17, 23)])
@pytest.mark.parametrize("radius", [1, 2, 5])
def test_maxima_mask_of_a_whole_image_matches_scipy(rng, dtype, shape, radius):
    # A whole 2-D map takes OpenCV's dilation; values outside the map must add nothing.
    x = rng.integers(-3 if dtype != np.uint8 and dtype != np.uint16 else 0, 4, shape).astype(dtype)
    if x.dtype.kind == "f":  # infinities, a subnormal and a negative zero beside their neighbours
        specials = np.array([np.inf, -np.inf, np.finfo(dtype).smallest_subnormal, -0.0], dtype)
        x.reshape(-1)[rng.integers(0, x.size, 3)] = rng.choice(specials, 3)
    lowest = -np.inf if x.dtype.kind == "f" else np.iinfo(dtype).min
    peak = ndimage.maximum_filter(x, size=2 * radius + 1, mode="constant", cval=lowest)
    for above in (None, 0.5, 2.0, -1e300, 1e300, np.nan):
        expected = x == peak
        if above is not None:
            expected &= x.astype(np.float64) > above
        np.testing.assert_array_equal(filters.maxima_mask(x, radius, above=above), expected, err_msg=str(above))


def test_maxima_mask_of_a_whole_image_with_nan_is_the_tiled_filters(rng):
    x = rng.random((20, 30)).astype(np.float32)
    x[3, 4] = x[10, 0] = np.nan  # NumPy's maximum spreads a NaN over its window: no peak there
    np.testing.assert_array_equal(filters.maxima_mask(x, 2), filters.maxima_mask(x, 2, rows=(0, 20)))
    assert not filters.maxima_mask(x, 2)[1:6, 2:7].any()


def test_maxima_mask_threshold_between_two_float32_values_is_exact():
    x = np.array([0.0, np.float32(0.1), 0.0], np.float32)
    just_below, just_above = np.nextafter(np.float64(np.float32(0.1)), 0), np.nextafter(np.float64(np.float32(0.1)), 1)
    assert filters.maxima_mask(x, 1, above=just_below).tolist() == [False, True, False]
    assert filters.maxima_mask(x, 1, above=just_above).tolist() == [False, False, False]
    assert filters.maxima_mask(x, 1, above=float(np.float32(0.1))).tolist() == [False, False, False]
