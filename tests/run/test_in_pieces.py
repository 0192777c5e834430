"""Inputs read in pieces give the in-memory table: every method, slabs forced tiny, peaks across slab borders."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peakloc.backends import numpy_backend
from peakloc.io.axes import Layout
from peakloc.ops.lazy import Maps
from peakloc.run.locate import locate
from peakloc.run.settings import METHODS, Settings


@pytest.fixture
def small_blocks(monkeypatch):
    """The NumPy back end's large-map path from 64 values on, so that small maps take it too.

    A smoothed map's temporary file goes to a disk (where ``TMPDIR`` is tmpfs, a budget of a few bytes
    would refuse it: see ``test_smoothing``).
    """
    from peakloc.run import locate as run_locate

    monkeypatch.setattr(numpy_backend, "BLOCK_ELEMENTS", 64)
    monkeypatch.setattr(run_locate, "_in_memory_filesystem", lambda path: False)


def _same(a, b):
    assert list(a.peaks) == list(b.peaks)
    for method in a.peaks:
        x, y = a.peaks[method], b.peaks[method]
        np.testing.assert_array_equal(x.present, y.present, err_msg=method)
        mask = x.present
        np.testing.assert_allclose(x.coords[mask], y.coords[mask], rtol=0, atol=1e-9, err_msg=method)
        np.testing.assert_allclose(
            x.values[mask].astype(float), y.values[mask].astype(float), rtol=1e-12, err_msg=method
        )
        np.testing.assert_array_equal(x.fallback[mask], y.fallback[mask], err_msg=method)
        for column in x.shape:
            np.testing.assert_allclose(x.shape[column][mask], y.shape[column][mask], rtol=1e-9, err_msg=column)
    np.testing.assert_array_equal(a.nonfinite, b.nonfinite)
    assert a.warnings() == b.warnings()


@st.composite
def volumes(draw):
    ndim = draw(st.sampled_from([2, 3]))
    shape = tuple(draw(st.integers(6, 24 if ndim == 2 else 10)) for _ in range(ndim))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    heat = 0.05 * rng.random(shape)
    for _ in range(draw(st.integers(1, 4))):
        centre = rng.uniform(0, np.array(shape) - 1)
        heat += rng.uniform(0.3, 1) * np.exp(-sum((g - c) ** 2 for g, c in zip(grids, centre)) / (2 * 1.5**2))
    kind = draw(st.sampled_from(["float32", "float64", "uint8", "uint16"]))
    if kind.startswith("uint"):
        heat = np.round(heat / heat.max() * np.iinfo(kind).max).astype(kind)
    else:
        heat = heat.astype(kind)
        if draw(st.booleans()):
            heat[tuple(rng.integers(0, n) for n in shape)] = np.nan
    if draw(st.booleans()):  # a plateau across the first axis's slab borders
        heat[tuple(slice(2, 5) for _ in shape)] = np.nanmax(heat)
    return heat


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    heat=volumes(),
    peaks=st.integers(1, 4),
    min_distance=st.integers(1, 3),
    threshold=st.sampled_from([None, "30%"]),
    normalize=st.sampled_from(["minmax", "max", "none"]),
    smooth=st.sampled_from([0.0, 0.0, 1.0]),
)
def test_a_map_read_in_slabs_gives_the_in_memory_answer(
    small_blocks, heat, peaks, min_distance, threshold, normalize, smooth
):
    ndim = heat.ndim
    options = Settings(
        methods=METHODS,
        peaks=peaks,
        min_distance=min_distance,
        threshold=threshold,
        normalize=normalize,
        beta=20.0,
        smooth=smooth,
        extra=True,
    )
    layout = Layout("", (), "ZYX"[-ndim:], heat.shape)
    whole = locate(heat[np.newaxis], layout, options)
    pieces = locate(Maps(heat[np.newaxis], ndim), layout, options, budget=1)  # one row (or so) per slab
    _same(whole, pieces)


def test_maps_that_fit_are_located_in_groups_with_the_same_answer(rng):
    maps = rng.random((7, 5, 12, 10)).astype(np.float32)  # T, C, Y, X
    layout = Layout("TC", (7, 5), "YX", (12, 10))
    options = Settings(methods=METHODS, peaks=2, extra=True)
    whole = locate(maps.reshape(35, 12, 10), layout, options)
    budget = 3 * 12 * 10 * (4 + 52)  # about three maps at a time
    _same(whole, locate(Maps(maps, 2), layout, options, budget=budget))


def test_a_stack_in_another_axis_order_is_read_as_its_layout(rng):
    stored = rng.random((12, 3, 10)).astype(np.float32)  # Y, C, X
    layout = Layout("C", (3,), "YX", (12, 10))
    whole = locate(np.ascontiguousarray(stored.transpose(1, 0, 2)), layout, Settings(methods=METHODS))
    _same(whole, locate(Maps(stored, 2, order=(1, 0, 2)), layout, Settings(methods=METHODS), budget=1))


def test_a_zarr_array_is_read_in_pieces(small_blocks, rng, tmp_path):
    zarr = pytest.importorskip("zarr")
    heat = rng.random((16, 14, 12)).astype(np.float32)
    store = zarr.open(str(tmp_path / "v.zarr"), mode="w", shape=heat.shape, chunks=(4, 7, 6), dtype="f4")
    store[:] = heat
    layout = Layout("", (), "ZYX", heat.shape)
    options = Settings(methods=METHODS, peaks=3, min_distance=2)
    _same(
        locate(heat[np.newaxis], layout, options),
        locate(Maps(zarr.open(str(tmp_path / "v.zarr"), mode="r"), 3), layout, options, budget=1),
    )
