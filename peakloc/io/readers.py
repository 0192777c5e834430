"""Readers: a path in, ``(array, axes)`` out. One function per format; no maths here.

Heavy libraries load only for their own format: imagecodecs (libpng) for grey PNGs, OpenCV for other images,
tifffile for TIFF; NPY needs NumPy alone.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import warnings
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np

from ..errors import AxesError, InputError, PeaklocWarning
from .axes import default_axes, validate_axes
from .hdf5 import SUFFIXES as HDF5_SUFFIXES
from .hdf5 import read_hdf5, split_selector
from .probe import OPENCV_MAX_PIXELS, Probe, probe_image, probe_png
from .remote import filesystem, is_url

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
ZARR_SUFFIXES = frozenset({".zarr"})
SUFFIXES = NPY_SUFFIXES | TIFF_SUFFIXES | IMAGE_SUFFIXES | ZARR_SUFFIXES | HDF5_SUFFIXES
#: TIFFs larger than this (decoded) are read in pieces: memory-mapped where the data is contiguous and
#: uncompressed, else through tifffile's Zarr store (page, strip or tile at a time).
TIFF_IN_PIECES = 64 * 1024**2
#: ITU-R BT.601 luminance, the weights OpenCV's ``cvtColor(..., COLOR_RGB2GRAY)`` uses.
LUMA = (0.299, 0.587, 0.114)


def suffix_of(path: str | os.PathLike) -> str:
    """``Path(path).suffix.lower()``, without building a Path for a plain POSIX path (several per input).

    Examples
    --------
    >>> suffix_of("a/b.PNG"), suffix_of("stack.ome.tif"), suffix_of("run.zarr/"), suffix_of(".npy"), suffix_of("a.")
    ('.png', '.tif', '.zarr', '', '')
    >>> suffix_of("probabilities.h5:/exported_data")  # an HDF5 file's dataset: the file's suffix
    '.h5'
    """
    text = os.fspath(path)
    if isinstance(text, str) and ":" in text:
        text = split_selector(text)[0]
    name = text.rstrip("/").rpartition("/")[2] if isinstance(text, str) and os.sep == "/" else ""
    if name in ("", ".", ".."):  # pathlib's rules for the rare rest: "a/.", "", bytes, Windows
        return Path(path).suffix.lower()
    i = name.rfind(".")
    return name[i:].lower() if 0 < i < len(name) - 1 else ""


def is_supported(path: str | os.PathLike) -> bool:
    """True when the file's extension (any case) is one peakloc reads."""
    return suffix_of(path) in SUFFIXES


def kind_of(path: str | os.PathLike) -> str:
    """``npy``, ``tiff``, ``zarr``, ``hdf5`` or ``image`` by extension (any case)."""
    suffix = suffix_of(path)
    if suffix in ZARR_SUFFIXES:
        return "zarr"
    if suffix in HDF5_SUFFIXES:
        return "hdf5"
    return "npy" if suffix in NPY_SUFFIXES else "tiff" if suffix in TIFF_SUFFIXES else "image"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _reason(kind: str, exc: Exception) -> str:
    """What went wrong inside a decoder, in words: the library's error named, never a traceback."""
    import zlib

    name = {"npy": "NPY", "tiff": "TIFF", "zarr": "Zarr", "hdf5": "HDF5", "image": "image"}[kind]
    module = type(exc).__module__.split(".")[0]
    if isinstance(exc, zlib.error):
        return f"corrupt {name} data (zlib: {_first_line(exc)})"
    if module == "imagecodecs":  # LzwError, ZstdError, JpegError...: the codec is in the class name
        codec = type(exc).__name__.removesuffix("Error").lower()
        return f"corrupt {name} data ({codec}: {_first_line(exc)})"
    if module == "cv2":
        return f"cannot decode image (OpenCV: {_first_line(exc).split(') ')[-1]})"
    return f"corrupt or unreadable {name} file ({type(exc).__name__}: {_first_line(exc)})"


def read(
    path: str | os.PathLike,
    axes: str | None = None,
    colormap: str | None = None,
    in_pieces: bool | None = None,
    check: Callable[[Probe | None], None] | None = None,
) -> tuple[np.ndarray, str]:
    """Read a heatmap file.

    Parameters
    ----------
    path : path-like or str
        A ``.npy``, ``.tif``/``.tiff``, HDF5 (``.h5``, ``.hdf5``, ``.hdf``) or image file (PNG, JPEG, BMP, ...
        anything in :data:`SUFFIXES`), or a ``.zarr`` store; a URL (``s3://...``, ``file://...``) is read
        through fsspec. ``FILE.h5:/group/dataset`` picks a dataset of an HDF5 file; without it, the file
        must hold one.
    axes : str, optional
        Axis letters of the stored array, overriding the defaults. Given for a colour TIFF, it names the
        stored samples too (a planar ``(4, Y, X)`` stack is then read as it is, e.g. as ``ZYX``).
    colormap : str, optional
        Read colour images as colour-mapped heatmaps of this OpenCV map (``jet``, ...): each pixel becomes
        the value whose colour is nearest. Without it colour becomes grey (luminance), with a
        :class:`~peakloc.errors.PeaklocWarning` where the colours lie on a known map.

    Returns
    -------
    array : ndarray or array-like
        As stored, in its own dtype (16-bit images stay 16-bit). Read lazily where the format allows: NPY
        files and large uncompressed TIFFs are memory-mapped, large compressed TIFFs and Zarr stores come as
        Zarr arrays (read chunk by chunk when sliced), HDF5 datasets as ``h5py.Dataset`` (by hyperslab).
    axes : str
        One letter per axis of `array`.

    in_pieces : bool, optional
        TIFF only: read in pieces (memory-mapped, or compressed pages as :class:`TiffPages`), or whole;
        default: pieces above :data:`TIFF_IN_PIECES` bytes decoded.
    check : callable, optional
        Images only: called with what the image will decode to (:func:`~peakloc.io.probe.probe_image`, None
        where its header is not understood), read from its header before the rest of the file is read and
        decoded; it raises to refuse the file (a memory budget). The file is opened once.

    Raises
    ------
    InputError
        Missing, empty, truncated, corrupt, pickled or non-numeric files, unsupported extensions; the
        reason names the decoder's own error (``corrupt TIFF data (zlib: ...)``).
    AxesError
        `axes` does not fit the array, or a 4-D or larger array has no axes.
    """
    if is_url(path):
        array, stored = _read_url(path, axes, colormap, in_pieces, check)
    else:
        array, stored = _read_file(os.fspath(path), axes, colormap, in_pieces, check)
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


def _unsupported(suffix: str) -> InputError:
    return InputError(f"unsupported file type {suffix or '(no extension)'!r}; supported: {', '.join(sorted(SUFFIXES))}")


class _decoding:  # noqa: N801 - used as a function: ``with _decoding(kind):``
    """What goes wrong while a ``kind`` file is read becomes an :class:`InputError` in words.

    A class, not a generator-based context manager: it wraps every input's read, and a generator's set-up
    costs a folder of small files a few microseconds each.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, traceback) -> bool:
        if exc is None or isinstance(exc, (InputError, AxesError, MemoryError)) or not isinstance(exc, Exception):
            return False
        if isinstance(exc, PermissionError):
            raise InputError("permission denied") from None
        if isinstance(exc, OSError):
            raise InputError(f"cannot read: {exc.strerror or exc}") from None
        # Any failure inside a decoder is this file's, said in words.
        raise InputError(_reason(self.kind, exc)) from None


def _read_url(url: str, axes: str | None, colormap: str | None, in_pieces: bool | None, check=None):
    """``(array, stored axes or None)`` of the file or Zarr store at ``url``.

    Zarr stores and TIFFs are read in pieces as from a disk (compressed TIFFs as :class:`TiffPages`, never
    memory-mapped); NPY files and images are read whole.
    """
    fs, where = filesystem(url)
    where, dataset = split_selector(where)
    suffix = suffix_of(where)
    if suffix not in SUFFIXES:
        raise _unsupported(suffix)
    kind = kind_of(where)
    with _decoding(kind):
        if not fs.exists(where):
            raise InputError("no such file or directory")
        if kind == "zarr":
            return read_zarr(url)
        if kind == "hdf5":  # h5py reads through the file object, which stays open while the dataset lives
            return read_hdf5(fs.open(where, "rb"), dataset)
        if fs.isdir(where):
            raise InputError("is a directory")
        if fs.size(where) == 0:
            raise InputError("file is empty")
        handle = fs.open(where, "rb")
        if kind == "npy":
            with handle:
                return read_npy(handle), None
        if kind == "tiff":
            # The handle stays open while a TIFF read in pieces lives.
            return read_tiff(handle, keep_samples=axes is not None, colormap=colormap, in_pieces=in_pieces)
        with handle:
            return decode_image(_image_bytes(handle, check), suffix, colormap), "YX"


def _read_file(path: str, axes: str | None, colormap: str | None, in_pieces: bool | None, check=None):
    """``(array, stored axes or None)`` of a file or Zarr folder on disk."""
    path, dataset = split_selector(path)
    suffix = suffix_of(path)
    try:
        # One stat answers what Path.exists, is_dir, is_file and stat would each ask again.
        status = os.stat(path)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP):  # as Path.exists
            raise
        raise InputError("no such file or directory") from None
    except ValueError:
        raise InputError("no such file or directory") from None
    if stat.S_ISDIR(status.st_mode) and suffix not in ZARR_SUFFIXES:
        raise InputError("is a directory")
    if suffix not in SUFFIXES:
        raise _unsupported(suffix)
    kind = kind_of(path)
    with _decoding(kind):
        if kind == "zarr":
            return read_zarr(Path(path))
        if not stat.S_ISREG(status.st_mode):
            raise InputError("is not a regular file")
        if status.st_size == 0:
            raise InputError("file is empty")
        if kind == "npy":
            return read_npy(Path(path)), None
        if kind == "tiff":
            return read_tiff(Path(path), keep_samples=axes is not None, colormap=colormap, in_pieces=in_pieces)
        if kind == "hdf5":
            return read_hdf5(Path(path), dataset)
        with open(path, "rb") as handle:
            data = _image_bytes(handle, check)
        return decode_image(data, suffix, colormap), "YX"


def read_npy(path) -> np.ndarray:
    """Memory-map an ``.npy`` file (or read a file object whole); never unpickles (``allow_pickle=False``)."""
    if hasattr(path, "read"):
        head = path.read(6)
        path.seek(0)
    else:
        with open(path, "rb") as handle:
            head = handle.read(6)
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle's protocol marker
        raise InputError("not an NPY file but a Python pickle; peakloc never unpickles")
    if head != b"\x93NUMPY":
        raise InputError("not an NPY file (no NPY header)")
    try:
        return np.load(path, mmap_mode=None if hasattr(path, "read") else "r", allow_pickle=False)
    except ValueError as exc:
        text = str(exc)
        if "pickle" in text or "Python objects" in text:
            raise InputError("holds Python objects (pickled data); peakloc never unpickles") from None
        if "mmap length" in text or "Failed to read" in text or "EOF" in text:
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


def read_tiff(
    path: Path, keep_samples: bool = False, colormap: str | None = None, in_pieces: bool | None = None
) -> tuple[np.ndarray, str]:
    """First series of a TIFF with tifffile's axes (ImageJ and OME metadata), compressed or not.

    Colour samples (``S``) become grey (or values, with ``colormap``) unless ``keep_samples``: then the
    array comes as stored, ``S`` included, for the caller's own axis letters.
    """
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
        series = tif.series[0]
        axes = series.axes
        if in_pieces is None:
            in_pieces = series.size * series.dtype.itemsize > TIFF_IN_PIECES
        in_pieces = in_pieces and ("S" not in axes or keep_samples)
        array = _tiff_in_pieces(path, tif, series) if in_pieces else None
        if array is None:
            with tif:
                array = series.asarray()
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


def _tiff_in_pieces(path: Path, tif, series):
    """A large TIFF series read in pieces, or None without Zarr.

    A memmap where the data is contiguous and uncompressed, else :class:`TiffPages` over the series and a
    Zarr array over tifffile's store (the file stays open while the array lives); the Zarr array alone where
    a page is not one plane of the series.
    """
    import tifffile

    if series.dataoffset is not None and not hasattr(path, "read"):
        tif.close()
        return tifffile.memmap(path, series=0, mode="r")
    try:
        import zarr
    except ImportError:
        return None
    from ..backends.numpy_backend import DEFAULT_THREADS

    # Each tile a box crosses decodes on a thread of its own: tifffile's store, left to choose, decodes them
    # one after another on two cores (a box around a peak of the 4 GiB volume: 35 -> 19 ms).
    stored = zarr.open(series.aszarr(maxworkers=DEFAULT_THREADS), mode="r")
    return TiffPages(series, stored) if TiffPages.fits(series) else stored


class TiffPages:
    """A compressed TIFF series read in pieces: whole pages decoded by tifffile, on threads; boxes by Zarr.

    A slab of a volume is whole pages (planes). tifffile decodes them, their tiles or strips on
    :data:`~peakloc.backends.numpy_backend.DEFAULT_THREADS` threads (its codecs release the GIL), about twice
    as fast as the same pages through its Zarr store, which decodes chunk by chunk through Zarr's machinery.
    A box inside pages (the windows around peaks) goes through the store, which decodes only the tiles it
    crosses.
    """

    #: Read in pieces, as Zarr, Dask and HDF5 arrays are (:func:`peakloc.ops.lazy.is_lazy`).
    read_in_pieces = True

    def __init__(self, series, stored) -> None:
        from ..backends.numpy_backend import DEFAULT_THREADS

        self.series, self.stored, self.threads = series, stored, DEFAULT_THREADS
        # Every read of the file under its lock: pages decode on tifffile's threads, and windows may be read
        # from threads of their own.
        series.parent.filehandle.set_lock(True)
        self.shape, self.dtype = tuple(series.shape), np.dtype(series.dtype)
        self.page_ndim = len(series.keyframe.shape)
        #: A chunk is a page: one plane of the first page axis.
        self.chunks = (1,) * (len(self.shape) - self.page_ndim) + tuple(self.shape[-self.page_ndim :])
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape, dtype=np.int64))
        self.nbytes = self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[()]
        return whole if dtype is None else whole.astype(dtype)

    @staticmethod
    def fits(series) -> bool:
        """Whether each page of ``series`` is one plane of it, in C order of the axes before the page's."""
        page = tuple(series.keyframe.shape)
        lead = tuple(series.shape[: len(series.shape) - len(page)])
        return (
            len(page) in (2, 3)
            and tuple(series.shape[len(lead) :]) == page
            and len(series.pages) == int(np.prod(lead, dtype=np.int64))
        )

    def __getitem__(self, index) -> np.ndarray:
        return self.read_into(index)

    def read_into(self, index, out: np.ndarray | None = None) -> np.ndarray:
        """``self[index]``; whole pages are decoded straight into ``out`` (C-contiguous, their shape) if given."""
        index = index if isinstance(index, tuple) else (index,)
        index = index + (slice(None),) * (len(self.shape) - len(index))
        lead, inside = index[: len(self.shape) - self.page_ndim], index[len(self.shape) - self.page_ndim :]
        whole = all(isinstance(i, slice) and i.indices(n) == (0, n, 1) for i, n in zip(inside, self.shape[len(lead) :]))
        if not whole:
            piece = np.asarray(self.stored[index])
        else:
            keys = np.arange(len(self.series.pages)).reshape(self.shape[: len(lead)])[lead]
            shape = keys.shape + self.shape[len(lead) :]
            if keys.size == 0:
                piece = np.empty(shape, self.dtype)
            elif out is not None and out.flags.c_contiguous and out.shape == shape and out.dtype == self.dtype:
                self.series.asarray(key=keys.reshape(-1).tolist(), maxworkers=self.threads, out=out)
                return out
            else:
                piece = self.series.asarray(key=keys.reshape(-1).tolist(), maxworkers=self.threads).reshape(shape)
        if out is None:
            return piece
        out[...] = piece
        return out


#: OME-Zarr (NGFF) axis names -> peakloc's letters; other names are batch axes of unknown kind.
NGFF_AXES = {"t": "T", "c": "C", "z": "Z", "y": "Y", "x": "X"}


def read_zarr(path: Path) -> tuple[object, str | None]:
    """A Zarr array (v2 or v3), or the full-resolution level of an OME-Zarr image (NGFF 0.4 or 0.5).

    Returns the Zarr array (read chunk by chunk when sliced) and its axes: from the OME-Zarr metadata, else
    None (the defaults of an NPY of that shape apply).
    """
    try:
        import zarr
    except ImportError:
        raise InputError("Zarr stores need the zarr package: pip install 'peakloc[zarr]'") from None
    node = zarr.open(str(path), mode="r")
    if hasattr(node, "shape"):
        return node, None
    attrs = dict(node.attrs)
    multiscales = attrs.get("ome", {}).get("multiscales") or attrs.get("multiscales")
    if not multiscales:
        arrays = list(node.array_keys())
        if len(arrays) == 1:
            return node[arrays[0]], None
        raise InputError(f"Zarr group without OME-Zarr multiscales metadata and {len(arrays)} arrays; name one")
    scale = multiscales[0]
    array = node[scale["datasets"][0]["path"]]
    names = [a["name"] if isinstance(a, dict) else a for a in scale.get("axes", [])]
    axes = "".join(NGFF_AXES.get(str(n).lower(), "Q") for n in names) if names else None
    if axes is not None and len(axes) != len(array.shape):
        raise InputError(f"OME-Zarr axes {names} do not match the array's shape {tuple(array.shape)}")
    return array, axes


def _image_bytes(handle, check) -> bytes:
    """An image file's bytes; ``check`` (see :func:`read`) sees its header's probe before the rest is read.

    One open for both: the probe's read and the rest come from one buffered handle. A file refused by the
    budget is not read whole (a 500 MB JPEG would have been read into memory before its refusal).
    """
    if check is not None:
        check(probe_image(handle))
        handle.seek(0)
    return handle.read()


def decode_image(data: bytes, suffix: str, colormap: str | None = None) -> np.ndarray:
    """Decode an image file's bytes, all bits kept (16-bit stays 16-bit); colour becomes grey (BT.601).

    A grey PNG (a saved heatmap) is decoded by libpng through imagecodecs (:func:`_grey_png`); every other
    image, and a grey PNG that decoder refuses, by OpenCV. ``suffix`` names the format in the error of a
    file OpenCV cannot decode. With ``colormap``, colour becomes the values of that colour map instead.
    """
    image = _grey_png(data)
    if image is not None:
        return image
    import cv2

    _quiet_opencv(cv2)
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InputError(f"cannot decode image (corrupt, truncated, or not a {suffix[1:].upper()} file)")
    if image.ndim == 3:
        channels = image.shape[2]
        if channels in (3, 4):
            code = cv2.COLOR_BGR2GRAY if channels == 3 else cv2.COLOR_BGRA2GRAY
            image = _colour_to_values(image, colormap, lambda bgr: cv2.cvtColor(bgr, code))
        else:
            image = image[..., 0]
    return image


def _grey_png(data: bytes) -> np.ndarray | None:
    """A grey PNG's samples ``(H, W)`` (uint8, or uint16 for 16 bits) decoded by libpng through imagecodecs.

    None where the file is no grey PNG (IHDR colour type 0), or where that decoder fails or gives anything
    but one sample per pixel (a grey PNG with a transparent value comes as grey and alpha): OpenCV then
    decodes it, and names a corrupt file in its error. Both decode a PNG's lossless samples the same, sample
    for sample (``tests/io/test_readers.py`` holds them to that at every bit depth); importing imagecodecs
    and its PNG codec takes 3 ms, OpenCV 15-18 ms, which a run over one PNG (about 0.12 s) or each process
    of a pool over many pays once.
    """
    found = probe_png(data)
    # Past OpenCV's limit, OpenCV refuses it in its words; libpng would try to allocate it.
    if found is None or found.samples != 1 or found.values > OPENCV_MAX_PIXELS:
        return None
    try:
        import imagecodecs

        image = imagecodecs.png_decode(data)
    except Exception:  # noqa: BLE001 - any failure: OpenCV decodes it, or names the file's fault
        return None
    if not isinstance(image, np.ndarray) or image.ndim != 2 or image.dtype not in (np.uint8, np.uint16):
        return None
    return image


@cache
def _quiet_opencv(cv2) -> None:
    """OpenCV logs decoder warnings to stderr itself; peakloc reports one line per bad file instead (once a process)."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is not None and hasattr(logging, "LOG_LEVEL_SILENT"):
        logging.setLogLevel(logging.LOG_LEVEL_SILENT)
