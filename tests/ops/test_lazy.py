"""The public functions on arrays read in pieces: memmaps, Zarr and Dask arrays, never loaded whole."""

import numpy as np
import pytest

import peakloc
from peakloc.ops import streaming
from peakloc.ops.lazy import Maps, is_lazy

from ..conftest import gaussian


@pytest.fixture
def stack(tmp_path):
    maps = np.stack([gaussian((30, 26), (7.3 + 3 * k, 11.6), 2.0) for k in range(3)]).astype(np.float32)
    maps[1, 0, 0] = np.nan
    path = tmp_path / "m.npy"
    np.save(path, maps)
    return maps, np.load(path, mmap_mode="r")


def _lazy_kinds(maps, tmp_path):
    yield np.load(tmp_path / "m.npy", mmap_mode="r")
    zarr = pytest.importorskip("zarr")
    z = zarr.open(str(tmp_path / "m.zarr"), mode="w", shape=maps.shape, chunks=(1, 8, 8), dtype=maps.dtype)
    z[:] = maps
    yield z


def test_lazy_arrays_are_recognised():
    assert not is_lazy(np.zeros(3)) and not is_lazy([1, 2])


@pytest.mark.parametrize("block", [streaming.DEFAULT_BLOCK, 20])  # whole maps, and slabs of one row
def test_every_public_function_takes_arrays_read_in_pieces(stack, tmp_path, block, monkeypatch):
    monkeypatch.setattr(streaming, "DEFAULT_BLOCK", block)
    from peakloc.backends import numpy_backend

    monkeypatch.setattr(numpy_backend, "BLOCK_ELEMENTS", 64)  # the large-map path on small maps
    maps, _ = stack
    with pytest.warns(peakloc.NonFiniteWarning):
        expected = {
            "argmax": peakloc.argmax(maps),
            "soft": peakloc.soft_argmax(maps, beta=30.0),
            "peaks": peakloc.find_peaks(maps, num_peaks=2, threshold="10%"),
        }
    for lazy in _lazy_kinds(maps, tmp_path):
        with pytest.warns(peakloc.NonFiniteWarning):
            got_argmax = peakloc.argmax(lazy)
            got_soft = peakloc.soft_argmax(lazy, beta=30.0)
        assert isinstance(got_argmax, np.ndarray) and isinstance(got_soft, np.ndarray)
        np.testing.assert_array_equal(got_argmax, expected["argmax"])
        np.testing.assert_allclose(got_soft, expected["soft"], rtol=0, atol=1e-9)
        for got, want in zip(peakloc.find_peaks(lazy, num_peaks=2, threshold="10%"), expected["peaks"]):
            np.testing.assert_array_equal(got, want)
        points = expected["argmax"][:, None, :]
        for method in ("local", "quadratic", "dark", "gaussian"):
            np.testing.assert_allclose(
                peakloc.refine(lazy, points, method), peakloc.refine(maps, points, method), rtol=0, atol=1e-9
            )
        np.testing.assert_allclose(peakloc.smooth(lazy, 1.0), peakloc.smooth(maps, 1.0), equal_nan=True)


def test_dask_arrays_are_computed_piece_by_piece(stack):
    da = pytest.importorskip("dask.array")
    maps, _ = stack
    lazy = da.from_array(np.nan_to_num(maps), chunks=(1, 10, 26))
    np.testing.assert_array_equal(peakloc.argmax(lazy), peakloc.argmax(np.nan_to_num(maps)))
    np.testing.assert_allclose(peakloc.soft_argmax(lazy), peakloc.soft_argmax(np.nan_to_num(maps)), atol=1e-9)


def test_maps_read_boxes_in_any_stored_axis_order(rng):
    stored = rng.random((5, 3, 7))  # Y, C, X
    maps = Maps(stored, 2, order=(1, 0, 2))
    assert maps.shape == (3, 5, 7)
    np.testing.assert_array_equal(maps.read(2), stored[:, 2, :])
    np.testing.assert_array_equal(maps.read(1, (slice(1, 3), slice(4, 6))), stored[1:3, 1, 4:6])
    assert maps[(2, 4, 6)] == stored[4, 2, 6]


def test_a_chunked_store_is_read_one_chunk_column_at_a_time(tmp_path, rng):
    zarr = pytest.importorskip("zarr")
    heat = rng.random((20, 33, 47)).astype(np.float32)
    store = zarr.open_array(tmp_path / "h.zarr", mode="w", shape=heat.shape, chunks=(7, 10, 9), dtype="f4")
    store[:] = heat
    maps = Maps(store, 2)
    for b, box in [(3, ()), (0, (slice(5, 30),)), (19, (slice(2, 3), slice(1, 46))), (7, (slice(0, 33), slice(8, 9)))]:
        np.testing.assert_array_equal(maps.read(b, box), heat[(b, *box)])


def test_a_read_into_out_writes_the_same_values_in_any_stored_axis_order(tmp_path, rng):
    zarr = pytest.importorskip("zarr")
    stored = rng.random((9, 3, 31)).astype(np.float32)  # Y, C, X
    store = zarr.open_array(tmp_path / "s.zarr", mode="w", shape=stored.shape, chunks=(4, 1, 8), dtype="f4")
    store[:] = stored
    for array in (stored, store):
        maps = Maps(array, 2, order=(1, 0, 2))
        out = np.full((5, 26), np.nan, np.float32)
        assert maps.read(1, (slice(2, 7), slice(3, 29)), out=out) is out
        np.testing.assert_array_equal(out, stored[2:7, 1, 3:29])


def test_a_zarr_piece_is_decoded_into_the_array_given_not_returned_anew(tmp_path, rng):
    zarr = pytest.importorskip("zarr")
    from peakloc.ops.lazy import _piece

    heat = rng.random((6, 20, 30)).astype(np.float32)
    store = zarr.open_array(tmp_path / "p.zarr", mode="w", shape=heat.shape, chunks=(3, 8, 8), dtype="f4")
    store[:] = heat
    band = np.zeros((4, 20, 30), np.float32)
    into = band[1:3, :, 8:24]  # not contiguous: part of a larger array, as a band's chunk column is
    assert _piece(store, (slice(2, 4), slice(None), slice(8, 24)), into) is into
    np.testing.assert_array_equal(band[1:3, :, 8:24], heat[2:4, :, 8:24])
    assert not band[0].any() and not band[3].any() and not band[1:3, :, :8].any()
