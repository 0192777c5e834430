"""Readers: a path in, ``(array, axes)`` out. One function per format; no maths here.

Heavy libraries load only for their own format: OpenCV for images, tifffile for TIFF; NPY needs NumPy alone.
"""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path

import numpy as np

from ..errors import AxesError, InputError, PeaklocWarning
from .axes import default_axes, validate_axes

NPY_SUFFIXES = frozenset({".npy"})
TIFF_SUFFIXES = frozenset({".tif", ".tiff"})
#: Formats OpenCV decodes in every build of opencv-python-headless.
IMAGE_SUFFIXES = frozenset(
    {
        ".png",
        ".jpg",
        ".jpeg",
        ".jpe",
        ".bmp",
        ".dib",
        ".webp",
        ".jp2",
        ".pbm",
        ".pgm",
        ".ppm",
        ".pnm",
        ".pxm",
        ".sr",
        ".ras",
        ".hdr",
        ".pic",
    }
)
SUFFIXES = NPY_SUFFIXES | TIFF_SUFFIXES | IMAGE_SUFFIXES
#: ITU-R BT.601 luminance, the weights OpenCV's ``cvtColor(..., COLOR_RGB2GRAY)`` uses.
LUMA = (0.299, 0.587, 0.114)


def is_supported(path: str | os.PathLike) -> bool:
    """True when the file's extension (any case) is one peakloc reads."""
    return Path(path).suffix.lower() in SUFFIXES


def kind_of(path: str | os.PathLike) -> str:
    """``npy``, ``tiff`` or ``image`` by extension (any case)."""
    suffix = Path(path).suffix.lower()
    return "npy" if suffix in NPY_SUFFIXES else "tiff" if suffix in TIFF_SUFFIXES else "image"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _reason(kind: str, exc: Exception) -> str:
    """What went wrong inside a decoder, in words: the library's error named, never a traceback."""
    import zlib

    name = {"npy": "NPY", "tiff": "TIFF", "image": "image"}[kind]
    module = type(exc).__module__.split(".")[0]
    if isinstance(exc, zlib.error):
        return f"corrupt {name} data (zlib: {_first_line(exc)})"
    if module == "imagecodecs":  # LzwError, ZstdError, JpegError...: the codec is in the class name
        codec = type(exc).__name__.removesuffix("Error").lower()
        return f"corrupt {name} data ({codec}: {_first_line(exc)})"
    if module == "cv2":
        return f"cannot decode image (OpenCV: {_first_line(exc).split(') ')[-1]})"
    return f"corrupt or unreadable {name} file ({type(exc).__name__}: {_first_line(exc)})"


def read(path: str | os.PathLike, axes: str | None = None, colormap: str | None = None) -> tuple[np.ndarray, str]:
    """Read a heatmap file.

    Parameters
    ----------
    path : path-like
        A ``.npy``, ``.tif``/``.tiff`` or image file (PNG, JPEG, BMP, ... anything in :data:`SUFFIXES`).
    axes : str, optional
        Axis letters of the stored array, overriding the defaults. Given for a colour TIFF, it names the
        stored samples too (a planar ``(4, Y, X)`` stack is then read as it is, e.g. as ``ZYX``).
    colormap : str, optional
        Read colour images as colour-mapped heatmaps of this OpenCV map (``jet``, ...): each pixel becomes
        the value whose colour is nearest. Without it colour becomes grey (luminance), with a
        :class:`~peakloc.errors.PeaklocWarning` where the colours lie on a known map.

    Returns
    -------
    array : ndarray
        As stored, in its own dtype (16-bit images stay 16-bit); NPY files are memory-mapped.
    axes : str
        One letter per axis of `array`.

    Raises
    ------
    InputError
        Missing, empty, truncated, corrupt, pickled or non-numeric files, unsupported extensions; the
        reason names the decoder's own error (``corrupt TIFF data (zlib: ...)``).
    AxesError
        `axes` does not fit the array, or a 4-D or larger array has no axes.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.exists():
        raise InputError("no such file or directory")
    if path.is_dir():
        raise InputError("is a directory")
    if suffix not in SUFFIXES:
        raise InputError(
            f"unsupported file type {suffix or '(no extension)'!r}; supported: {', '.join(sorted(SUFFIXES))}"
        )
    kind = kind_of(path)
    try:
        if not path.is_file():
            raise InputError("is not a regular file")
        if path.stat().st_size == 0:
            raise InputError("file is empty")
        if kind == "npy":
            array, stored = read_npy(path), None
        elif kind == "tiff":
            array, stored = read_tiff(path, keep_samples=axes is not None, colormap=colormap)
        else:
            array, stored = read_image(path, colormap), "YX"
    except PermissionError:
        raise InputError("permission denied") from None
    except (InputError, AxesError, MemoryError):
        raise
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - any failure inside a decoder is this file's, said in words
        raise InputError(_reason(kind, exc)) from None
    if array.dtype.kind not in "biuf":
        raise InputError(f"dtype {array.dtype} is not numeric")
    if array.size == 0:
        raise InputError(f"array is empty (shape {array.shape})")
    if axes is not None:
        letters = validate_axes(axes)
        if len(letters) != array.ndim:
            raise AxesError(
                f"`axes` {letters} names {len(letters)} axes but the data has {array.ndim} (shape {array.shape})"
            )
        return array, letters
    if stored is None or (set(stored) - {"Y", "X"} <= {"Q", "I"} and not set(stored) <= {"Y", "X"}):
        # No metadata, or tifffile's "unknown"/"sequence" letters only: read it as an NPY of that shape.
        return array, default_axes(array.ndim)
    return array, stored


def read_npy(path: Path) -> np.ndarray:
    """Memory-map an ``.npy`` file; never unpickles (``allow_pickle=False``)."""
    with open(path, "rb") as handle:
        head = handle.read(6)
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle's protocol marker
        raise InputError("not an NPY file but a Python pickle; peakloc never unpickles")
    if head != b"\x93NUMPY":
        raise InputError("not an NPY file (no NPY header)")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        text = str(exc)
        if "pickle" in text or "Python objects" in text:
            raise InputError("holds Python objects (pickled data); peakloc never unpickles") from None
        if "mmap length" in text or "Failed to read" in text:
            raise InputError("truncated .npy file (less data than its header says)") from None
        raise InputError(f"not a valid .npy file ({text.splitlines()[0] if text else 'bad header'})") from None
    except EOFError:
        raise InputError("truncated .npy file") from None


def _rgb_to_grey(array: np.ndarray, axis: int) -> np.ndarray:
    """Luminance of RGB(A) samples along ``axis`` (alpha ignored), in the input's dtype, rounded."""
    samples = array.shape[axis]
    if samples == 1:
        return np.take(array, 0, axis=axis)
    if samples == 2:  # grey + alpha
        return np.take(array, 0, axis=axis)
    if samples not in (3, 4):
        raise InputError(f"cannot turn {samples} colour samples into grey (expected 1 to 4)")
    rgb = np.moveaxis(np.asarray(array), axis, -1)[..., :3].astype(np.float32)
    grey = rgb @ np.array(LUMA, dtype=np.float32)
    if array.dtype.kind in "biu":
        info = np.iinfo(array.dtype) if array.dtype.kind != "b" else None
        grey = np.rint(grey)
        if info is not None:
            grey = np.clip(grey, info.min, info.max)
        return grey.astype(array.dtype)
    return grey.astype(array.dtype)


def _colour_to_values(bgr: np.ndarray, colormap: str | None, convert) -> np.ndarray:
    """A colour image ``(..., C)`` (BGR order) as values: decoded by ``colormap``, else ``convert`` to grey.

    Without a colour map, an image whose colours lie on a known map warns that its grey is not its values.
    """
    from .colormaps import decode, recognise

    if colormap is not None:
        return decode(bgr, colormap)
    found = recognise(bgr) if bgr.shape[-1] >= 3 and bgr.dtype == np.uint8 else None
    if found is not None:
        warnings.warn(
            f"its colours lie on OpenCV's {found} colour map: read as grey (luminance), which is not the "
            f"heatmap's values; pass `colormap`={found!r} to decode them",
            PeaklocWarning,
            stacklevel=2,
        )
    return convert(bgr)


def read_tiff(path: Path, keep_samples: bool = False, colormap: str | None = None) -> tuple[np.ndarray, str]:
    """First series of a TIFF with tifffile's axes (ImageJ and OME metadata), compressed or not.

    Colour samples (``S``) become grey (or values, with ``colormap``) unless ``keep_samples``: then the
    array comes as stored, ``S`` included, for the caller's own axis letters.
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            array, axes = series.asarray(), series.axes
    except (tifffile.TiffFileError, IndexError, KeyError, struct.error) as exc:
        raise InputError(f"not a valid TIFF file ({_first_line(exc)})") from None
    if "S" in axes and not keep_samples:
        samples = np.moveaxis(array, axes.index("S"), -1)
        if samples.shape[-1] in (3, 4):
            bgr = np.concatenate([samples[..., 2::-1], samples[..., 3:]], axis=-1)
            array = _colour_to_values(bgr, colormap, lambda _: _rgb_to_grey(samples, samples.ndim - 1))
        else:
            array = _rgb_to_grey(samples, samples.ndim - 1)
        axes = axes.replace("S", "")
    return array, axes


def read_image(path: Path, colormap: str | None = None) -> np.ndarray:
    """Decode an image with OpenCV, all bits kept (16-bit stays 16-bit); colour becomes grey (BT.601).

    With ``colormap``, colour becomes the values of that colour map instead.
    """
    import cv2

    _quiet_opencv(cv2)
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InputError(f"cannot decode image (corrupt, truncated, or not a {path.suffix.lower()[1:].upper()} file)")
    if image.ndim == 3:
        channels = image.shape[2]
        if channels in (3, 4):
            code = cv2.COLOR_BGR2GRAY if channels == 3 else cv2.COLOR_BGRA2GRAY
            image = _colour_to_values(image, colormap, lambda bgr: cv2.cvtColor(bgr, code))
        else:
            image = image[..., 0]
    return image


def _quiet_opencv(cv2) -> None:
    """OpenCV logs decoder warnings to stderr itself; peakloc reports one line per bad file instead."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is not None and hasattr(logging, "LOG_LEVEL_SILENT"):
        logging.setLogLevel(logging.LOG_LEVEL_SILENT)
