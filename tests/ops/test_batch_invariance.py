"""Every public function gives heatmap i the same answer whether it runs alone or in any batch."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import peakloc
from peakloc.ops.subpixel import METHODS as REFINE_METHODS

DTYPES = (np.uint8, np.uint16, np.int32, np.float32, np.float64)


@st.composite
def stacks(draw, max_batch=5):
    """A batch of maps of one shape, each with its own peaks, width, noise and scale; one dtype."""
    ndim = draw(st.sampled_from([1, 2, 2, 3]))
    shape = tuple(draw(st.integers(3 if ndim == 3 else 5, {1: 60, 2: 30, 3: 12}[ndim])) for _ in range(ndim))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    batch = draw(st.integers(2, max_batch))
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    maps = []
    for _ in range(batch):
        kind = draw(st.sampled_from(["peaked", "peaked", "uniform", "constant"]))
        if kind == "uniform":  # dense maps: most values count in the soft-argmax
            heat = rng.random(shape)
        elif kind == "constant":
            heat = np.full(shape, 0.5)
        else:
            heat = np.zeros(shape)
            for _ in range(draw(st.integers(1, 3))):
                centre = rng.uniform(0, np.array(shape) - 1)
                sigma = draw(st.floats(0.6, 5.0))
                heat += rng.uniform(0.2, 1.0) * np.exp(
                    -sum((g - c) ** 2 for g, c in zip(grids, centre)) / (2 * sigma**2)
                )
            heat += draw(st.sampled_from([0.0, 0.01, 0.1])) * rng.random(shape)
        scale = 200 if dtype.kind in "iu" else draw(st.sampled_from([1.0, 1e-3, 1e4]))
        maps.append(np.round(heat * scale) if dtype.kind in "iu" else heat * scale)
    stack = np.stack(maps).astype(dtype)
    if dtype.kind == "f" and draw(st.booleans()):
        holes = draw(hnp.arrays(bool, stack.shape, elements=st.booleans().map(lambda b: b and rng.random() < 0.1)))
        stack[holes & (stack < stack.max())] = np.nan
    return stack, ndim


def _each_alone(fn, stack):
    return np.stack([fn(stack[i : i + 1])[0] for i in range(len(stack))])


def _finite_maps(stack, ndim):
    flat = stack.reshape(len(stack), -1)
    return np.isfinite(flat.astype(np.float64)).any(axis=1).all()


@settings(max_examples=60, deadline=None)
@given(
    case=stacks(), beta=st.sampled_from([1.0, 20.0, 100.0, 1e4]), normalize=st.sampled_from(["minmax", "max", "none"])
)
def test_soft_argmax_of_a_map_is_the_same_in_any_batch(case, beta, normalize):
    stack, ndim = case
    if not _finite_maps(stack, ndim):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", peakloc.NonFiniteWarning)
        together = peakloc.soft_argmax(stack, beta, ndim, normalize)
        alone = _each_alone(lambda s: peakloc.soft_argmax(s, beta, ndim, normalize), stack)
        reversed_ = peakloc.soft_argmax(stack[::-1].copy(), beta, ndim, normalize)[::-1]
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-9)
    np.testing.assert_allclose(reversed_, alone, rtol=0, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(case=stacks(), method=st.sampled_from(sorted(REFINE_METHODS)), num_peaks=st.integers(1, 3))
def test_refine_of_a_map_is_the_same_in_any_batch(case, method, num_peaks):
    stack, ndim = case
    if not _finite_maps(stack, ndim):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", peakloc.NonFiniteWarning)
        found = peakloc.find_peaks(stack, ndim=ndim, num_peaks=num_peaks)
        # refine takes the same number of peaks per map: pad each map's list with its argmax.
        first = peakloc.argmax(stack, ndim)
        peaks = np.stack([np.concatenate([f, np.repeat(a[None], num_peaks - len(f), 0)]) for f, a in zip(found, first)])
        together = peakloc.refine(stack, peaks, method, ndim, full_output=True)
        for i in range(len(stack)):
            alone = peakloc.refine(stack[i : i + 1], peaks[i : i + 1], method, ndim, full_output=True)
            np.testing.assert_allclose(together.coords[i], alone.coords[0], rtol=0, atol=1e-9)
            np.testing.assert_array_equal(together.fallback[i], alone.fallback[0])
            for name in ("sigma", "amplitude", "snr"):
                np.testing.assert_allclose(getattr(together, name)[i], getattr(alone, name)[0], rtol=1e-9)


@settings(max_examples=40, deadline=None)
@given(case=stacks(), num_peaks=st.integers(1, 4), min_distance=st.integers(1, 3))
def test_argmax_and_find_peaks_of_a_map_are_the_same_in_any_batch(case, num_peaks, min_distance):
    stack, ndim = case
    if not _finite_maps(stack, ndim):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", peakloc.NonFiniteWarning)
        np.testing.assert_array_equal(
            peakloc.argmax(stack, ndim), _each_alone(lambda s: peakloc.argmax(s, ndim), stack)
        )
        together = peakloc.find_peaks(stack, ndim, num_peaks, min_distance)
        for i, found in enumerate(together):
            np.testing.assert_array_equal(found, peakloc.find_peaks(stack[i : i + 1], ndim, num_peaks, min_distance)[0])


def test_refine_with_a_large_batch_uses_each_peaks_own_window(rng):
    # More peaks than one fitting chunk, of very different widths: the fit and DARK size each window alone.
    from ..conftest import gaussian

    maps = np.stack([gaussian((40, 40), (19.3, 20.6), 1.0 + (i % 5)) for i in range(300)])
    peaks = peakloc.argmax(maps)[:, None, :]
    for method in REFINE_METHODS:
        together = peakloc.refine(maps, peaks, method)
        alone = peakloc.refine(maps[4:5], peaks[4:5], method)
        np.testing.assert_allclose(together[4], alone[0], rtol=0, atol=1e-9, err_msg=method)


@pytest.mark.parametrize("method", sorted(REFINE_METHODS))
def test_refine_of_noise_free_maps_of_mixed_widths_stays_accurate(method):
    from ..conftest import gaussian

    maps = np.stack([gaussian((41, 41), (20.3, 19.6), s) for s in (1.2, 2.0, 4.0)])
    got = peakloc.refine(maps, peakloc.argmax(maps)[:, None, :], method)[:, 0]
    # local is a soft-argmax in a window: at beta 100 a narrow peak pulls it to the brightest pixel.
    tolerance = {"local": 0.5, "quadratic": 0.02, "dark": 0.02, "gaussian": 1e-6}[method]
    np.testing.assert_allclose(got, [[20.3, 19.6]] * 3, atol=tolerance)


def _mixed_maps(rng, count=6):
    """Maps of 64x48 whose kept share (beta 100, minmax) runs from a few values to a third of the map."""
    maps = []
    for k in range(count):
        heat = 0.5 * rng.random((64, 48))
        share = (0.002, 0.08, 0.095, 0.105, 0.12, 0.3)[k % 6]
        top = rng.random((64, 48)) < share  # this share of values near the top: kept, wherever they lie
        heat[top] = rng.uniform(0.85, 1.0, top.sum())
        heat[rng.integers(64), rng.integers(48)] = 1.0
        maps.append(heat)
    return np.stack(maps).astype(np.float32)


def test_soft_argmax_of_a_map_has_the_same_bits_beside_peaked_or_dense_maps(rng):
    # Each map takes the dense or the sparse path by its own sample, whichever way its batch lists its kept
    # values (one list for a peaked batch, a mask where many are kept); BLAS sums one map at a time.
    maps = _mixed_maps(rng)
    flat = maps.reshape(len(maps), -1)
    kept = flat >= 1 - (np.log(flat.shape[1]) + 20) / 100  # every map's maximum is 1, its minimum about 0
    # Some maps are more than a tenth kept but less than a tenth of their sample, or the other way round.
    assert ((kept.mean(axis=1) > 0.1) != (kept[:, ::61].mean(axis=1) > 0.1)).any()
    peaked = _mixed_maps(rng, 12)[::6]  # 0.2% kept: the batch's kept values are listed
    dense = rng.random((40, 64, 48)).astype(np.float32)  # a third kept: the batch is counted by mask
    for i, heat in enumerate(maps):
        alone = peakloc.soft_argmax(heat[None])[0]
        for neighbours in (peaked, dense):
            batch = np.concatenate([neighbours[:1], heat[None], neighbours])
            np.testing.assert_array_equal(peakloc.soft_argmax(batch)[1], alone, err_msg=f"map {i}")
        # Not aligned to 16 bytes, as a map inside a batch may not be.
        buffer = np.empty(heat.size + 1, np.float32)[1:].reshape(1, 64, 48)
        buffer[:] = heat
        np.testing.assert_array_equal(peakloc.soft_argmax(buffer)[0], alone, err_msg=f"map {i}")


def test_soft_argmax_of_a_map_has_the_same_bits_where_dense_and_peaked_maps_alternate(rng):
    # A batch takes each run of consecutive dense (or peaked) maps together as a view; past a few runs
    # it gathers them instead. Either way, and with a NaN in a dense and in a peaked map, each map's bits
    # are its own.
    peaked = _mixed_maps(rng, 12)[::6]
    dense = rng.random((2, 64, 48)).astype(np.float32)
    dense[1, 5, 7] = np.nan
    peaked[1, 9, 3] = np.nan
    few = np.concatenate([dense, peaked, dense])  # 3 runs
    many = np.stack([(dense, peaked)[k % 2][k // 2 % 2] for k in range(20)])  # 20 runs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", peakloc.NonFiniteWarning)
        for batch in (few, many):
            alone = np.concatenate([peakloc.soft_argmax(m[None]) for m in batch])
            np.testing.assert_array_equal(peakloc.soft_argmax(batch), alone)
