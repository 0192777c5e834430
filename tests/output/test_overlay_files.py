"""Overlay files: names, folders, protection of inputs, and what ``--overlay`` writes."""

import math

import cv2
import numpy as np
import pytest

from peakloc.cli import main
from peakloc.output import overlay
from peakloc.output.overlay_files import base_names, sanitize

from ..conftest import StrictRunner, gaussian
from .test_overlay import WHITE, centroid


def test_base_names_lengthen_with_folders_only_on_collisions():
    assert base_names(["a/frame.png", "b/frame.png", "c/other.npy"]) == {
        "a/frame.png": "a_frame",
        "b/frame.png": "b_frame",
        "c/other.npy": "other",
    }


def test_index_labels_become_safe_file_names():
    assert sanitize("T=0;C=2") == "T=0_C=2" and sanitize("///") == "_"


def _png(path, peak):
    heat = np.zeros((48, 64), np.uint8)
    heat[peak] = 200
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), heat)


def test_cli_writes_one_overlay_per_heatmap_and_keeps_the_table_unchanged(tmp_path):
    _png(tmp_path / "frame_007.png", (10, 20))
    np.save(tmp_path / "stack.npy", np.stack([gaussian((30, 30), (5 + i, 9)) for i in range(3)]))
    plain = StrictRunner().invoke(main, ["find", str(tmp_path / "frame_007.png")])
    result = StrictRunner().invoke(main, ["find", str(tmp_path / "frame_007.png"), "--overlay", str(tmp_path / "ov")])
    assert result.exit_code == 0 and result.stdout == plain.stdout
    result = StrictRunner().invoke(
        main,
        [
            "find",
            str(tmp_path / "stack.npy"),
            "--axes",
            "CYX",
            "--overlay",
            str(tmp_path / "ov"),
            "--overlay-sheet",
            "--colormap",
            "viridis",
        ],
    )
    assert result.exit_code == 0
    names = sorted(p.name for p in (tmp_path / "ov").iterdir() if p.name != "index.html")
    assert names == ["frame_007.png", "stack_C=0.png", "stack_C=1.png", "stack_C=2.png", "stack_sheet.png"]
    image = cv2.imread(str(tmp_path / "ov" / "frame_007.png"))
    f = math.ceil(256 / 48)
    top = overlay.LINE_HEIGHT + 6  # title band
    x, y = centroid(image[top : top + 48 * f], WHITE)
    assert abs(x - (20.5 * f - 0.5)) < 0.5 and abs(y - (10.5 * f - 0.5)) < 0.5


def test_same_stem_in_different_folders_gets_different_overlays(tmp_path):
    _png(tmp_path / "a" / "frame.png", (5, 5))
    _png(tmp_path / "b" / "frame.png", (40, 60))
    result = StrictRunner().invoke(
        main,
        [
            "find",
            str(tmp_path / "a" / "frame.png"),
            str(tmp_path / "b" / "frame.png"),
            "--overlay",
            str(tmp_path / "ov"),
        ],
    )
    assert result.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "ov").iterdir()) == ["a_frame.png", "b_frame.png", "index.html"]


def test_overlay_never_overwrites_an_input(tmp_path):
    _png(tmp_path / "frame.png", (5, 5))
    before = (tmp_path / "frame.png").read_bytes()
    result = StrictRunner().invoke(main, ["find", str(tmp_path / "frame.png"), "--overlay", str(tmp_path)])
    assert result.exit_code == 1 and "would overwrite an input" in result.stderr
    assert (tmp_path / "frame.png").read_bytes() == before
    assert result.stdout.count("frame.png") == 2  # the rows are still written


def test_overlay_folder_that_cannot_be_made_fails_each_input_and_keeps_the_table(tmp_path):
    _png(tmp_path / "frame.png", (5, 5))
    (tmp_path / "file").write_text("x")
    result = StrictRunner().invoke(main, ["find", str(tmp_path / "frame.png"), "--overlay", str(tmp_path / "file")])
    assert result.exit_code == 1
    assert f"peakloc: error: {tmp_path / 'frame.png'}: cannot create overlay folder" in result.stderr
    assert result.stdout.count("frame.png") == 2


def test_overlay_options_need_overlay(tmp_path):
    _png(tmp_path / "frame.png", (5, 5))
    result = StrictRunner().invoke(main, ["find", str(tmp_path / "frame.png"), "--overlay-sheet"])
    assert result.exit_code == 2 and "needs --overlay" in result.stderr


def test_unknown_colormap_is_a_usage_error(tmp_path):
    _png(tmp_path / "frame.png", (5, 5))
    result = StrictRunner().invoke(
        main, ["find", str(tmp_path / "frame.png"), "--overlay", str(tmp_path / "o"), "--colormap", "sunset"]
    )
    assert result.exit_code == 2 and "not an OpenCV colour map" in result.stderr


def test_background_option_blends_over_the_photo(tmp_path):
    _png(tmp_path / "frame.png", (10, 20))
    cv2.imwrite(str(tmp_path / "photo.jpg"), np.full((192, 256, 3), 100, np.uint8))
    result = StrictRunner().invoke(
        main,
        [
            "find",
            str(tmp_path / "frame.png"),
            "--overlay",
            str(tmp_path / "o"),
            "--background",
            str(tmp_path / "photo.jpg"),
        ],
    )
    assert result.exit_code == 0
    assert cv2.imread(str(tmp_path / "o" / "frame.png")).shape[1] == 256


def test_overlays_from_parallel_workers_are_all_written(tmp_path):
    import subprocess
    import sys

    from peakloc.run import batch

    count = batch.PARALLEL_MIN_INPUTS + 4
    for i in range(count):
        _png(tmp_path / "in" / f"f{i:02d}.png", (5 + i, 7))
    out = subprocess.run(
        [sys.executable, "-m", "peakloc", "find", str(tmp_path / "in"), "--overlay", str(tmp_path / "ov"), "-q"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "ov").iterdir()) == [f"f{i:02d}.png" for i in range(count)] + [
        "index.html"
    ]
    image = cv2.imread(str(tmp_path / "ov" / "f09.png"))
    f = math.ceil(256 / 48)
    top = overlay.LINE_HEIGHT + 6
    x, y = centroid(image[top : top + 48 * f], WHITE)
    assert abs(x - (7.5 * f - 0.5)) < 0.5 and abs(y - (14.5 * f - 0.5)) < 0.5


def test_an_overlay_never_writes_through_a_link_or_over_a_fifo(tmp_path):
    import os

    _png(tmp_path / "a.png", (10, 20))
    _png(tmp_path / "b.png", (11, 21))
    (tmp_path / "ov").mkdir()
    (tmp_path / "elsewhere.png").write_bytes(b"keep")
    (tmp_path / "ov" / "a.png").symlink_to(tmp_path / "elsewhere.png")
    os.mkfifo(tmp_path / "ov" / "b.png")
    result = StrictRunner().invoke(
        main, ["find", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--overlay", str(tmp_path / "ov"), "-q"]
    )
    assert result.exit_code == 1 and result.stdout.count("\n") == 5
    assert result.stderr.count("exists and is not a regular file; peakloc does not write over it") == 2
    assert (tmp_path / "elsewhere.png").read_bytes() == b"keep"


def test_overlay_range_and_spacing_need_overlay(tmp_path):
    _png(tmp_path / "a.png", (3, 4))
    for option, value in (("--overlay-range", "1%,99%"), ("--spacing", "2,1,1")):
        result = StrictRunner().invoke(main, ["find", str(tmp_path / "a.png"), option, value])
        assert result.exit_code == 2 and f"{option} needs --overlay DIR" in result.stderr


@pytest.mark.parametrize(
    "option, value",
    [("--overlay-range", "5%,3"), ("--overlay-range", "9,1"), ("--spacing", "1,0,1"), ("--spacing", "2")],
)
def test_bad_overlay_range_or_spacing_is_a_usage_error(tmp_path, option, value):
    _png(tmp_path / "a.png", (3, 4))
    result = StrictRunner().invoke(
        main, ["find", str(tmp_path / "a.png"), "--overlay", str(tmp_path / "ov"), option, value]
    )
    assert result.exit_code == 2 and option in result.stderr


def _volume(shape=(6, 40, 50), peak=(3, 20, 25)):
    vol = np.zeros(shape, np.float32)
    vol[peak] = 1
    return vol


def _overlay_width(path):
    return cv2.imread(str(path)).shape[1]


def test_voxel_size_of_an_imagej_tiff_stretches_its_volume_overlay(tmp_path):
    import tifffile

    tifffile.imwrite(
        tmp_path / "v.tif",
        _volume(),
        imagej=True,
        resolution=(1 / 0.5, 1 / 0.5),
        metadata={"spacing": 4.0, "axes": "ZYX"},
    )
    tifffile.imwrite(tmp_path / "w.tif", _volume())
    result = StrictRunner().invoke(
        main, ["find", str(tmp_path / "v.tif"), str(tmp_path / "w.tif"), "--overlay", str(tmp_path / "ov"), "-q"]
    )
    assert result.exit_code == 0, result.stderr
    f = overlay.auto_scale((40, 50))
    # The YZ panel: 6 slices of 4 / 0.5 = 8 pixels' size each, against 64 px (the least) without metadata
    assert _overlay_width(tmp_path / "ov" / "v.png") == 50 * f + 6 + 50 * f + 6 + 6 * 8 * f
    assert _overlay_width(tmp_path / "ov" / "w.png") == 50 * f + 6 + 50 * f + 6 + max(64, 6 * f)


def test_spacing_option_overrides_the_files_voxel_size(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "v.tif", _volume(), imagej=True, metadata={"spacing": 4.0, "axes": "ZYX"})
    result = StrictRunner().invoke(
        main, ["find", str(tmp_path / "v.tif"), "--overlay", str(tmp_path / "ov"), "--spacing", "20,1,1", "-q"]
    )
    assert result.exit_code == 0, result.stderr
    f = overlay.auto_scale((40, 50))
    assert _overlay_width(tmp_path / "ov" / "v.png") == 50 * f + 6 + 50 * f + 6 + min(6 * 20 * f, 4096 // 6 * 6)


def test_voxel_size_is_read_from_ome_tiff_and_ome_zarr(tmp_path):
    import tifffile
    import zarr

    from peakloc.io.spacing import voxel_size

    tifffile.imwrite(
        tmp_path / "v.ome.tif",
        _volume(),
        ome=True,
        metadata={
            "axes": "ZYX",
            "PhysicalSizeZ": 2.0,
            "PhysicalSizeY": 500.0,
            "PhysicalSizeYUnit": "nm",
            "PhysicalSizeX": 0.5,
        },
    )
    assert voxel_size(str(tmp_path / "v.ome.tif"), "ZYX") == (2.0, 0.5, 0.5)
    root = zarr.open_group(str(tmp_path / "v.zarr"), mode="w", zarr_format=2)
    root.create_array("0", shape=(6, 40, 50), dtype="f4")
    axes = [{"name": n, "type": "space"} for n in "zyx"]
    root.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": axes,
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [3.0, 0.25, 0.25]}]}],
        }
    ]
    assert voxel_size(str(tmp_path / "v.zarr"), "ZYX") == (3.0, 0.25, 0.25)
    assert voxel_size(str(tmp_path / "v.zarr"), "YX") == (0.25, 0.25)
    np.save(tmp_path / "v.npy", _volume())
    assert voxel_size(str(tmp_path / "v.npy"), "ZYX") is None


def test_lower_maxima_leave_out_the_peaks_in_the_table():
    from peakloc.io.axes import layout_of
    from peakloc.run.batch import lower_maxima
    from peakloc.run.locate import locate
    from peakloc.run.settings import Settings

    heat = np.zeros((1, 30, 30))
    for i, (y, x) in enumerate([(5, 5), (5, 20), (20, 5), (20, 20)]):
        heat[0, y, x] = 10 - i
    settings = Settings(methods=("argmax",), peaks=2)
    located = locate(heat, layout_of((1, 30, 30), "CYX"), settings)
    lower = lower_maxima(located, settings)
    assert [sorted(map(tuple, p.astype(int).tolist())) for p in lower] == [[(20, 5), (20, 20)]]
    assert lower_maxima(located, Settings(methods=("argmax",))) is None
