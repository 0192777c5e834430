"""Inputs named by URL, read through fsspec: the rows of the same file on disk, the same failures in words."""

import subprocess
import sys

import cv2
import fsspec
import numpy as np
import pytest
import tifffile
import zarr

from peakloc import io
from peakloc.errors import InputError
from peakloc.io.remote import is_url

PEAKLOC = [sys.executable, "-m", "peakloc", "find"]


def run(*args, cwd):
    return subprocess.run([*PEAKLOC, *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def volume(rng):
    heat = rng.random((12, 30, 40)).astype(np.float32)
    heat[5, 10, 20] = 3.0
    return heat


def _write(kind: str, folder, heat) -> str:
    name = f"v.{kind}"
    if kind == "npy":
        np.save(folder / name, heat)
    elif kind == "tif":
        tifffile.imwrite(folder / name, heat, tile=(16, 16), compression="zlib", metadata={"axes": "ZYX"})
    elif kind == "zarr":
        store = zarr.open_array(folder / name, mode="w", shape=heat.shape, chunks=(4, 30, 40), dtype="f4")
        store[:] = heat
    else:
        cv2.imwrite(str(folder / name), np.round(heat[5] / 3 * 255).astype(np.uint8))
    return name


def _rows(table: str) -> list[str]:
    return [line.split(",", 1)[1] for line in table.splitlines()]


@pytest.mark.parametrize("kind", ["npy", "tif", "zarr", "png"])
def test_a_url_gives_the_rows_of_the_same_file_on_disk(tmp_path, volume, kind):
    name = _write(kind, tmp_path, volume)
    url = (tmp_path / name).as_uri()
    on_disk, by_url = run(name, "-m", "all", "-q", cwd=tmp_path), run(url, "-m", "all", "-q", cwd=tmp_path)
    assert on_disk.returncode == by_url.returncode == 0, by_url.stderr
    assert _rows(by_url.stdout) == _rows(on_disk.stdout)
    assert by_url.stdout.splitlines()[1].startswith(url + ",")


def test_a_tiff_url_larger_than_the_budget_is_read_tile_by_tile(tmp_path, volume):
    big = np.tile(volume, (8, 1, 1))  # 460 KiB of float32 in a 256 KiB budget
    name = _write("tif", tmp_path, big)
    options = ["--peaks", "4", "-m", "all", "-q", "--max-memory", "256KiB"]
    on_disk, by_url = run(name, *options, cwd=tmp_path), run((tmp_path / name).as_uri(), *options, cwd=tmp_path)
    assert on_disk.returncode == by_url.returncode == 0, by_url.stderr
    assert _rows(by_url.stdout) == _rows(on_disk.stdout)


def test_an_npy_url_is_read_whole_so_the_budget_refuses_it_first(tmp_path, volume):
    np.save(tmp_path / "v.npy", np.tile(volume, (8, 1, 1)))
    url = (tmp_path / "v.npy").as_uri()
    out = run(url, "--max-memory", "256KiB", "-q", cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.startswith(f"peakloc: error: {url}: needs about ")
    assert "more than the memory budget of 256.0 KiB (--max-memory)" in out.stderr
    assert run("v.npy", "--max-memory", "256KiB", "-q", cwd=tmp_path).returncode == 0  # memory-mapped on disk


@pytest.mark.parametrize(
    "url,reason",
    [
        ("nosuch://bucket/v.npy", "cannot read this URL: Protocol not known: nosuch"),
        ("file:///no/such/v.npy", "no such file or directory"),
        ("file:///no/such/v.txt", "unsupported file type '.txt'"),
    ],
)
def test_a_url_that_cannot_be_read_is_one_error_line(tmp_path, url, reason):
    out = run(url, "-q", cwd=tmp_path)
    assert out.returncode == 1
    assert len(out.stderr.splitlines()) == 1
    assert out.stderr.startswith(f"peakloc: error: {url}: {reason}")


def test_a_pickle_behind_a_url_is_never_unpickled(tmp_path):
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="never unpickles"):
        io.read((tmp_path / "objects.npy").as_uri())


def test_the_reader_takes_any_fsspec_file_system(volume):
    fs = fsspec.filesystem("memory")
    with fs.open("/peakloc-test/v.npy", "wb") as handle:
        np.save(handle, volume)
    try:
        array, axes = io.read("memory://peakloc-test/v.npy")
    finally:
        fs.rm("/peakloc-test", recursive=True)
    np.testing.assert_array_equal(array, volume)
    assert axes == "ZYX"


def test_only_strings_with_a_protocol_are_urls():
    assert is_url("s3://bucket/a.tif") and is_url("file:///tmp/a.npy")
    assert not is_url("/tmp/a.npy") and not is_url("C:\\data\\a.npy") and not is_url("a:b.npy")
