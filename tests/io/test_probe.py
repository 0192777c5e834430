"""Header probes: the decoded size of a file, known before decoding."""

import struct
import zlib

import cv2
import numpy as np
import pytest
import tifffile

from peakloc.io.probe import probe


def png_header(width, height, depth=8, colour=0):
    """A PNG that declares an image of any size: signature and IHDR only (what a bomb starts with)."""
    body = b"IHDR" + struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + body + struct.pack(">I", zlib.crc32(body))


@pytest.mark.parametrize(
    "image,suffix",
    [
        (np.zeros((30, 40), np.uint8), ".png"),
        (np.zeros((30, 40), np.uint16), ".png"),
        (np.zeros((30, 40, 3), np.uint8), ".png"),
        (np.zeros((30, 40, 4), np.uint8), ".png"),
        (np.zeros((30, 40), np.uint8), ".jpg"),
        (np.zeros((30, 40, 3), np.uint8), ".jpg"),
        (np.zeros((30, 40), np.uint8), ".bmp"),
        (np.zeros((30, 40, 3), np.uint8), ".bmp"),
        (np.zeros((30, 40), np.uint16), ".pgm"),
        (np.zeros((30, 40, 3), np.uint8), ".ppm"),
    ],
)
def test_image_probes_give_what_opencv_decodes(tmp_path, image, suffix):
    path = tmp_path / f"a{suffix}"
    cv2.imwrite(str(path), image)
    decoded = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    found = probe(path, "image")
    assert found.shape == decoded.shape and found.dtype == decoded.dtype
    assert found.samples == (decoded.shape[2] if decoded.ndim == 3 else 1)


def test_png_probe_reads_the_declared_size_of_a_bomb(tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_header(60000, 60000))
    found = probe(tmp_path / "bomb.png", "image")
    assert found.shape == (60000, 60000) and found.nbytes == 60000**2 and found.values == 60000**2


def test_npy_and_tiff_probes_read_headers_only(tmp_path):
    np.lib.format.open_memmap(tmp_path / "a.npy", mode="w+", dtype=np.float32, shape=(3, 50, 60))
    assert probe(tmp_path / "a.npy", "npy").shape == (3, 50, 60)
    tifffile.imwrite(tmp_path / "b.tif", np.zeros((4, 20, 30), np.uint16), compression="zlib", photometric="minisblack")
    found = probe(tmp_path / "b.tif", "tiff")
    assert found.shape == (4, 20, 30) and found.dtype == np.uint16 and found.values == 4 * 20 * 30
    tifffile.imwrite(tmp_path / "c.tif", np.zeros((20, 30, 3), np.uint8), photometric="rgb")
    assert probe(tmp_path / "c.tif", "tiff").values == 20 * 30


def test_unknown_or_broken_headers_give_none(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not an image at all")
    (tmp_path / "x.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    assert probe(tmp_path / "x.png", "image") is None and probe(tmp_path / "x.npy", "npy") is None


@pytest.mark.parametrize("keep", [9, 20, 25])
def test_a_header_cut_short_gives_none(tmp_path, keep):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((30, 40), np.uint16))
    (tmp_path / "b.png").write_bytes((tmp_path / "a.png").read_bytes()[:keep])
    assert probe(tmp_path / "b.png", "image") is None


def test_an_image_refused_by_its_header_is_not_read_whole():
    import io

    from peakloc.errors import InputError
    from peakloc.io.readers import _image_bytes

    handle = io.BytesIO(png_header(30000, 30000) + bytes(1 << 20))
    seen = []

    def refuse(found):
        seen.append(found.shape)
        raise InputError("needs more memory than the budget")

    with pytest.raises(InputError):
        _image_bytes(handle, refuse)
    assert seen == [(30000, 30000)] and handle.tell() <= 64
    handle.seek(0)
    assert _image_bytes(handle, lambda found: None) == handle.getvalue()  # accepted: every byte, from the start
