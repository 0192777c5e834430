"""The one-pass statistics of maps read in slabs, against NumPy on the whole map."""

import numpy as np
import pytest

from peakloc.backends.numpy_backend import _kept, _true_places, count_per_row
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


@pytest.mark.parametrize("shape", [(3, 5000), (50, 20), (0, 7), (170, 3072), (7, 8), (0, 16)])
def test_count_per_row_counts_like_numpy(rng, shape):
    mask = rng.random(shape) > 0.7
    np.testing.assert_array_equal(count_per_row(mask), np.count_nonzero(mask, axis=1))


@pytest.mark.parametrize("width", [304, 301])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.int64])
def test_kept_lists_what_each_rows_own_threshold_keeps(rng, dtype, width):
    # Each row: low values, and one run of high ones where its peak is (a peaked map's kept values).
    flat = rng.random((40, width)) * 100
    for row, start in enumerate(rng.integers(0, 290, 40)):
        flat[row, start : start + 12] = rng.uniform(100, 200, 12)
    flat = flat.astype(dtype)
    threshold = rng.uniform(120, 190, 40).astype(np.result_type(dtype, np.float32))
    finite = None
    if np.dtype(dtype).kind == "f":
        flat[3, :5] = [np.inf, np.nan, 199, -np.inf, np.nan]
        finite = np.isfinite(flat)
    expected = np.flatnonzero((flat >= threshold[:, None]) & (True if finite is None else finite))
    assert len(expected) > 0
    np.testing.assert_array_equal(_kept(flat, threshold, finite), expected)


def test_kept_lists_dense_rows_and_skips_rows_of_nan_threshold(rng):
    flat = rng.random((10, 100)).astype(np.float32)
    threshold = np.array([np.nan] + [0.5] * 9, np.float32)
    expected = np.flatnonzero(flat >= threshold[:, None])
    assert len(expected) > 0.3 * flat.size and not (expected < 100).any()
    np.testing.assert_array_equal(_kept(flat, threshold, None), expected)
    assert len(_kept(flat, np.full(10, np.nan, np.float32), None)) == 0


@pytest.mark.parametrize("size", [0, 5, 8, 1000, 1003])
def test_true_places_finds_what_flatnonzero_finds(rng, size):
    mask = rng.random(size) > 0.97
    mask[-3:] = size > 0
    np.testing.assert_array_equal(_true_places(mask), np.flatnonzero(mask))
    np.testing.assert_array_equal(_true_places(mask.reshape(1, -1)), np.flatnonzero(mask))


def test_count_per_row_counts_a_strided_mask_like_numpy(rng):
    mask = (rng.random((9, 40)) > 0.5)[::2, 8:]
    np.testing.assert_array_equal(count_per_row(mask), np.count_nonzero(mask, axis=1))


class _Counting:
    """An array that records the row ranges read from it."""

    def __init__(self, array: np.ndarray, chunks: tuple[int, ...]) -> None:
        self.array, self.chunks, self.shape, self.dtype = array, chunks, array.shape, array.dtype
        self.reads: list[tuple[int, int]] = []
        self.steps: set[int] = set()

    def __getitem__(self, index):
        rows = index[1] if isinstance(index[1], slice) else slice(index[1], index[1] + 1)
        self.reads.append(rows.indices(self.shape[1])[:2])
        self.steps.add(rows.indices(self.shape[1])[2])
        return self.array[index]


def _slab_copy(piece, box):
    return box, piece.copy()


@pytest.mark.parametrize("rows,halo", [(3, 0), (4, 2), (7, 5)])
def test_slabs_read_through_a_band_of_whole_chunks_are_the_slabs_read_directly(rng, rows, halo):
    heat = rng.random((1, 50, 6, 5))
    direct = streaming.Slabs(threads=2).map(_slab_copy, Maps(heat, 3), 0, streaming._boxes(50, rows, halo))
    store = _Counting(heat, (1, 16, 6, 5))
    banded = streaming.Slabs(threads=2, band=16).map(_slab_copy, Maps(store, 3), 0, streaming._boxes(50, rows, halo))
    for (box, want), (same_box, got) in zip(direct, banded):
        assert box == same_box
        np.testing.assert_array_equal(got, want)
    # Each row read once, in whole chunks of 16 rows (the last chunk cut by the map's end).
    starts = [lo for lo, _ in store.reads]
    assert sorted(starts) == starts and sum(hi - lo for lo, hi in store.reads) == 50
    assert all(hi % 16 == 0 or hi == 50 for _, hi in store.reads)


def test_a_reused_band_decodes_each_band_after_the_second_into_the_same_array(rng):
    # Rows 5-15 kept ahead of rows 16-31; then rows 18-31 moved to the front over themselves (they overlap),
    # then rows 33-47 (they do not): each read gives the map's rows.
    heat = rng.random((1, 50, 6, 5))
    band = streaming._Band(Maps(heat, 3), 0, 16, reuse=True)
    arrays = []
    for lo, hi in [(0, 7), (5, 20), (18, 35), (33, 50)]:
        got = band.read(lo, hi)
        np.testing.assert_array_equal(got, heat[0, lo:hi])
        arrays.append(got)
    assert all(np.shares_memory(arrays[1], later) for later in arrays[2:])
    fresh = streaming._Band(Maps(heat, 3), 0, 16)
    assert not np.shares_memory(fresh.read(5, 20), fresh.read(18, 35))


@pytest.mark.parametrize("merge", [True, False])
@pytest.mark.parametrize("min_distance,num_peaks", [(1, 5), (2, 40), (3, 400)])
@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_peaks_read_in_slabs_from_few_candidates_each_are_the_in_memory_ones(
    rng, monkeypatch, merge, min_distance, num_peaks, dtype
):
    # Each slab hands on 3 candidates at first: the search must read more where its peaks need them, and
    # find the very peaks, in the very order, that the map in memory gives (ties and plateaus in uint8).
    from peakloc.ops.peaks import local_maxima as in_memory

    monkeypatch.setattr(streaming, "SLAB_CANDIDATES", 3)
    heat = (rng.random((12, 30, 20)) * (9 if dtype == np.uint8 else 1)).astype(dtype)
    maps = Maps(heat[np.newaxis], 3)
    options = {"num_peaks": num_peaks, "min_distance": min_distance, "merge_plateaus": merge}
    got = streaming.local_maxima(maps, 0, streaming.map_stats(maps, 0, 2), 2, **options)
    np.testing.assert_array_equal(got, in_memory(heat, **options))


def test_a_decoding_store_read_in_slabs_with_halos_decodes_each_row_once_a_pass(rng):
    heat = rng.random((1, 50, 6, 5))
    boxes = streaming._boxes(50, 4, 3)
    direct = streaming.Slabs(threads=2).map(_slab_copy, Maps(heat, 3), 0, boxes)
    store = _Counting(heat, (1, 1, 6, 5))
    banded = streaming.Slabs(threads=2).map(_slab_copy, Maps(store, 3), 0, boxes)
    for (box, want), (same, got) in zip(direct, banded):
        assert box == same
        np.testing.assert_array_equal(got, want)
    rows = sorted(store.reads)
    assert sum(hi - lo for lo, hi in rows) == 50 and all(a[1] == b[0] for a, b in zip(rows, rows[1:]))


@pytest.mark.parametrize("normalize", ["minmax", "max", "none"])
def test_the_soft_argmax_taken_in_the_peak_pass_is_the_soft_argmax_pass_bit_for_bit(rng, normalize):
    from peakloc.backends import numpy_backend

    heat = rng.random((60, 120, 100)).astype(np.float32)  # 720 Ki values: more than one block
    heat[30, 50, 40] = 3.0
    heat[10, 5, 7] = np.nan
    maps = Maps(heat[np.newaxis], 3)
    rows = 2 * numpy_backend.large_map_rows(heat.shape)
    stats = streaming.map_stats(maps, 0, rows)
    alone = streaming.soft_argmax(maps, 0, stats, 2.0, normalize, rows)
    peaks, soft = streaming.local_maxima(maps, 0, stats, rows, 5, 2, soft=(2.0, normalize))
    in_memory, _ = numpy_backend.soft_argmax(heat, 2.0, 3, normalize)
    assert soft.tolist() == alone.tolist() == in_memory.tolist()
    np.testing.assert_array_equal(peaks, streaming.local_maxima(maps, 0, stats, rows, 5, 2))


@pytest.mark.parametrize("rows", [1, 4, 30])
def test_the_extremes_pass_takes_a_volumes_projections_and_finite_range(rng, rows):
    heat = rng.random((30, 9, 11)).astype(np.float32)
    heat[3, 2, :] = np.nan
    heat[5, 4, 6] = np.inf
    heat[7, :, 3] = -np.inf
    maps = Maps(heat[np.newaxis], 3)
    streaming.map_stats(maps, 0, rows, picture=1)
    seen = maps.seen[0]
    plain = np.where(np.isinf(heat), np.nan, heat).astype(np.float64)
    for axis, got in enumerate(seen["projections"]):
        np.testing.assert_array_equal(got, np.fmax.reduce(plain, axis=axis))
    finite = heat[np.isfinite(heat)]
    assert seen["range"] == (float(finite.min()), float(finite.max()))
    assert maps[0].seen is seen


def test_a_decoded_copy_reads_each_chunk_once_holds_the_map_and_goes_with_its_stack(rng):
    import gc
    import os

    heat = rng.random((2, 50, 6, 5)).astype(np.float32)
    store = _Counting(heat, (1, 16, 6, 5))
    copy = streaming.decoded_copy(Maps(store, 3), 1, rows=4)
    np.testing.assert_array_equal(copy.read(0), heat[1])
    assert sorted(store.reads) == [(0, 16), (16, 32), (32, 48), (48, 50)]
    path = copy.keepalive.name
    assert os.path.exists(path)
    del copy
    gc.collect()
    assert not os.path.exists(path)


def test_a_temporary_file_the_disk_cannot_hold_fails_before_it_is_mapped(monkeypatch, tmp_path):
    import errno
    import os

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    with pytest.raises(OSError, match="No space"):
        streaming.temporary_npy("t-", np.float32, (4, 5), str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_kept_boxes_serve_windows_inside_a_box_read_before_without_reading_again(rng):
    from peakloc.ops.lazy import KeptBoxes

    heat = rng.random((1, 60, 40, 30))
    store = _Counting(heat, (1, 60, 40, 30))
    kept = KeptBoxes(Maps(store, 3), margin=4, limit=1 << 20)
    boxes = [(slice(20, 25), slice(10, 13), slice(5, 9)), (slice(18, 27), slice(8, 15), slice(3, 11)), (slice(21, 22),)]
    for box in boxes:
        np.testing.assert_array_equal(kept.read(0, box), heat[(0, *box)])
    assert len(store.reads) == 2  # the third box, whole rows, is larger than the margin: read itself
    assert kept[0, 22, 11, 6] == heat[0, 22, 11, 6] and len(store.reads) == 2
    small = KeptBoxes(Maps(store, 3), margin=0, limit=16000)  # room for sixteen 5x5x5 float64 boxes
    for z in range(20):
        small.read(0, (slice(z, z + 5), slice(0, 5), slice(0, 5)))
    assert [start[0] for _, start, _, _ in small.kept] == list(range(4, 20))  # the oldest went first


def test_the_noise_sample_of_a_map_read_in_pieces_reads_only_its_sampled_rows(rng, monkeypatch):
    from peakloc.ops import peaks

    monkeypatch.setattr(peaks, "NOISE_SAMPLES", 100)
    heat = rng.random((1, 40, 30)).astype(np.float32)
    step = peaks.noise_rows(heat.shape[1:])
    assert step > 1
    store = _Counting(heat, (1, 1, 30))
    sample = streaming.noise_sample(Maps(store, 2), 0, rows=10)
    np.testing.assert_array_equal(sample, heat[0, ::step].ravel())
    assert sum(len(range(lo, hi, step)) for lo, hi in store.reads) == len(range(0, 40, step))
    assert store.steps == {step}


@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
@pytest.mark.parametrize("rows", [1, 7, 40])
def test_the_extremes_pass_pools_a_large_2d_map_as_the_overlay_would(rng, dtype, rows):
    heat = (rng.random((40, 29)) * 1000).astype(dtype)
    if heat.dtype.kind == "f":
        heat[4:9, 3:7] = np.nan
        heat[20, 5] = np.inf
    maps = Maps(heat[np.newaxis], 2)
    streaming.map_stats(maps, 0, rows, picture=3)
    factor, pooled = maps.seen[0]["pooled"]
    grown = np.full((42, 30), np.nan)
    grown[:40, :29] = np.where(np.isfinite(heat), heat, np.nan)
    expected = np.fmax.reduce(np.fmax.reduce(grown.reshape(14, 3, 10, 3), axis=3), axis=1)
    assert factor == 3
    np.testing.assert_array_equal(pooled, expected)
    from peakloc.output.overlay import max_pool

    np.testing.assert_array_equal(max_pool(heat, 3), expected)  # the overlay's own, on the map in memory
    assert max_pool(maps[0], 3) is pooled


def _spots(rng, shape: tuple[int, ...], count: int, sigma: float = 1.5) -> np.ndarray:
    """float32 noise in [0, 0.1) with ``count`` Gaussian spots of height 1."""
    heat = rng.random(shape) * 0.1
    grids = np.indices(shape)
    for centre in rng.uniform(0, shape, (count, len(shape))):
        heat += np.exp(-sum((g - c) ** 2 for g, c in zip(grids, centre)) / (2 * sigma**2))
    return heat.astype(np.float32)


@pytest.mark.parametrize("normalize", ["minmax", "max", "none"])
def test_a_surveys_soft_argmax_of_a_few_spots_reads_each_row_once_and_is_the_in_memory_one(rng, monkeypatch, normalize):
    from peakloc.backends import numpy_backend

    # Blocks of 4096 values: the in-memory answer too is summed in slabs of 2 rows, 15 of them.
    monkeypatch.setattr(numpy_backend, "BLOCK_ELEMENTS", 4096)
    heat = _spots(rng, (30, 40, 50), 6)
    store = _Counting(heat[np.newaxis], (1, 1, 40, 50))
    maps = Maps(store, 3)
    surveyed = streaming.survey(maps, 0, 4, peaks=(2, 256), soft=(100.0, normalize))
    want, _ = numpy_backend.soft_argmax(heat, 100.0, 3, normalize)
    assert surveyed.soft.tolist() == want.tolist()
    # Each row once in the pass, and the slab of the first maximum again for its argmax: nothing else.
    first = int(np.unravel_index(np.argmax(heat), heat.shape)[0]) // 4 * 4
    assert sum(hi - lo for lo, hi in store.reads) == 30 + 4
    assert (first, first + 4) in store.reads


@pytest.mark.parametrize(
    "case,normalize",
    [("a far lower minimum in the last slab", "minmax")]
    + [(case, n) for case in ("uniform noise, beta 2", "a constant map") for n in ("minmax", "max", "none")],
)
def test_a_surveys_soft_argmax_reads_again_where_its_lists_fall_short_and_is_the_in_memory_one(
    rng, monkeypatch, case, normalize
):
    from peakloc.backends import numpy_backend

    monkeypatch.setattr(numpy_backend, "BLOCK_ELEMENTS", 4096)
    beta = 2.0 if case.startswith("uniform") else 100.0
    heat = rng.random((30, 40, 50)).astype(np.float32) if case.startswith("uniform") else _spots(rng, (30, 40, 50), 6)
    if case.startswith("a far lower"):
        heat[29, 3, 4] = -50.0  # the map's range is 50x the first slabs': their lists were made too high
    elif case == "a constant map":
        heat[:] = 0.25
    store = _Counting(heat[np.newaxis], (1, 1, 40, 50))
    got = streaming.survey(Maps(store, 3), 0, 4, soft=(beta, normalize)).soft
    want, _ = numpy_backend.soft_argmax(heat, beta, 3, normalize)
    assert got.tolist() == want.tolist()
    assert sum(hi - lo for lo, hi in store.reads) > 30 + 4  # slabs were read again


@pytest.mark.parametrize("normalize", ["minmax", "max", "none"])
def test_a_surveys_soft_argmax_ignores_nan_and_inf_as_the_in_memory_one_does(rng, monkeypatch, normalize):
    from peakloc.backends import numpy_backend

    monkeypatch.setattr(numpy_backend, "BLOCK_ELEMENTS", 4096)
    heat = _spots(rng, (30, 40, 50), 6)
    peak = np.unravel_index(np.argmax(heat), heat.shape)
    heat[2, 5, 5], heat[peak[0], 0, 9], heat[25, 39, 49] = np.nan, np.inf, -np.inf
    store = _Counting(heat[np.newaxis], (1, 1, 40, 50))
    got = streaming.survey(Maps(store, 3), 0, 4, soft=(100.0, normalize)).soft
    want, _ = numpy_backend.soft_argmax(heat, 100.0, 3, normalize)
    assert got.tolist() == want.tolist()
    assert sum(hi - lo for lo, hi in store.reads) == 30 + 4  # +inf beside the peak is not listed: read once


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
@pytest.mark.parametrize("threshold", [{}, {"threshold_rel": 0.97}, {"threshold_abs": 0.985}])
def test_peaks_from_a_surveys_candidates_are_the_in_memory_ones(rng, monkeypatch, dtype, threshold):
    from peakloc.ops.peaks import local_maxima as in_memory

    # Each slab hands on 3 candidates at first, taken under no threshold: the threshold applied after must
    # leave what a read under it would have handed on, and more be read where the peaks need it.
    monkeypatch.setattr(streaming, "SLAB_CANDIDATES", 3)
    heat = rng.random((12, 30, 20))
    if dtype == np.uint8:
        heat = heat * 9
        threshold = {k: v * 8 if k == "threshold_abs" else v for k, v in threshold.items()}
    heat = heat.astype(dtype)
    maps = Maps(heat[np.newaxis], 3)
    options = {"num_peaks": 400, "min_distance": 2, **threshold}  # thresholds that leave fewer
    surveyed = streaming.survey(maps, 0, 2, peaks=(2, streaming.first_candidates(400)))
    got = streaming.local_maxima(maps, 0, surveyed.stats, 2, surveyed=surveyed.candidates, **options)
    np.testing.assert_array_equal(got, in_memory(heat, **options))


@pytest.mark.parametrize("threshold", [{"threshold_rel": 0.999}, {"threshold_abs": 0.999}])
def test_a_surveys_candidates_under_a_threshold_that_leaves_few_need_no_second_read(rng, monkeypatch, threshold):
    from peakloc.ops.peaks import local_maxima as in_memory

    # 4 candidates a slab at first: more than any slab has above the threshold, fewer than it has in all.
    monkeypatch.setattr(streaming, "SLAB_CANDIDATES", 4)
    heat = rng.random((12, 30, 20)).astype(np.float32)
    store = _Counting(heat[np.newaxis], (1, 1, 30, 20))
    maps = Maps(store, 3)
    options = {"num_peaks": 400, "min_distance": 2, "merge_plateaus": False, **threshold}
    surveyed = streaming.survey(maps, 0, 2, peaks=(2, streaming.first_candidates(400)))
    read = sum(hi - lo for lo, hi in store.reads)
    got = streaming.local_maxima(maps, 0, surveyed.stats, 2, surveyed=surveyed.candidates, **options)
    np.testing.assert_array_equal(got, in_memory(heat, **options))
    assert sum(hi - lo for lo, hi in store.reads) == read  # the survey's candidates were enough


def test_kept_boxes_read_ahead_side_by_side_serve_the_windows_after_within_their_limit(rng):
    from peakloc.ops.lazy import KeptBoxes

    heat = rng.random((1, 60, 40, 30))
    store = _Counting(heat, (1, 60, 40, 30))
    # Room for sixteen 9x9x9 float64 boxes (5^3 and a margin of 2): the seventeenth asked is not read ahead.
    kept = KeptBoxes(Maps(store, 3), margin=2, limit=16 * 9**3 * 8 + 100)
    wanted = [(0, (slice(z, z + 5), slice(5, 10), slice(5, 10))) for z in range(0, 51, 3)]
    kept.prefetch(wanted, threads=2)
    assert len(store.reads) == 16
    for b, box in wanted[:16]:
        np.testing.assert_array_equal(kept.read(b, box), heat[(b, *box)])
    assert len(store.reads) == 16  # served from what was read ahead
    np.testing.assert_array_equal(kept.read(*wanted[16]), heat[(0, *wanted[16][1])])
    assert len(store.reads) == 17


def test_kept_boxes_read_ahead_decode_each_chunk_they_cross_once(rng):
    from peakloc.ops.lazy import KeptBoxes

    heat = rng.random((1, 60, 40, 30))
    store = _Counting(heat, (1, 10, 40, 30))  # chunks of 10 rows
    kept = KeptBoxes(Maps(store, 3), margin=2, limit=1 << 20)
    # With their margins: rows 0-8 (chunk 0), 2-10 (chunks 0 and 1), 10-18 (chunk 1), 35-43 (chunks 3 and 4).
    wanted = [(0, (slice(z, z + 5), slice(5, 10), slice(4 * z % 20, 4 * z % 20 + 5))) for z in (1, 4, 12, 37)]
    kept.prefetch(wanted, threads=2)
    assert sorted(lo // 10 for lo, _ in store.reads) == [0, 1, 3, 4]
    for b, box in wanted:
        np.testing.assert_array_equal(kept.read(b, box), heat[(b, *box)])
    assert len(store.reads) == 4


def test_the_apis_soft_argmax_of_an_array_read_in_pieces_reads_a_few_spots_once(rng, monkeypatch):
    from peakloc.backends import numpy_backend

    monkeypatch.setattr(numpy_backend, "BLOCK_ELEMENTS", 4096)
    heat = _spots(rng, (30, 40, 50), 6)
    store = _Counting(heat[np.newaxis], (1, 1, 40, 50))
    got, nonfinite = streaming.each_soft_argmax(store, 100.0, 3, "minmax", block=8000)  # slabs of 4 rows
    want, _ = numpy_backend.soft_argmax(heat, 100.0, 3, "minmax")
    assert got[0].tolist() == want.tolist() and nonfinite == 0
    assert sum(hi - lo for lo, hi in store.reads) == 30 + 4  # once, and the argmax's slab again
