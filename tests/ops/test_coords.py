import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import peakloc
from peakloc.backends import numpy_backend
from peakloc.errors import NoFiniteValueError, NonFiniteWarning, PeaklocValueError

from ..conftest import gaussian, reference_soft_argmax


@pytest.mark.parametrize("shape,ndim", [((50,), 1), ((3, 7, 40, 50), 2), ((2, 6, 9, 11), 3), ((1, 13), 1)])
def test_argmax_matches_numpy_unravel_index(rng, shape, ndim):
    x = rng.random(shape).astype(np.float32)
    spatial = shape[-ndim:]
    flat = x.reshape(-1, int(np.prod(spatial)))
    expected = np.stack(np.unravel_index(flat.argmax(1), spatial), -1).reshape(shape[:-ndim] + (ndim,))
    got = peakloc.argmax(x, ndim=ndim)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)


def test_argmax_returns_first_maximum_on_ties():
    x = np.zeros((4, 5), np.uint8)
    x[1, 3] = x[2, 0] = x[3, 4] = 9
    np.testing.assert_array_equal(peakloc.argmax(x), [1, 3])


def test_argmax_ignores_nan_and_inf_with_a_warning():
    x = np.zeros((3, 4))
    x[0, 0], x[0, 1], x[1, 1], x[2, 2] = np.nan, np.inf, 5.0, -np.inf
    with pytest.warns(NonFiniteWarning, match="3 non-finite values ignored"):
        np.testing.assert_array_equal(peakloc.argmax(x), [1, 1])


def test_argmax_of_constant_map_is_first_position():
    np.testing.assert_array_equal(peakloc.argmax(np.full((2, 3, 4), 7.0), ndim=3), [0, 0, 0])


def test_all_nan_heatmap_raises_naming_its_position():
    x = np.ones((3, 4, 4))
    x[1] = np.nan
    with pytest.raises(NoFiniteValueError, match="heatmap 1 has no finite value"):
        peakloc.argmax(x)
    with pytest.raises(NoFiniteValueError, match="heatmap 1 has no finite value"):
        peakloc.soft_argmax(x)


@pytest.mark.parametrize("normalize", ["minmax", "max", "none"])
@pytest.mark.parametrize("beta", [1.0, 7.5, 100.0])
def test_soft_argmax_matches_float64_formula(rng, normalize, beta):
    x = rng.random((4, 3, 21, 34)).astype(np.float32) * 3
    got = peakloc.soft_argmax(x, beta=beta, normalize=normalize)
    np.testing.assert_allclose(got, reference_soft_argmax(x, beta, 2, normalize), atol=1e-4)


@pytest.mark.parametrize("ndim,shape", [(1, (5, 300)), (3, (2, 9, 10, 11))])
def test_soft_argmax_in_1d_and_3d_matches_formula(rng, ndim, shape):
    x = rng.random(shape)
    np.testing.assert_allclose(peakloc.soft_argmax(x, beta=5, ndim=ndim), reference_soft_argmax(x, 5, ndim), atol=1e-6)


def test_soft_argmax_of_a_map_larger_than_a_block_matches_formula(rng):
    rows = 2 * numpy_backend.BLOCK_ELEMENTS // 600 + 7  # more than one block: the slab path, with a ragged last slab
    x = rng.random((1, rows, 600)).astype(np.float32)
    assert x[0].size > numpy_backend.BLOCK_ELEMENTS
    np.testing.assert_allclose(peakloc.soft_argmax(x, beta=3), reference_soft_argmax(x, 3), atol=1e-3)


def test_sparse_and_dense_paths_agree_with_the_formula(rng):
    peaked = np.stack([np.exp(-((np.arange(64)[:, None] - 20.3) ** 2 + (np.arange(48) - 30.7) ** 2) / 8)] * 3)
    flat = rng.random((3, 64, 48))  # minmax, beta 100: ~30% of values count -> dense path
    for x in (peaked, flat, peaked + 0.01 * rng.random(peaked.shape)):
        np.testing.assert_allclose(peakloc.soft_argmax(x), reference_soft_argmax(x), atol=1e-5)


def test_soft_argmax_of_a_large_batch_uses_blocks_and_matches_formula(rng):
    x = rng.random((300, 40, 50)).astype(np.float32)  # 600k values: several blocks, on threads
    np.testing.assert_allclose(peakloc.soft_argmax(x, beta=4), reference_soft_argmax(x, 4), atol=1e-4)


def test_soft_argmax_of_uint8_with_huge_beta_does_not_overflow():
    x = np.zeros((8, 8), np.uint8)
    x[2, 5] = 255
    x[6, 1] = 254
    got = peakloc.soft_argmax(x, beta=1e30, normalize="none")
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, [2, 5])


def test_soft_argmax_computes_float16_input_in_float32_or_wider():
    x = np.zeros((1, 3000), np.float16)  # float16 cannot count past 2048
    x[0, 2999] = 1
    got = peakloc.soft_argmax(x, ndim=1, beta=1e4)
    assert got.dtype in (np.float32, np.float64)
    np.testing.assert_allclose(got, [[2999]])


def test_soft_argmax_of_constant_map_is_the_centre():
    for normalize in ("minmax", "max", "none"):
        np.testing.assert_allclose(peakloc.soft_argmax(np.full((5, 8), 3), normalize=normalize), [2, 3.5])


def test_soft_argmax_gives_nan_no_weight(rng):
    x = gaussian((20, 30), (7.3, 20.6), 2.0)
    x[0, :5] = np.nan
    x[19, 29] = np.inf
    with pytest.warns(NonFiniteWarning):
        got = peakloc.soft_argmax(x, beta=10)
    np.testing.assert_allclose(got, reference_soft_argmax(x, 10), atol=1e-6)


def test_max_normalisation_leaves_a_negative_map_unscaled():
    x = -np.arange(12, dtype=np.float64).reshape(3, 4)  # maximum 0 at (0, 0); dividing would flip it
    np.testing.assert_allclose(peakloc.soft_argmax(x, beta=2, normalize="max"), reference_soft_argmax(x, 2, 2, "none"))


def test_soft_argmax_accepts_nested_lists():
    np.testing.assert_allclose(peakloc.soft_argmax([[0, 0], [0, 1]], beta=1000), [1, 1])


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"beta": 0}, PeaklocValueError, "`beta` must be > 0"),
        ({"beta": float("nan")}, PeaklocValueError, "`beta` must be > 0"),
        ({"beta": "1"}, TypeError, "`beta` must be a number"),
        ({"ndim": 4}, PeaklocValueError, "`ndim` must be 1, 2 or 3"),
        ({"ndim": 2.0}, TypeError, "`ndim` must be an int"),
        ({"normalize": "z"}, PeaklocValueError, "`normalize` must be one of"),
    ],
)
def test_soft_argmax_validates_its_parameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        peakloc.soft_argmax(np.ones((3, 3)), **kwargs)


def test_non_numeric_heatmap_is_a_type_error():
    with pytest.raises(TypeError, match="real numbers"):
        peakloc.argmax(np.array([["a", "b"]]))


def test_too_few_axes_for_ndim_is_refused():
    with pytest.raises(PeaklocValueError, match="at least `ndim`=3 axes"):
        peakloc.argmax(np.ones((3, 3)), ndim=3)


def test_pixel_to_normalized_matches_linspace():
    for n in (1, 2, 5, 64):
        np.testing.assert_allclose(
            peakloc.pixel_to_normalized(np.arange(n)[:, None], (n,))[:, 0], np.linspace(-1, 1, n)
        )


@settings(max_examples=40, deadline=None)
@given(y=st.floats(4, 35), x=st.floats(4, 45), dy=st.integers(-3, 3), dx=st.integers(-3, 3), sigma=st.floats(1.0, 3.0))
def test_shifting_a_peak_by_whole_pixels_shifts_the_answer(y, x, dy, dx, sigma):
    a = gaussian((40, 50), (y, x), sigma)
    b = gaussian((40, 50), (y + dy, x + dx), sigma)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(peakloc.soft_argmax(b) - peakloc.soft_argmax(a), [dy, dx], atol=1e-3)
        np.testing.assert_array_equal(peakloc.argmax(b) - peakloc.argmax(a), [dy, dx])
