import pickle
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from hypothesis import given
from hypothesis import strategies as st

from peakloc import io
from peakloc.errors import AxesError, InputError
from peakloc.io import readers


def test_png_8_bit_is_read_as_stored(tmp_path, rng):
    a = (rng.random((30, 50)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), a)
    array, axes = io.read(tmp_path / "a.png")
    assert axes == "YX" and array.dtype == np.uint8
    np.testing.assert_array_equal(array, a)


def test_png_16_bit_keeps_all_16_bits(tmp_path):
    a = np.arange(40 * 60, dtype=np.uint16).reshape(40, 60) * 27
    cv2.imwrite(str(tmp_path / "a.png"), a)
    array, _ = io.read(tmp_path / "a.png")
    assert array.dtype == np.uint16
    np.testing.assert_array_equal(array, a)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _grey_png(samples: np.ndarray, depth: int, extra: bytes = b"") -> bytes:
    """A grey PNG (colour type 0) of ``samples`` ``(H, W)`` at ``depth`` bits, written by hand from the spec."""
    if depth == 16:
        rows = [row.astype(">u2").tobytes() for row in samples]
    else:
        rows = [
            np.packbits(np.unpackbits(row.astype(np.uint8)[:, None], axis=1)[:, 8 - depth :]).tobytes()
            for row in samples
        ]
    header = struct.pack(">IIBBBBB", samples.shape[1], samples.shape[0], depth, 0, 0, 0, 0)
    data = zlib.compress(b"".join(b"\x00" + row for row in rows))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + extra + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


@pytest.mark.parametrize("depth", [1, 2, 4, 8, 16])
def test_grey_png_of_any_bit_depth_reads_as_opencv_decodes_it(tmp_path, rng, depth):
    samples = rng.integers(0, 2**depth, (13, 21))
    data = _grey_png(samples, depth)
    (tmp_path / "g.png").write_bytes(data)
    array, axes = io.read(tmp_path / "g.png")
    expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert axes == "YX" and array.dtype == expected.dtype and array.shape == expected.shape
    np.testing.assert_array_equal(array, expected)
    if depth >= 8:
        np.testing.assert_array_equal(array, samples)


def test_grey_png_with_a_transparent_value_reads_as_one_sample_per_pixel(tmp_path, rng):
    samples = rng.integers(0, 256, (9, 11))
    data = _grey_png(samples, 8, _chunk(b"tRNS", struct.pack(">H", int(samples[0, 0]))))
    (tmp_path / "t.png").write_bytes(data)
    array, _ = io.read(tmp_path / "t.png")
    assert array.dtype == np.uint8
    np.testing.assert_array_equal(array, samples)


def test_grey_png_with_a_broken_crc_keeps_opencvs_error(tmp_path, rng):
    data = bytearray(_grey_png(rng.integers(0, 256, (9, 11)), 8))
    data[data.index(b"IDAT") + 6] ^= 0xFF  # a byte of the compressed samples: the chunk's CRC no longer holds
    (tmp_path / "b.png").write_bytes(bytes(data))
    with pytest.raises(InputError, match="cannot decode image"):
        io.read(tmp_path / "b.png")


def test_grey_png_past_opencvs_pixel_limit_is_refused_before_libpng_decodes_it(tmp_path, monkeypatch):
    import imagecodecs

    calls = []
    monkeypatch.setattr(imagecodecs, "png_decode", lambda data: calls.append(data))
    header = struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0)  # 1.6e9 pixels: OpenCV refuses past 2^30
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
    (tmp_path / "bomb.png").write_bytes(data + _chunk(b"IEND", b""))
    with pytest.raises(InputError, match="cannot decode image"):
        io.read(tmp_path / "bomb.png")
    assert calls == []
    small = _grey_png(np.zeros((3, 4), int), 8)  # within the limit: libpng's to decode (the stand-in's here)
    readers.decode_image(small, ".png")
    assert calls == [small]


def test_colour_png_becomes_grey_luminance(tmp_path, rng):
    bgr = (rng.random((20, 30, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "c.png"), bgr)
    array, _ = io.read(tmp_path / "c.png")
    rgb = bgr[..., ::-1].astype(np.float64)
    np.testing.assert_allclose(array, rgb @ [0.299, 0.587, 0.114], atol=1)


def test_npy_is_memory_mapped(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((3, 4, 5), np.float32))
    array, axes = io.read(tmp_path / "a.npy")
    assert isinstance(array, np.memmap) and axes == "ZYX"


def test_npy_with_four_axes_needs_axes(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((2, 3, 4, 5)))
    with pytest.raises(AxesError, match="pass `axes`"):
        io.read(tmp_path / "a.npy")
    assert io.read(tmp_path / "a.npy", axes="tcyx")[1] == "TCYX"


def test_pickled_npy_is_never_unpickled(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="never unpickles"):
        io.read(tmp_path / "o.npy")
    (tmp_path / "p.npy").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(InputError, match="never unpickles"):
        io.read(tmp_path / "p.npy")


def test_truncated_npy_is_an_input_error(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((100, 100)))
    data = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[:500])
    with pytest.raises(InputError, match="truncated"):
        io.read(tmp_path / "t.npy")


def test_non_numeric_npy_is_refused(tmp_path):
    np.save(tmp_path / "s.npy", np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(InputError, match="not numeric"):
        io.read(tmp_path / "s.npy")


@pytest.mark.parametrize(
    "name,content,match",
    [
        ("e.png", b"", "file is empty"),
        ("g.png", b"not an image at all", "cannot decode image"),
        ("g.tif", b"II*\x00garbage", "not a valid TIFF"),
        ("x.txt", b"1 2 3", "unsupported file type '.txt'"),
    ],
)
def test_bad_files_raise_input_errors(tmp_path, name, content, match):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(InputError, match=match):
        io.read(tmp_path / name)


def test_truncated_png_is_an_input_error(tmp_path, rng):
    cv2.imwrite(str(tmp_path / "a.png"), (rng.random((64, 64)) * 255).astype(np.uint8))
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cannot decode"):
        io.read(tmp_path / "t.png")


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        io.read(tmp_path / "nope.png")


def test_imagej_tiff_keeps_its_axes(tmp_path):
    tifffile.imwrite(tmp_path / "h.tif", np.zeros((2, 3, 8, 9), np.uint16), imagej=True, metadata={"axes": "ZCYX"})
    array, axes = io.read(tmp_path / "h.tif")
    assert axes == "ZCYX" and array.shape == (2, 3, 8, 9)


def test_ome_tiff_keeps_its_axes(tmp_path):
    tifffile.imwrite(tmp_path / "o.ome.tif", np.zeros((2, 3, 8, 9), np.uint8), ome=True, metadata={"axes": "TCYX"})
    assert io.read(tmp_path / "o.ome.tif")[1] == "TCYX"


def test_plain_multi_page_tiff_is_a_volume(tmp_path):
    tifffile.imwrite(tmp_path / "p.tif", np.zeros((5, 8, 9), np.float32))
    array, axes = io.read(tmp_path / "p.tif")
    assert axes == "ZYX" and array.shape == (5, 8, 9)


def test_rgb_tiff_becomes_grey(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[1, 2] = (255, 0, 0)
    tifffile.imwrite(tmp_path / "c.tif", rgb, photometric="rgb")
    array, axes = io.read(tmp_path / "c.tif")
    assert axes == "YX" and array[1, 2] == round(0.299 * 255)


def test_axes_override_must_match_the_number_of_axes(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((3, 4)))
    with pytest.raises(AxesError, match="names 3 axes but the data has 2"):
        io.read(tmp_path / "a.npy", axes="CYX")


@given(st.text(alphabet="ab./P", max_size=12))
def test_suffix_of_a_path_is_pathlibs_in_lower_case(text):
    assert readers.suffix_of(text) == Path(text).suffix.lower()


@pytest.mark.parametrize("name", ["x.png/.", "run.zarr//", "a/..", ".npy", "a.", "a/.hidden.PNG", "a..png", ""])
def test_suffix_of_the_odd_paths_is_pathlibs(name):
    assert readers.suffix_of(name) == Path(name).suffix.lower()
