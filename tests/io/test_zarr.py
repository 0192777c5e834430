"""Zarr and OME-Zarr inputs (written by zarr itself), and large TIFFs read in pieces, end to end."""

import csv
import io

import numpy as np
import pytest
import tifffile

from peakloc.cli import main

from ..conftest import StrictRunner, gaussian

zarr = pytest.importorskip("zarr", reason="zarr is part of the test install (make install)")


def rows(*args):
    result = StrictRunner().invoke(main, ["find", *map(str, args), "-q"])
    assert result.exit_code == 0, result.output
    return [{k: v for k, v in r.items() if k != "path"} for r in csv.DictReader(io.StringIO(result.stdout))]


@pytest.fixture
def volume():
    return np.stack([gaussian((12, 20, 24), (4.2 + c, 9.6, 13.1 - c), 2.0) for c in range(2)]).astype(np.float32)


def _ome(path, volume, version):
    axes = [{"name": n, "type": t} for n, t in zip("czyx", ["channel", "space", "space", "space"])]
    scale = {"axes": axes, "datasets": [{"path": "0"}, {"path": "1"}], "version": version}
    fmt = 2 if version == "0.4" else 3
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt)
    group.create_array("0", shape=volume.shape, chunks=(1, 4, 10, 12), dtype="f4")[:] = volume
    group.create_array("1", shape=(2, 6, 10, 12), dtype="f4")[:] = volume[:, ::2, ::2, ::2]
    if version == "0.4":
        group.attrs["multiscales"] = [scale]
    else:
        group.attrs["ome"] = {"version": "0.5", "multiscales": [scale]}
    return path


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_gives_its_axes_and_full_resolution_level(tmp_path, volume, version):
    store = _ome(tmp_path / "image.ome.zarr", volume, version)
    np.save(tmp_path / "same.npy", volume)
    got = rows(store, "-m", "all", "--peaks", "2")
    assert [r["index"] for r in got][:1] == ["C=0"] and got == rows(
        tmp_path / "same.npy", "--axes", "CZYX", "-m", "all", "--peaks", "2"
    )


@pytest.mark.parametrize("fmt", [2, 3])
def test_a_plain_zarr_array_reads_as_an_npy_of_its_shape(tmp_path, volume, fmt):
    z = zarr.open(
        str(tmp_path / "v.zarr"), mode="w", shape=volume[0].shape, chunks=(4, 5, 6), dtype="f4", zarr_format=fmt
    )
    z[:] = volume[0]
    np.save(tmp_path / "v.npy", volume[0])
    assert rows(tmp_path / "v.zarr") == rows(tmp_path / "v.npy")


def test_a_zarr_folder_in_a_directory_is_one_input(tmp_path, volume):
    folder = tmp_path / "data"
    folder.mkdir()
    zarr.open(str(folder / "v.zarr"), mode="w", shape=(20, 24), dtype="f4")[:] = volume[0, 4]
    result = StrictRunner().invoke(main, ["find", str(folder), "-q", "-m", "argmax"])
    assert result.exit_code == 0 and result.stdout.splitlines()[1].startswith(str(folder / "v.zarr"))


def test_inputs_read_in_pieces_under_a_tiny_budget_give_the_same_table(tmp_path, volume, monkeypatch):
    from peakloc.io import readers

    monkeypatch.setattr(readers, "TIFF_IN_PIECES", 0)  # this small TIFF is read tile by tile too
    np.save(tmp_path / "v.npy", volume)
    tifffile.imwrite(tmp_path / "v.tif", volume, tile=(16, 16), compression="zlib", photometric="minisblack")
    _ome(tmp_path / "v.ome.zarr", volume, "0.4")
    options = ["--axes", "CZYX", "-m", "all", "--peaks", "3", "--extra"]
    expected = rows(tmp_path / "v.npy", *options)
    for path in (tmp_path / "v.npy", tmp_path / "v.tif"):
        assert rows(path, *options, "--max-memory", "64KiB") == expected
    assert rows(tmp_path / "v.ome.zarr", *options[2:], "--max-memory", "64KiB") == expected


def test_a_compressed_tiff_read_in_pieces_gives_pages_and_boxes_as_stored(tmp_path, rng, monkeypatch):
    from peakloc.io import readers

    monkeypatch.setattr(readers, "TIFF_IN_PIECES", 0)
    data = rng.random((3, 5, 20, 24)).astype(np.float32)
    tifffile.imwrite(tmp_path / "v.tif", data, tile=(16, 16), compression="zlib", photometric="minisblack")
    array, _ = readers.read_tiff(tmp_path / "v.tif")
    assert isinstance(array, readers.TiffPages) and array.shape == data.shape and array.dtype == data.dtype
    for index in [
        (1,),
        (slice(0, 2), 3),
        (2, slice(1, 4)),
        (slice(1, 1),),
        (0, 1, slice(3, 9), slice(5, 20)),
        (slice(None), slice(None), slice(0, 20)),
        (1, 2, 4, 7),
    ]:
        np.testing.assert_array_equal(np.asarray(array[index]), data[index], err_msg=str(index))


def _deep_chunked(folder, volume) -> None:
    """``v.npy`` and ``v.zarr``: 128x80x80 float32 noise with two spots, in Zarr chunks of 128x40x40."""
    rng = np.random.default_rng(5)
    big = (rng.random((128, 80, 80)) * 0.1).astype(np.float32)
    big[40:52, 30:50, 34:58] += 4 * volume[0]
    np.save(folder / "v.npy", big)
    store = zarr.open(str(folder / "v.zarr"), mode="w", shape=big.shape, chunks=(128, 40, 40), dtype="f4")
    store[:] = big


def test_a_store_of_deep_chunks_is_decoded_once_into_a_copy_or_each_pass_without_room(tmp_path, volume, monkeypatch):
    import errno
    import os

    from peakloc.ops import streaming
    from peakloc.run import locate

    monkeypatch.setattr(locate, "_in_memory_filesystem", lambda path: False)  # TMPDIR on a disk
    # 800 Ki values: slabs of 81 rows (the soft-argmax's own), inside chunks of 128.
    _deep_chunked(tmp_path, volume)
    options = ["-m", "all", "--peaks", "3", "--extra", "--max-memory", "1MiB"]
    expected = rows(tmp_path / "v.npy", *options)
    copies = []
    real = streaming.decoded_copy
    monkeypatch.setattr(streaming, "decoded_copy", lambda *a, **k: copies.append(a[1]) or real(*a, **k))
    assert rows(tmp_path / "v.zarr", *options) == expected
    assert copies == [0]  # chunks deeper than the slabs: worth one decoded copy

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    assert rows(tmp_path / "v.zarr", *options) == expected
    assert copies == [0, 0]

    monkeypatch.setattr(locate, "_in_memory_filesystem", lambda path: True)  # a tmpfs: no copy tried
    assert rows(tmp_path / "v.zarr", *options) == expected
    assert copies == [0, 0]


@pytest.mark.parametrize("budget", ["1GiB", "1MiB"])
def test_a_zarr_chunk_its_codec_cannot_decode_fails_its_input_in_one_line(tmp_path, budget):
    from numcodecs import Zstd

    rng = np.random.default_rng(4)
    heat = (rng.random((128, 80, 80)) * 0.1).astype(np.float32)  # read in slabs under the small budget
    store = zarr.open(
        str(tmp_path / "v.zarr"),
        mode="w",
        shape=heat.shape,
        chunks=(128, 40, 40),
        dtype="f4",
        zarr_format=2,
        compressor=Zstd(),
    )
    store[:] = heat
    (tmp_path / "v.zarr" / "0.0.0").write_bytes(rng.bytes(100))  # not a Zstd frame: numcodecs' RuntimeError
    np.save(tmp_path / "ok.npy", np.eye(9))
    result = StrictRunner().invoke(
        main, ["find", str(tmp_path / "v.zarr"), str(tmp_path / "ok.npy"), "--peaks", "3", "--max-memory", budget]
    )
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0].startswith(
        f"peakloc: error: {tmp_path / 'v.zarr'}: corrupt data in the file (RuntimeError: Zstd decompression error"
    )
    assert [row.split(",")[0] for row in result.stdout.splitlines()[1:]] == [str(tmp_path / "ok.npy")] * 2


def test_a_tiff_volumes_whole_pages_decode_into_the_array_given(tmp_path, monkeypatch):
    from peakloc.io import readers

    monkeypatch.setattr(readers, "TIFF_IN_PIECES", 0)
    data = np.arange(6 * 40 * 50, dtype=np.float32).reshape(6, 40, 50)
    tifffile.imwrite(tmp_path / "v.tif", data, tile=(16, 16), compression="zlib", photometric="minisblack")
    array, _ = readers.read_tiff(tmp_path / "v.tif")
    assert isinstance(array, readers.TiffPages)
    out = np.zeros((5, 40, 50), np.float32)
    got = array.read_into((slice(1, 4),), out[1:4])
    assert np.shares_memory(got, out)
    np.testing.assert_array_equal(out[1:4], data[1:4])
    assert not out[0].any() and not out[4].any()  # nothing written outside
    strided = np.zeros((2, 40, 100), np.float32)[:, :, ::2]  # not contiguous: filled by a copy
    np.testing.assert_array_equal(array.read_into((slice(2, 4),), strided), data[2:4])


@pytest.mark.parametrize("peaks,copied", [(3, False), (5, True)])
def test_a_store_whose_band_of_chunks_fits_is_copied_only_for_more_windows_than_chunks(
    tmp_path, volume, monkeypatch, peaks, copied
):
    from peakloc.ops import streaming
    from peakloc.run import locate

    monkeypatch.setattr(locate, "_in_memory_filesystem", lambda path: False)  # TMPDIR on a disk
    # 4 chunks of 128x40x40; a band of them (3.1 MiB) fits a quarter of 16 MiB, the map does not fit.
    _deep_chunked(tmp_path, volume)
    options = ["-m", "all", "--peaks", str(peaks), "--min-distance", "2", "--max-memory", "16MiB"]
    surveyed, copies = [], []
    real_survey, real_copy = streaming.survey, streaming.decoded_copy
    monkeypatch.setattr(streaming, "survey", lambda *a, **k: surveyed.append(a[1]) or real_survey(*a, **k))
    monkeypatch.setattr(streaming, "decoded_copy", lambda *a, **k: copies.append(a[1]) or real_copy(*a, **k))
    assert rows(tmp_path / "v.zarr", *options) == rows(tmp_path / "v.npy", *options)
    assert surveyed and copies == ([0] if copied else [])
