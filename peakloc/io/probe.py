"""What a file will decode to, read from its header alone.

The run layer checks the memory budget with it before anything is decoded: a 3 MB PNG can hold a
60000x60000 image.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .remote import filesystem, is_url

#: Largest image OpenCV decodes (its ``CV_IO_MAX_IMAGE_PIXELS``); it refuses bigger ones.
OPENCV_MAX_PIXELS = 1 << 30


@dataclass(frozen=True)
class Probe:
    """The decoded array of a file: its shape, dtype, and how many colour samples make one value."""

    shape: tuple[int, ...]
    dtype: np.dtype
    samples: int = 1

    @property
    def nbytes(self) -> int:
        """Bytes of the decoded array."""
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def values(self) -> int:
        """Number of heatmap values: the decoded array less its colour samples."""
        return math.prod(self.shape) // self.samples


def _open(path):
    """A binary file object of a path or a URL (through fsspec)."""
    if is_url(path):
        fs, where = filesystem(path)
        return fs.open(where, "rb")
    return open(path, "rb")


def probe_png(head: bytes) -> Probe | None:
    """What a PNG decodes to (in OpenCV's terms: ``samples`` 1 only for grey), from its first 26 bytes or more.

    None where ``head`` is no PNG's start, or cut short.
    """
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR" or len(head) < 26:
        return None
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    # OpenCV expands palettes to BGR and grey + alpha to BGRA.
    channels = {0: 1, 2: 3, 3: 3, 4: 4, 6: 4}.get(colour, 4)
    dtype = np.dtype(np.uint16 if depth == 16 else np.uint8)
    shape = (height, width, channels) if channels > 1 else (height, width)
    return Probe(shape, dtype, channels)


def _jpeg(handle) -> Probe | None:
    """A JPEG's frame header, from a binary file object at the file's start."""
    if handle.read(2) != b"\xff\xd8":
        return None
    while True:
        marker = handle.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        code = marker[1]
        if code in (0xD8, 0x01) or 0xD0 <= code <= 0xD7:
            continue
        size = handle.read(2)
        if len(size) < 2:
            return None
        length = struct.unpack(">H", size)[0]
        if 0xC0 <= code <= 0xCF and code not in (0xC4, 0xC8, 0xCC):
            body = handle.read(6)
            if len(body) < 6:
                return None
            depth, height, width, components = struct.unpack(">BHHB", body)
            dtype = np.dtype(np.uint16 if depth > 8 else np.uint8)
            shape = (height, width, components) if components > 1 else (height, width)
            return Probe(shape, dtype, components)
        handle.seek(length - 2, 1)


def _bmp(head: bytes) -> Probe | None:
    if head[:2] != b"BM" or len(head) < 30:
        return None
    width, height = struct.unpack("<ii", head[18:26])
    bits = struct.unpack("<H", head[28:30])[0]
    channels = 4 if bits == 32 else 3 if bits > 8 else 1
    shape = (abs(height), abs(width), channels) if channels > 1 else (abs(height), abs(width))
    return Probe(shape, np.dtype(np.uint8), channels)


def _pnm(head: bytes) -> Probe | None:
    if head[:1] != b"P" or head[1:2] not in b"123456":
        return None
    fields: list[int] = []
    for line in head[2:].split(b"\n"):
        line = line.split(b"#")[0]
        fields += [int(v) for v in line.split() if v.isdigit()]
        if len(fields) >= (2 if head[1:2] in b"14" else 3):
            break
    if len(fields) < 2:
        return None
    width, height = fields[:2]
    depth = fields[2] if len(fields) > 2 else 1
    colour = head[1:2] in b"36"
    dtype = np.dtype(np.uint16 if depth > 255 else np.uint8)
    return Probe((height, width, 3) if colour else (height, width), dtype, 3 if colour else 1)


def _npy(path: Path) -> Probe | None:
    with _open(path) as handle:
        try:
            version = np.lib.format.read_magic(handle)
            reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            shape, _, dtype = reader.get(version, np.lib.format.read_array_header_2_0)(handle)
        except Exception:  # noqa: BLE001 - a bad header is the reader's to report, in its words
            return None
    return Probe(tuple(int(n) for n in shape), np.dtype(dtype))


def _tiff(path: Path) -> Probe | None:
    import tifffile

    try:
        with _open(path) as handle, tifffile.TiffFile(handle) as tif:
            series = tif.series[0]
            shape = tuple(int(n) for n in series.shape)
            samples = shape[series.axes.index("S")] if "S" in series.axes else 1
            return Probe(shape, np.dtype(series.dtype), samples)
    except Exception:  # noqa: BLE001 - as above
        return None


def probe(path: str | Path, kind: str) -> Probe | None:
    """The decoded shape and dtype of a file of ``kind`` (``npy``, ``tiff``, ``image``), or None if unknown.

    Reads only headers. Images: PNG, JPEG, BMP and PNM headers are understood; other OpenCV formats give
    None (OpenCV's own pixel limit still holds for them).
    """
    path = path if is_url(path) else Path(path)
    if kind == "npy":
        return _npy(path)
    if kind == "tiff":
        return _tiff(path)
    try:
        with _open(path) as handle:
            return probe_image(handle)
    except OSError:  # the reader reports it in its words
        return None


def probe_image(handle) -> Probe | None:
    """:func:`probe` of an image, from a binary file object at its start (``io.BytesIO`` of its bytes).

    Reads the first 64 bytes, and a JPEG's markers up to its frame header.
    """
    try:
        head = handle.read(64)
        for sniff in (probe_png, _bmp, _pnm):
            found = sniff(head)
            if found is not None:
                return found
        if head[:2] != b"\xff\xd8":
            return None
        handle.seek(0)
        return _jpeg(handle)
    except (struct.error, ValueError, OSError):  # a header cut short: the decoder reports it in its words
        return None
