"""The one-pass statistics of maps read in slabs, against NumPy on the whole map."""

import numpy as np
import pytest

from peakloc.backends.numpy_backend import count_per_row
from peakloc.ops import streaming
from peakloc.ops.lazy import Maps


def _stats(heat: np.ndarray, rows: int) -> streaming.MapStats:
    return streaming.map_stats(Maps(heat[np.newaxis], heat.ndim), 0, rows, counts=True, threads=2)


@pytest.mark.parametrize("rows", [1, 3, 40])
def test_the_first_maximum_is_found_behind_nan_and_inf_in_its_block(rng, rows):
    heat = rng.random((40, 997)).astype(np.float32)  # rows not a multiple of the 4096-value search blocks
    heat[7, 100:120] = np.nan
    heat[7, 130] = np.inf
    heat[7, 140] = 5.0  # first maximum: same slab and search block as the NaN and the inf
    heat[31, 3] = 5.0
    heat[2, 9] = -np.inf
    got = _stats(heat, rows)
    finite = np.where(np.isfinite(heat), heat, -np.inf)
    assert got.first == int(np.flatnonzero(finite == finite.max())[0])
    assert (got.hi, got.lo) == (finite.max(), np.where(np.isfinite(heat), heat, np.inf).min())
    assert (got.count, got.nonfinite, got.count_hi, got.count_lo) == (heat.size - 22, 22, 2, 1)


def test_a_maximum_only_in_the_tail_past_the_last_search_block_is_found(rng):
    heat = rng.random((3, 5000)).astype(np.float32)
    heat[2, 4999] = 2.0
    assert _stats(heat, 3).first == heat.size - 1


def test_a_map_with_no_finite_value_in_some_slabs_uses_the_others(rng):
    heat = rng.random((6, 50))
    heat[:3] = np.nan
    got = _stats(heat, 2)
    assert got.first == int(np.nanargmax(heat))
    assert got.nonfinite == 150


@pytest.mark.parametrize("shape", [(3, 5000), (50, 20), (0, 7)])
def test_count_per_row_counts_like_numpy(rng, shape):
    mask = rng.random(shape) > 0.7
    np.testing.assert_array_equal(count_per_row(mask), np.count_nonzero(mask, axis=1))
