"""A seeded corpus of damaged heatmap files: bit flips, truncation, header edits and huge declared sizes.

Shared by ``tests/test_fuzz.py`` (a fixed corpus in ``make test``) and its hypothesis run (``make fuzz``).
"""

import io
import struct
import zlib

import cv2
import numpy as np
import tifffile


def _gaussian(shape, centre, sigma):
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    return np.exp(-sum((g - c) ** 2 for g, c in zip(grids, centre)) / (2 * sigma**2))


def _encode(suffix, image):
    ok, data = cv2.imencode(suffix, image)
    assert ok
    return data.tobytes()


def _tiff(array, **kwargs):
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **kwargs)
    return buffer.getvalue()


def _npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _hdf5(array, **kwargs):
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.create_dataset("exported_data", data=array, **kwargs)
    return buffer.getvalue()


def seeds():
    """Good files, one per kind: ``{name: bytes}``."""
    heat = _gaussian((40, 56), (17.3, 30.6), 3.0)
    grey = np.round(heat * 250).astype(np.uint8)
    colour = cv2.applyColorMap(grey, cv2.COLORMAP_JET)
    volume = np.round(_gaussian((6, 20, 24), (2.5, 9.2, 11.7), 2.0) * 4000).astype(np.uint16)
    return {
        "grey.png": _encode(".png", grey),
        "deep.png": _encode(".png", (heat * 60000).astype(np.uint16)),
        "colour.png": _encode(".png", colour),
        "grey.jpg": _encode(".jpg", grey),
        "colour.bmp": _encode(".bmp", colour),
        "grey.bmp": _encode(".bmp", grey),
        "heat.npy": _npy(heat.astype(np.float32)),
        "stack.npy": _npy(np.stack([heat, heat[::-1]])),
        "plain.tif": _tiff(grey),
        "zlib.tif": _tiff(volume, compression="zlib", imagej=True, metadata={"axes": "ZYX"}),
        "lzw.tif": _tiff(grey, compression="lzw"),
        "tiled.tif": _tiff(np.pad(grey, ((0, 24), (0, 8))), tile=(32, 32), compression="zstd"),
        "plain.h5": _hdf5(heat.astype(np.float32)),
        "gzip.h5": _hdf5(volume, chunks=(2, 10, 12), compression="gzip"),
    }


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def huge(name: str, data: bytes, rng: np.random.Generator) -> bytes:
    """The file with a huge declared size in its header (a consistent one where the format has checksums)."""
    side = int(rng.choice([30000, 65535, 100000, 2**31 - 1]))
    if name.endswith(".png"):
        width, height = struct.unpack(">II", data[16:24])
        body = b"IHDR" + struct.pack(">II", side, side) + data[24:29]
        return data[:8] + _png_chunk(b"IHDR", body[4:]) + data[33:]
    if name.endswith(".bmp"):
        return data[:18] + struct.pack("<ii", side, side) + data[26:]
    if name.endswith(".npy"):
        header_end = data.index(b"\n") + 1
        header = data[:header_end].decode("latin1")
        start = header.index("'shape': (") + len("'shape': (")
        stop = header.index(")", start)
        new = header[:start] + f"{side}, {side}" + header[stop:]
        new = new[: header_end - 1].ljust(header_end - 1) + "\n" if len(new) >= header_end else new
        return new.encode("latin1") + data[header_end:]
    if name.endswith(".tif"):
        # ImageWidth and ImageLength tags (256, 257) as LONG values, wherever they are in the first IFD.
        out = bytearray(data)
        for tag in (256, 257):
            for fmt in ("<HHI", ">HHI"):
                probe = struct.pack(fmt, tag, 4, 1)
                at = out.find(probe)
                if at >= 0:
                    out[at + 8 : at + 12] = struct.pack(fmt[0] + "I", side)
        return bytes(out)
    # JPEG: the frame header's height and width (16 bits each).
    at = data.find(b"\xff\xc0")
    side = min(side, 65535)
    return data[: at + 5] + struct.pack(">HH", side, side) + data[at + 9 :] if at >= 0 else data


def mutate(name: str, data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """One damaged variant of a good file: ``kind`` is flip, truncate, header or huge."""
    if kind == "flip":
        out = bytearray(data)
        for _ in range(int(rng.integers(1, 12))):
            at = int(rng.integers(0, len(out)))
            out[at] ^= 1 << int(rng.integers(0, 8))
        return bytes(out)
    if kind == "truncate":
        return data[: int(rng.integers(0, len(data)))]
    if kind == "header":
        out = bytearray(data)
        span = min(len(out), 64)
        for _ in range(int(rng.integers(1, 6))):
            out[int(rng.integers(0, span))] = int(rng.integers(0, 256))
        return bytes(out)
    return huge(name, data, rng)


KINDS = ("flip", "truncate", "header", "huge")


def corpus(count: int = 320, seed: int = 20261123) -> dict[str, bytes]:
    """``count`` damaged files named ``NNN_kind_seedname``, cycling through seeds and kinds."""
    rng = np.random.default_rng(seed)
    good = seeds()
    names = sorted(good)
    out = {}
    for i in range(count):
        name = names[i % len(names)]
        kind = KINDS[(i // len(names)) % len(KINDS)]
        out[f"{i:03d}_{kind}_{name}"] = mutate(name, good[name], kind, rng)
    return out
