"""One input end to end: read_heatmaps and locate."""

import numpy as np
import pytest
import tifffile

from peakloc.errors import AxesError, NoFiniteValueError
from peakloc.io.axes import Layout
from peakloc.run import locate as locate_module
from peakloc.run.locate import locate, read_heatmaps
from peakloc.run.settings import Settings

from ..conftest import gaussian, reference_soft_argmax


def _two_channels():
    maps = np.stack([gaussian((20, 24), (5.0, 7.0), 1.5), gaussian((20, 24), (12.0, 15.0), 2.0)])
    maps[1] += 0.8 * gaussian((20, 24), (4.0, 19.0), 1.5)  # channel 1 has a second peak, channel 0 none
    return maps, Layout("C", (2,), "YX", (20, 24))


def test_read_heatmaps_moves_batch_axes_first_in_c_order(tmp_path):
    data = np.zeros((3, 4, 5, 6), np.float32)  # stored as Y, C, X, T
    data[1, 2, 3, 0] = 1
    np.save(tmp_path / "a.npy", data)
    heatmaps, layout = read_heatmaps(str(tmp_path / "a.npy"), Settings(axes="YCXT"))
    assert layout == Layout("CT", (4, 6), "YX", (3, 5)) and heatmaps.shape == (24, 3, 5)
    assert np.argwhere(heatmaps).tolist() == [[2 * 6 + 0, 1, 3]]


def test_read_heatmaps_takes_tiff_axes_from_its_metadata(tmp_path):
    tifffile.imwrite(tmp_path / "v.tif", np.zeros((2, 4, 5, 6), np.uint16), imagej=True, metadata={"axes": "TZYX"})
    heatmaps, layout = read_heatmaps(str(tmp_path / "v.tif"))
    assert layout.batch == "T" and layout.spatial == "ZYX" and heatmaps.shape == (2, 4, 5, 6)


def test_read_heatmaps_refuses_axes_that_do_not_fit(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((3, 4)))
    with pytest.raises(AxesError, match="`axes` CYX names 3 axes but the data has 2"):
        read_heatmaps(str(tmp_path / "a.npy"), Settings(axes="CYX"))


def test_locate_gives_every_method_with_missing_peaks_marked_once():
    maps, layout = _two_channels()
    located = locate(maps, layout, Settings(methods=("argmax", "softargmax", "gaussian"), peaks=3, threshold="50%"))
    assert list(located.peaks) == ["argmax", "softargmax", "gaussian"]
    argmax = located.peaks["argmax"]
    assert argmax.present.tolist() == [[True, False], [True, True]]
    assert argmax.coords[1, :2].tolist() == [[12, 15], [4, 19]]
    assert located.peaks["softargmax"].present.shape == (2, 1)
    np.testing.assert_allclose(located.peaks["softargmax"].coords[:, 0], reference_soft_argmax(maps), atol=1e-9)
    np.testing.assert_allclose(located.peaks["gaussian"].coords[0, 0], [5.0, 7.0], atol=1e-6)
    overlay = located.overlay_peaks()["gaussian"]
    assert np.isnan(overlay[0, 1]).all() and np.isfinite(overlay[1]).all()


def test_part_of_a_located_stack_is_that_heatmap_alone():
    maps, layout = _two_channels()
    settings = Settings(methods=("argmax", "dark", "local"), peaks=2, extra=True)
    together = locate(maps, layout, settings).part(1, Layout("", (), "YX", (20, 24)))
    alone = locate(maps[1:], Layout("", (), "YX", (20, 24)), settings)
    assert together.warnings() == alone.warnings() and together.layout == alone.layout
    for method, peaks in alone.peaks.items():
        other = together.peaks[method]
        np.testing.assert_array_equal(peaks.present, other.present)
        np.testing.assert_allclose(peaks.coords, other.coords, rtol=0, atol=1e-9)
        for column, values in peaks.shape.items():
            np.testing.assert_allclose(values, other.shape[column], rtol=1e-9)


def test_warnings_count_non_finite_values_and_fallbacks_per_input():
    maps, layout = _two_channels()
    maps[0, 0, 0] = np.nan
    maps[1, 3, 3] = np.inf
    located = locate(maps, layout, Settings(methods=("argmax", "quadratic"), peaks=2))
    assert located.nonfinite.tolist() == [1, 1]
    assert located.warnings() == ["2 non-finite values ignored"]
    one = np.zeros((1, 9, 9))
    one[0, 0, 4] = 1.0  # at the border: quadratic cannot work there
    assert locate(one, Layout("", (), "YX", (9, 9)), Settings(methods=("quadratic",))).warnings() == [
        "quadratic kept the integer peak for 1 peak (border, flat or non-positive neighbourhood, or failed fit)"
    ]


def test_a_heatmap_without_finite_values_is_named_by_its_index():
    maps, layout = _two_channels()
    maps[1] = np.nan
    with pytest.raises(NoFiniteValueError, match="heatmap C=1 has no finite value"):
        locate(maps, layout, Settings())


def test_normalized_table_coordinates_map_the_corners_to_plus_minus_one():
    maps = np.zeros((1, 5, 9))
    maps[0, 4, 8] = 1
    located = locate(maps, Layout("", (), "YX", (5, 9)), Settings(methods=("argmax",)))
    assert located.table_coords("normalized")["argmax"].tolist() == [[[1.0, 1.0]]]
    assert located.table_coords("pixel")["argmax"].tolist() == [[[4, 8]]]


def test_gaussian_after_the_two_spot_test_equals_its_fits_made_afresh(rng, monkeypatch):
    # The method reuses the test's own fits of the peaks that stay: they must be the fits it makes again.
    yy, xx = np.mgrid[:40, :48]
    spot = lambda y, x: 100 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.5**2))  # noqa: E731
    heat = 5 + spot(10, 10) + spot(20.3, 30.6) + spot(30, 14 - 1.2) + spot(30, 14 + 1.2)  # the last two merge
    maps = (heat + rng.normal(0, 1, heat.shape))[None]
    layout = Layout("", (), "YX", heat.shape)
    settings = Settings(methods=("gaussian",), peaks=6, threshold=30, extra=True)
    reused = locate(maps, layout, settings).peaks["gaussian"]
    assert reused.split.any() and not reused.split.all()  # some peaks new, some reused
    monkeypatch.setattr(locate_module, "_known_fits", lambda *args: None)
    afresh = locate(maps, layout, settings).peaks["gaussian"]
    np.testing.assert_array_equal(reused.present, afresh.present)
    np.testing.assert_array_equal(reused.coords, afresh.coords)
    np.testing.assert_array_equal(reused.error, afresh.error)
    for column, values in reused.shape.items():
        np.testing.assert_array_equal(values, afresh.shape[column])


def test_a_peak_beside_a_split_is_fitted_again_among_its_new_neighbours(monkeypatch):
    # A spot 4 px from a merged pair: once the pair splits, some of its window's samples lie nearer to one of
    # the two new spots than they did to the merged peak, so the test's own fit of it is not the one made
    # afresh; taking it anyway gives other coordinates.
    yy, xx = np.mgrid[:40, :48]
    spot = lambda y, x: 100 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.5**2))  # noqa: E731
    heat = 5 + spot(10, 10) + spot(30.3, 18) + spot(30, 14 - 1.2) + spot(30, 14 + 1.2)
    maps = (heat + np.random.default_rng(0).normal(0, 1, heat.shape))[None]
    layout = Layout("", (), "YX", heat.shape)
    settings = Settings(methods=("gaussian",), peaks=6, threshold=30, extra=True)
    reused = locate(maps, layout, settings).peaks["gaussian"]
    assert reused.split.sum() == 2
    monkeypatch.setattr(locate_module, "_known_fits", lambda *args: None)
    afresh = locate(maps, layout, settings).peaks["gaussian"]
    np.testing.assert_array_equal(reused.coords, afresh.coords)
    np.testing.assert_array_equal(reused.error, afresh.error)


def test_a_temporary_folder_on_tmpfs_is_memory_and_one_on_a_disk_is_not(tmp_path):
    from peakloc.run.locate import _in_memory_filesystem

    table = tmp_path / "mountinfo"
    table.write_text(
        "22 1 253:1 / / rw,relatime - ext4 /dev/vda rw\n"
        "25 22 0:23 / /tmp rw,nosuid - tmpfs tmpfs rw,size=1024k\n"
        "26 22 0:24 / /tmp/disk rw - xfs /dev/vdb rw\n"
        "27 22 0:25 / /my\\040space rw - ramfs ramfs rw\n"
    )
    found = {
        p: _in_memory_filesystem(p, str(table)) for p in ("/tmp", "/tmp/a/b", "/tmp/disk/x", "/tmpx", "/my space/z")
    }
    assert found == {"/tmp": True, "/tmp/a/b": True, "/tmp/disk/x": False, "/tmpx": False, "/my space/z": True}
    assert not _in_memory_filesystem("/tmp", str(tmp_path / "missing"))


def test_a_heatmap_is_warned_exactly_where_its_part_alone_has_warnings():
    from peakloc.run.locate import Located, MethodPeaks

    rng = np.random.default_rng(3)
    b, p = 64, 3
    present = np.cumsum(rng.random((b, p)) < 0.8, axis=1) == np.arange(1, p + 1)  # a rank only after the one before

    def peaks():
        return MethodPeaks(rng.random((b, p, 2)), rng.random((b, p)), present, rng.random((b, p)) < 0.05, {})

    located = Located(
        np.zeros((b, 4, 4)),
        Layout("B", (b,), "YX", (4, 4)),
        {"argmax": peaks(), "gaussian": peaks()},
        np.where(rng.random(b) < 0.1, 3, 0),
        "0",
    )
    one = Layout("", (), "YX", (4, 4))
    expected = [bool(located.part(i, one).warnings()) for i in range(b)]
    assert 0 < sum(expected) < b
    assert located.warned().tolist() == expected
