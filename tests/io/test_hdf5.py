"""HDF5 inputs (files written by h5py itself): ilastik's probability maps, datasets picked by path, bad files."""

import csv
import io
import json

import numpy as np
import pytest

from peakloc.cli import main

from ..conftest import StrictRunner, gaussian

h5py = pytest.importorskip("h5py", reason="h5py is part of the test install (make install)")


def run(*args):
    result = StrictRunner().invoke(main, ["find", *map(str, args), "-q"])
    return result.exit_code, list(csv.DictReader(io.StringIO(result.stdout))), result.stderr


def rows(*args, keep=("path",)):
    code, found, stderr = run(*args)
    assert code == 0, stderr
    return [{k: v for k, v in r.items() if k not in keep} for r in found]


@pytest.fixture
def classes():
    """Three class volumes ``(z, y, x)`` of a probability map, two spots each."""
    return [
        np.maximum(
            gaussian((12, 20, 24), (4.2 + c, 6.6, 7.1 + c), 1.5), gaussian((12, 20, 24), (7.5, 14.2 - c, 17.0), 2.0)
        ).astype(np.float32)
        for c in range(3)
    ]


def _ilastik(path, classes, **options):
    """An ilastik export: ``exported_data``, float32 ``(z, y, x, c)``, with ``axistags`` and element sizes."""
    tags = {"axes": [{"key": k, "typeFlags": 2, "resolution": 0, "description": ""} for k in "zyxc"]}
    with h5py.File(path, "w") as f:
        data = f.create_dataset("exported_data", data=np.stack(classes, axis=-1), **options)
        data.attrs["axistags"] = json.dumps(tags)
        data.attrs["element_size_um"] = np.array([2.0, 0.5, 0.5])
    return path


def test_an_ilastik_export_gives_each_class_the_table_of_its_volume(tmp_path, classes):
    path = _ilastik(tmp_path / "cells_Probabilities.h5", classes, chunks=(6, 10, 12, 3), compression="gzip")
    options = ["-m", "all", "--peaks", "2", "--extra"]
    got = rows(path, *options, keep=("path", "index"))
    expected = []
    for c, volume in enumerate(classes):
        np.save(tmp_path / f"class{c}.npy", volume)
        expected += rows(tmp_path / f"class{c}.npy", "--axes", "ZYX", *options, keep=("path", "index"))
    assert got == expected
    code, found, _ = run(path, "-m", "argmax")
    assert [r["index"] for r in found] == ["C=0", "C=1", "C=2"]


def test_a_dataset_is_picked_by_its_path_in_the_file(tmp_path, classes):
    with h5py.File(tmp_path / "run.h5", "w") as f:
        f["raw"] = classes[0]
        f["predictions/heads"] = classes[1][5]
    np.save(tmp_path / "heads.npy", classes[1][5])
    assert rows(f"{tmp_path / 'run.h5'}:/predictions/heads") == rows(tmp_path / "heads.npy")
    code, found, _ = run(f"{tmp_path / 'run.h5'}:predictions/heads", "-m", "argmax")
    assert code == 0 and found[0]["path"] == f"{tmp_path / 'run.h5'}:predictions/heads"


def test_a_file_of_one_dataset_in_a_group_is_one_input_and_a_directory_lists_it(tmp_path, classes):
    folder = tmp_path / "maps"
    folder.mkdir()
    with h5py.File(folder / "b.hdf5", "w") as f:
        f["group/only"] = classes[2][6]
    np.save(folder / "a.npy", classes[2][6])
    code, found, stderr = run(folder, "-m", "argmax")
    assert code == 0, stderr
    assert [r["path"] for r in found] == [str(folder / "a.npy"), str(folder / "b.hdf5")]
    assert found[0]["x"] == found[1]["x"] and found[0]["y"] == found[1]["y"]


def test_axes_override_the_axistags_and_without_tags_read_as_an_npy(tmp_path, classes):
    path = _ilastik(tmp_path / "p.h5", classes)
    stack = np.stack(classes, axis=-1)
    np.save(tmp_path / "p.npy", stack)
    assert rows(path, "--axes", "ZYXQ", "-m", "argmax") == rows(tmp_path / "p.npy", "--axes", "ZYXQ", "-m", "argmax")
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["data"] = classes[0]
    np.save(tmp_path / "plain.npy", classes[0])
    assert rows(tmp_path / "plain.h5") == rows(tmp_path / "plain.npy")


def test_element_sizes_give_the_voxel_size(tmp_path, classes):
    from peakloc.io.spacing import voxel_size

    path = _ilastik(tmp_path / "p.h5", classes)
    assert voxel_size(str(path), "ZYX") == (2.0, 0.5, 0.5)
    assert voxel_size(f"{path}:/exported_data", "ZYX") == (2.0, 0.5, 0.5)


@pytest.mark.parametrize("layout", [{"chunks": (1, 3, 5, 6), "compression": "gzip"}, {"compression": "lzf"}, {}])
def test_datasets_read_in_pieces_under_a_tiny_budget_give_the_same_table(tmp_path, classes, layout):
    # Chunked and compressed (gzip, lzf) datasets are read chunk by chunk, contiguous ones by hyperslab.
    volume = np.stack(classes[:2])
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f.create_dataset("v", data=volume, **layout)
    np.save(tmp_path / "v.npy", volume)
    options = ["--axes", "CZYX", "-m", "all", "--peaks", "3", "--extra"]
    expected = rows(tmp_path / "v.npy", *options)
    assert rows(tmp_path / "v.h5", *options, "--max-memory", "64KiB") == expected
    assert rows(tmp_path / "v.h5", *options) == expected


def _bad_files(folder, classes):
    """Each bad HDF5 input and the reason its error line must give."""
    good = classes[0][5]
    with h5py.File(folder / "multi.h5", "w") as f:
        f["a"], f["g/b"] = good, good
    with h5py.File(folder / "strings.h5", "w") as f:
        f["s"] = np.array([b"ab", b"cd"])
    with h5py.File(folder / "records.h5", "w") as f:
        f["r"] = np.zeros(4, dtype=[("a", "f4"), ("b", "i4")])
    with h5py.File(folder / "link.h5", "w") as f:
        f["outside"] = h5py.ExternalLink("multi.h5", "/a")
    with h5py.File(folder / "filter.h5", "w") as f:
        # Blosc's filter id, written without the filter: chunks go in raw, as another tool would have left them.
        data = f.create_dataset("f", (16, 16), "f4", chunks=(16, 16), compression=32001, allow_unknown_filter=True)
        data.id.write_direct_chunk((0, 0), good[:16, :16].astype(np.float32).tobytes())
    (folder / "text.h5").write_bytes(b"not an HDF5 file, whatever its name says\n" * 20)
    with h5py.File(folder / "whole.h5", "w") as f:
        f["x"] = good
    whole = (folder / "whole.h5").read_bytes()
    (folder / "cut.h5").write_bytes(whole[: len(whole) // 2])
    return {
        "multi.h5": "HDF5 file holds 2 datasets: /a, /g/b; pick one as FILE:/path/to/dataset",
        "multi.h5:/missing": "no dataset /missing in the file; it holds: /a, /g/b",
        "strings.h5": "dataset /s holds strings, not numbers",
        "records.h5": "dataset /r holds compound records, not numbers",
        "link.h5:/outside": "/outside is an external link to multi.h5:/a; peakloc reads only what is inside the file",
        "filter.h5": "dataset /f is compressed with HDF5 filter",
        "text.h5": "not an HDF5 file (no HDF5 signature)",
        "cut.h5": "truncated HDF5 file",
    }


def test_each_bad_hdf5_file_is_one_error_line_and_the_good_rows_stay(tmp_path, classes):
    reasons = _bad_files(tmp_path, classes)
    np.save(tmp_path / "good.npy", classes[0][5])
    inputs = [tmp_path / "good.npy", *(f"{tmp_path / name}" for name in reasons), tmp_path / "whole.h5"]
    result = StrictRunner().invoke(main, ["find", *map(str, inputs), "-q", "-m", "argmax"])
    assert result.exit_code == 1
    assert [r["path"] for r in csv.DictReader(io.StringIO(result.stdout))] == [str(inputs[0]), str(inputs[-1])]
    lines = result.stderr.splitlines()
    assert len(lines) == len(reasons) and "Traceback" not in result.stderr
    for line, (name, reason) in zip(lines, reasons.items()):
        assert line.startswith(f"peakloc: error: {tmp_path / name}: {reason}"), line


def test_an_hdf5_input_reads_nothing_until_a_piece_is_asked_for(tmp_path, classes):
    from peakloc.io import read
    from peakloc.ops.lazy import is_lazy

    path = _ilastik(tmp_path / "p.h5", classes, chunks=(6, 10, 12, 3), compression="gzip")
    array, axes = read(f"{path}:/exported_data")
    assert is_lazy(array) and axes == "ZYXC" and array.shape == (12, 20, 24, 3)


def test_the_api_takes_an_h5py_dataset_where_it_takes_an_array(tmp_path, classes):
    import peakloc

    with h5py.File(tmp_path / "v.h5", "w") as f:
        f.create_dataset("v", data=classes[1], chunks=(4, 10, 12), compression="gzip")
    with h5py.File(tmp_path / "v.h5", "r") as f:
        data = f["v"]
        np.testing.assert_array_equal(
            peakloc.find_peaks(data, ndim=3, num_peaks=2), peakloc.find_peaks(classes[1], ndim=3, num_peaks=2)
        )
        np.testing.assert_array_equal(peakloc.argmax(data, ndim=3), peakloc.argmax(classes[1], ndim=3))
        np.testing.assert_allclose(peakloc.soft_argmax(data, ndim=3), peakloc.soft_argmax(classes[1], ndim=3))
