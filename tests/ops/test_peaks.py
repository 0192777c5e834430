from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import peakloc
from peakloc.errors import PeaklocValueError
from peakloc.ops import peaks
from peakloc.ops.filters import maximum_filter
from peakloc.ops.peaks import parse_threshold

skimage_feature = pytest.importorskip("skimage.feature")


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    shape=st.sampled_from([(40,), (17, 23), (8, 9, 10)]),
    min_distance=st.integers(1, 4),
    num_peaks=st.integers(1, 8),
    levels=st.sampled_from([None, 4]),
    threshold=st.sampled_from([None, 0.3, "60%"]),
)
def test_find_peaks_matches_skimage_peak_local_max(seed, shape, min_distance, num_peaks, levels, threshold):
    x = np.random.default_rng(seed).random(shape)
    if levels:
        x = np.round(x * levels)  # plateaus and ties
    if x.min() == x.max():
        return
    ours = peakloc.find_peaks(
        x, ndim=len(shape), num_peaks=num_peaks, min_distance=min_distance, threshold=threshold, merge_plateaus=False
    )
    kwargs = {}
    if isinstance(threshold, float):
        kwargs["threshold_abs"] = threshold
    elif isinstance(threshold, str):
        kwargs["threshold_rel"] = 0.6
    theirs = skimage_feature.peak_local_max(
        x, min_distance=min_distance, num_peaks=num_peaks, exclude_border=False, **kwargs
    )
    np.testing.assert_array_equal(ours, theirs)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    shape=st.sampled_from([(300,), (64, 80), (20, 24, 28)]),
    min_distance=st.integers(2, 12),
    dtype=st.sampled_from([np.uint16, np.uint8, np.float32]),
)
def test_many_peaks_in_any_dtype_match_skimage(seed, shape, min_distance, dtype):
    # Hundreds of candidates and kept peaks: the spacing grid's cells and their edges are all reached.
    x = (np.random.default_rng(seed).random(shape) * 200).astype(dtype)
    ours = peakloc.find_peaks(x, ndim=len(shape), num_peaks=10_000, min_distance=min_distance, merge_plateaus=False)
    theirs = skimage_feature.peak_local_max(x, min_distance=min_distance, num_peaks=10_000, exclude_border=False)
    np.testing.assert_array_equal(ours, theirs)


def test_one_peak_is_the_argmax_even_on_plateaus_and_constant_maps(rng):
    for x in (np.round(rng.random((20, 30)) * 3), np.full((4, 5), 2.0), rng.random((6, 7, 8))):
        ndim = x.ndim
        np.testing.assert_array_equal(peakloc.find_peaks(x, ndim=ndim)[0], peakloc.argmax(x, ndim=ndim))


def test_no_peak_above_the_threshold_is_an_empty_array_with_a_shape():
    out = peakloc.find_peaks(np.eye(5), num_peaks=3, threshold=2)
    assert out.shape == (0, 2) and out.dtype == np.int64


def test_batches_give_one_array_per_heatmap_in_c_order():
    x = np.zeros((2, 3, 6, 6))
    x[1, 2, 4, 5] = 1
    out = peakloc.find_peaks(x, num_peaks=2)
    assert len(out) == 6 and out[5].tolist() == [[4, 5]]


def test_peaks_are_ordered_by_height():
    x = np.zeros((10, 10))
    x[1, 1], x[5, 5], x[8, 2] = 1, 3, 2
    assert peakloc.find_peaks(x, num_peaks=5).tolist() == [[5, 5], [8, 2], [1, 1]]


def test_parse_threshold_reads_percentages():
    assert parse_threshold("25%") == (None, 0.25, None) and parse_threshold("1.5") == (1.5, None, None)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"num_peaks": 0}, "`num_peaks` must be >= 1"), ({"min_distance": 0}, "`min_distance` must be >= 1")],
)
def test_find_peaks_validates_counts(kwargs, match):
    with pytest.raises(PeaklocValueError, match=match):
        peakloc.find_peaks(np.eye(3), **kwargs)


def test_torch_max_pool_candidates_equal_the_numpy_filter(rng):
    pytest.importorskip("torch", reason="torch is part of the test install (make install)")
    from peakloc.backends import torch_backend

    for shape in [(3, 50), (2, 20, 30), (2, 9, 10, 11)]:
        x = np.round(rng.random(shape) * 4)
        x[0].flat[3] = np.nan
        for radius in (1, 3):
            expected = np.stack([m == maximum_filter(np.where(np.isfinite(m), m, -np.inf), radius) for m in x])
            np.testing.assert_array_equal(torch_backend.local_maxima_masks(x, radius, "cpu"), expected)


def test_a_plateau_is_one_peak_at_its_first_pixel():
    x = np.zeros((12, 30))
    x[4:7, 3:20] = 5  # a flat top 17 px wide, as 8-bit rounding leaves on broad peaks
    x[9, 25] = 3
    assert peakloc.find_peaks(x, num_peaks=5, min_distance=3).tolist() == [[4, 3], [9, 25]]
    assert len(peakloc.find_peaks(x, num_peaks=5, min_distance=3, merge_plateaus=False)) > 2


def test_in_integer_maps_a_one_level_bump_on_a_ridge_is_no_peak():
    x = np.zeros((9, 30), np.uint8)
    x[4, 2:25] = 100  # a ridge ...
    x[4, 3] = 120  # ... from a peak
    x[4, 20] = 101  # a bump one level above the ridge: rounding, not a peak
    x[4, 29] = 90  # a separate peak: the ridge ends before it
    assert peakloc.find_peaks(x, num_peaks=5, min_distance=3).tolist() == [[4, 3], [4, 29]]
    assert [4, 20] in peakloc.find_peaks(x.astype(float), num_peaks=5, min_distance=3).tolist()


def test_a_one_level_bump_on_a_ridge_is_no_peak_where_peaks_are_few_in_a_large_map():
    # Few candidates for the map's size: the ones two levels above every neighbour skip the labelling.
    x = np.zeros((64, 64), np.uint8)
    x[4, 2:25] = 100
    x[4, 3] = 120
    x[4, 20] = 101
    x[4, 29] = 90
    x[40, 40] = 50  # alone: every neighbour two levels below
    expected = [[4, 3], [4, 29], [40, 40]]
    assert peakloc.find_peaks(x, num_peaks=5, min_distance=3).tolist() == expected
    stack = np.stack([x, np.roll(x, 9, axis=0), x])  # laid end to end
    found = peakloc.find_peaks(stack, ndim=2, num_peaks=5, min_distance=3)
    assert [f.tolist() for f in found] == [expected, [[13, 3], [13, 29], [49, 40]], expected]


def test_a_candidate_is_isolated_where_every_neighbour_lies_two_levels_below(rng):
    from peakloc.ops.peaks import isolated

    for shape in [(40,), (12, 15), (5, 6, 7)]:
        x = rng.integers(0, 6, shape).astype(np.int16)
        coords = np.argwhere(x >= 0)
        values = x[tuple(coords.T)]
        expected = []
        for point, value in zip(coords, values):
            around = tuple(slice(max(p - 1, 0), p + 2) for p in point)
            box = x[around].astype(int).copy()
            box[tuple(p - max(p - 1, 0) for p in point)] = -100  # the candidate itself
            expected.append(bool(np.all(box <= value - 2)))
        assert isolated(x, coords, values).tolist() == expected


@pytest.mark.parametrize("shape", [(300,), (64, 80), (20, 24, 28)])
def test_spacing_on_a_map_too_large_for_an_array_grid_matches_skimage(rng, shape, monkeypatch):
    from peakloc.ops import peaks as module

    monkeypatch.setattr(module, "GRID_CELLS", 0)  # the dict of cells that large volumes use
    x = (rng.random(shape) * 200).astype(np.uint16)
    for min_distance in (2, 3, 7):
        ours = peakloc.find_peaks(x, ndim=len(shape), num_peaks=10_000, min_distance=min_distance, merge_plateaus=False)
        theirs = skimage_feature.peak_local_max(x, min_distance=min_distance, num_peaks=10_000, exclude_border=False)
        np.testing.assert_array_equal(ours, theirs)


def _terraced(rng, shape, kind, levels):
    """A map with what plateau merging must get right: terraces, plateaus, ties, and NaN in float maps."""
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    x = np.zeros(shape)
    for _ in range(int(rng.integers(1, 4))):  # broad blobs: terraced flanks once rounded
        centre = [rng.uniform(0, n) for n in shape]
        sigma = rng.uniform(1, max(shape))
        x += rng.uniform(0.3, 1) * np.exp(-sum((g - c) ** 2 for g, c in zip(grids, centre)) / (2 * sigma**2))
    x = x / x.max() + rng.uniform(0, 0.3) * rng.random(shape)  # and bumps on them
    x = np.round(x / x.max() * levels)
    if kind == "float":
        x = x.astype(np.float32)
        x[rng.random(shape) < 0.05] = np.nan
        return x
    return (x - (3 if kind == "int16" else 0)).astype(kind)


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    shape=st.sampled_from([(1,), (7,), (50,), (1, 9), (12, 17), (23, 31), (2, 3, 4), (6, 9, 11)]),
    kind=st.sampled_from(["uint8", "int16", "uint16", "float"]),
    levels=st.sampled_from([1, 2, 5, 12, 40, 250]),
    min_distance=st.integers(1, 5),
    num_peaks=st.integers(1, 30),
    threshold=st.sampled_from([None, "median", "40%"]),
)
def test_peaks_equal_the_flood_fill_reference_in_memory_and_in_slabs_of_one_row(
    seed, shape, kind, levels, min_distance, num_peaks, threshold
):
    from peakloc.ops import streaming
    from peakloc.ops.lazy import Maps

    from .peaks_reference import local_maxima as reference

    x = _terraced(np.random.default_rng(seed), shape, kind, levels)
    if not np.isfinite(x).any():
        return
    if threshold == "median":
        threshold = float(np.nanmedian(x))
    options = {"num_peaks": num_peaks, "min_distance": min_distance}
    absolute, relative, _ = parse_threshold(threshold)
    want = reference(x, threshold_abs=absolute, threshold_rel=relative, **options)
    maps = Maps(x[np.newaxis], len(shape))
    stats = streaming.map_stats(maps, 0, 1)
    # Band tops labelled over the whole map, and gathered pixel by pixel (where few pixels are high enough).
    for share in (0, 1 << 62):
        with mock.patch.object(peaks, "SPARSE_SHARE", share), mock.patch.object(peaks, "SPARSE_SIZE", 0):
            got = peakloc.find_peaks(x, ndim=len(shape), threshold=threshold, **options)
            np.testing.assert_array_equal(got, want)
            in_slabs = streaming.local_maxima(
                maps, 0, stats, 1, threshold_abs=absolute, threshold_rel=relative, threads=1, **options
            )
            np.testing.assert_array_equal(in_slabs, want)


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    shape=st.sampled_from([(7,), (50,), (1, 9), (12, 17), (23, 31), (2, 3, 4), (6, 9, 11)]),
    kind=st.sampled_from(["uint8", "int16", "uint16", "int32", "float"]),
    levels=st.sampled_from([1, 2, 5, 12, 250]),
    count=st.integers(2, 6),
    min_distance=st.integers(1, 5),
    num_peaks=st.integers(1, 30),
    threshold=st.sampled_from([None, "median", "40%", "low"]),
    merge=st.booleans(),
)
def test_a_stack_of_small_maps_gives_each_maps_flood_fill_peaks(
    seed, shape, kind, levels, count, min_distance, num_peaks, threshold, merge
):
    # The maps lie end to end, filtered and labelled together (peaks.stack_local_maxima): each must still get
    # its own answer, whatever its neighbours in the stack, constant maps, NaN and the dtype's lowest value
    # included.
    from .peaks_reference import local_maxima as reference

    rng = np.random.default_rng(seed)
    stack = np.stack([_terraced(rng, shape, kind, levels) for _ in range(count)])
    lowest = -1 if kind == "float" else np.iinfo(kind).min
    stack[rng.integers(count)] = rng.choice([lowest, 1])  # a constant map, at the lowest value or not
    if threshold == "median":
        threshold = float(np.nanmedian(stack))
    elif threshold == "low":
        threshold = -1e6 if kind == "float" else float(lowest) - 2  # below every value: no guard row is a peak
    assert peaks.stacks_at_once(stack)
    absolute, relative, _ = parse_threshold(threshold)
    options = {"num_peaks": num_peaks, "min_distance": min_distance}
    want = [
        reference(m, threshold_abs=absolute, threshold_rel=relative, merge_plateaus=merge, **options) for m in stack
    ]
    with mock.patch.object(peaks, "STACK_VALUES", int(rng.choice([1, stack[0].size * 2, 1 << 20]))):
        got = peakloc.find_peaks(stack, ndim=len(shape), threshold=threshold, merge_plateaus=merge, **options)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_a_stack_with_a_noise_threshold_gives_each_maps_own_peaks(rng):
    stack = np.stack(
        [_terraced(rng, (40, 30), "uint16", 60) + rng.poisson(5, (40, 30)).astype(np.uint16) for _ in range(7)]
    )
    got = peakloc.find_peaks(stack, ndim=2, num_peaks=10, min_distance=2, threshold="3sd")
    for g, m in zip(got, stack, strict=True):
        np.testing.assert_array_equal(g, peakloc.find_peaks(m, ndim=2, num_peaks=10, min_distance=2, threshold="3sd"))


def test_a_stack_with_a_map_of_no_finite_value_names_that_map(rng):
    stack = rng.random((4, 12, 10)).astype(np.float32)
    stack[2] = np.nan
    with pytest.raises(peakloc.NoFiniteValueError, match="heatmap 2 has no finite value"):
        peakloc.find_peaks(stack, ndim=2, num_peaks=3)


def test_a_broad_8_bit_peak_with_terraced_flanks_is_one_peak():
    # A Gaussian of sigma 60 rounded to 8 bits: hundreds of terrace rings, every one of them a shoulder.
    yy, xx = np.mgrid[:256, :256]
    x = np.round(255 * np.exp(-((yy - 120.3) ** 2 + (xx - 140.6) ** 2) / (2 * 60.0**2))).astype(np.uint8)
    top = np.argwhere(x == x.max())[0]  # the flat top's first pixel in C order
    assert peakloc.find_peaks(x, num_peaks=5).tolist() == [top.tolist()]


def _noisy_spots(rng, heights=(3.0, 8.0)):
    yy, xx = np.mgrid[:80, :90].astype(float)
    heat = 10 + rng.normal(0, 1, yy.shape)
    for k, h in enumerate(heights):
        heat += h * np.exp(-((yy - 20 - 40 * k) ** 2 + (xx - 45) ** 2) / (2 * 2.0**2))
    return heat


def test_a_threshold_in_noise_deviations_sits_that_far_above_the_median():
    heat = _noisy_spots(np.random.default_rng(5))
    # The reference: NumPy's median of every value, and of their deviations above it.
    median = np.median(heat)
    level = median + 5 * 1.4826 * np.median(heat[heat > median] - median)
    expected = peaks.local_maxima(heat, 50, 3, threshold_abs=level)
    got = peakloc.find_peaks(heat, num_peaks=50, min_distance=3, threshold="5sd")
    np.testing.assert_array_equal(got, expected)
    # The spot 8 deviations high (at 60, 45, its noisy maximum a pixel from it), not the one 3 high nor noise.
    assert len(got) == 1 and np.abs(got[0] - [60, 45]).max() <= 1


def test_a_threshold_in_noise_deviations_is_the_same_for_a_map_read_in_pieces(tmp_path):
    heat = _noisy_spots(np.random.default_rng(6)).astype(np.float32)
    path = tmp_path / "heat.npy"
    np.save(path, heat)
    stored = np.load(path, mmap_mode="r")
    # Few samples: the noise floor looks at every 8th row, in memory and slab by slab alike.
    with mock.patch.object(peaks, "NOISE_SAMPLES", 1000):
        in_memory = peaks.local_maxima(heat, 20, 2, threshold_sd=3.0)
        from peakloc.ops.streaming import each_local_maxima

        in_pieces = each_local_maxima(stored, 2, block=900, num_peaks=20, min_distance=2, threshold_sd=3.0)[0]
        assert peaks.noise_rows(heat.shape) == 8
    np.testing.assert_array_equal(in_pieces, in_memory)
    assert len(in_memory) >= 2


def test_noise_clipped_at_zero_reads_as_the_noise_before_the_clip():
    rng = np.random.default_rng(7)
    clipped = np.clip(rng.normal(0, 0.05, 200_000), 0, None)  # the lower half all zeros
    background, sd = peaks.noise_floor(clipped)
    assert background == pytest.approx(0, abs=1e-3) and sd == pytest.approx(0.05, rel=0.02)


def test_a_map_of_one_value_below_its_peak_has_the_standard_deviation_for_its_noise():
    heat = np.zeros((30, 30))
    heat[10, 10] = 5.0  # MAD 0: the plain standard deviation, not a threshold at the background
    background, sd = peaks.noise_floor(heat)
    assert background == 0 and sd == pytest.approx(np.std(heat))


@settings(max_examples=50, deadline=None)
@given(
    values=st.lists(st.integers(-128, 127), max_size=60),
    dtype=st.sampled_from([np.int8, np.uint8, np.int16, np.uint16, np.int32, np.int64, np.float32]),
)
def test_highest_first_is_a_stable_descending_order_in_any_dtype(values, dtype):
    # One- and two-byte integers take a radix sort of their own key; the rest are sorted as float64.
    v = np.array(values, np.int64)
    if np.dtype(dtype).kind == "u":
        v = v + 128
    v = v.astype(dtype)
    expected = sorted(range(len(v)), key=lambda k: (-float(v[k]), k))
    assert peaks.highest_first(v).tolist() == expected


@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 5)])
def test_unravel_gives_numpys_coordinates_as_rows(shape):
    flat = np.arange(int(np.prod(shape)))[::-1]
    np.testing.assert_array_equal(peaks.unravel(flat, shape), np.argwhere(np.ones(shape, bool))[::-1])
    assert peaks.unravel(np.array([], np.int64), shape).shape == (0, len(shape))
