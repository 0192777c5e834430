import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from peakloc.ops import regions

skimage_morphology = pytest.importorskip("skimage.morphology")


def _grown(allowed, seed):
    """The component of ``allowed`` holding ``seed``, grown one ring of neighbours at a time (plain NumPy)."""
    region = np.zeros_like(allowed)
    region[seed] = True
    while True:
        padded = np.pad(region, 1)
        grown = np.zeros_like(padded)
        for shift in np.ndindex(*(3,) * region.ndim):
            grown[tuple(slice(s, s + n) for s, n in zip(shift, region.shape))] |= region
        grown = grown[tuple(slice(1, n + 1) for n in region.shape)] & allowed
        if (grown == region).all():
            return region
        region = grown


@pytest.mark.parametrize("shape", [(40,), (30, 40), (6, 9, 11)])
def test_labels_are_the_components_grown_over_every_neighbour(rng, shape):
    for _ in range(5):
        allowed = rng.random(shape) < 0.55
        labels, count = regions.label(allowed)
        assert count == len(np.unique(labels[allowed]))
        for seed in map(tuple, np.argwhere(allowed)[::7]):
            np.testing.assert_array_equal(labels == labels[seed], _grown(allowed, seed))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    shape=st.sampled_from([(30,), (13, 17), (5, 6, 7)]),
    levels=st.integers(1, 6),
    dtype=st.sampled_from([np.int16, np.uint8, np.uint16]),
)
def test_band_tops_without_an_edge_pixel_are_the_regional_maxima(seed, shape, levels, dtype):
    # Signed and unsigned half levels take different steps to mark the tops absent.
    q = np.random.default_rng(seed).integers(1, levels + 1, shape).astype(dtype)
    assume(q.min() < q.max())  # scikit-image finds no maximum in a constant image; here it is all one
    top, edge = regions.band_tops(q)
    labels, count = regions.label(top)
    maxima = top & ~regions.flag_labels(labels, count, edge)[labels]
    expected = skimage_morphology.local_maxima(q, connectivity=q.ndim, allow_borders=True)
    np.testing.assert_array_equal(maxima, expected)


def test_flag_labels_marks_exactly_the_labels_holding_a_marked_pixel(rng):
    labels, count = regions.label(rng.random((40, 50)) < 0.5)
    marks = rng.random(labels.shape) < 0.02
    expected = np.array([k > 0 and bool(marks[labels == k].any()) for k in range(count + 1)])
    np.testing.assert_array_equal(regions.flag_labels(labels, count, marks), expected)
    assert not regions.flag_labels(labels, count, np.zeros(labels.shape, bool)).any()


def test_neighbour_max_matches_the_numpy_filter_in_every_dtype(rng):
    from peakloc.ops.filters import maximum_filter

    for dtype in (np.uint8, np.int16, np.uint16, np.int32, np.int64, np.float32, np.float64):
        for shape in ((9,), (7, 8), (4, 5, 6)):
            x = (rng.random(shape) * 100).astype(dtype)
            if x.dtype.kind == "f":  # the lowest value at the edge: nothing outside is above it
                x.reshape(-1)[:2] = -np.inf
            np.testing.assert_array_equal(regions.neighbour_max(x), maximum_filter(x, 1))
