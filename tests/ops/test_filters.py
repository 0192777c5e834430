import numpy as np
import pytest
from scipy import ndimage

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
