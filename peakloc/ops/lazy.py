"""Heatmaps read in pieces: NumPy memmaps, Zarr arrays, Dask arrays and HDF5 datasets behind one interface.

:class:`Maps` presents any array-like (anything with ``shape``, ``dtype`` and NumPy-style slicing) as a
stack of maps ``(B, *spatial)``, its batch axes flattened in C order, optionally with its stored axes in
another order (``order``), without reading anything until a piece is asked for: one map, a box of one map,
or a slab of rows of one map. Every read returns a NumPy array.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError, PeaklocError


def is_lazy(x: Any) -> bool:
    """True for arrays to be read in pieces: memmaps, Zarr, Dask and HDF5 arrays (not ndarrays or tensors)."""
    if isinstance(x, np.memmap):
        return True
    if isinstance(x, np.ndarray) or not hasattr(x, "shape") or not hasattr(x, "dtype"):
        return False
    module = type(x).__module__.split(".")[0]
    return module in ("zarr", "dask", "tifffile", "h5py") or getattr(x, "read_in_pieces", False)


def _piece(array: Any, index: tuple, out: np.ndarray | None = None) -> np.ndarray:
    """``np.asarray(array[index])``; a store that fails to decode the piece is the input's error, in words.

    A lazily read file is decoded long after it was opened: a corrupt chunk found then still fails its input
    alone, with one line. With ``out`` (the selection's shape), the values are written there and ``out`` is
    returned. An array that can decode into it does so: a :class:`~peakloc.io.readers.TiffPages` series
    (``read_into``), or a Zarr array of ``out``'s dtype, whose chunks are then copied from their decoded
    buffers straight into ``out`` rather than into a new array first (the 4 GiB OME-Zarr volume read band by
    band: 2.7 -> 2.2 s CPU, 0.9 -> 0.7 s in the kernel). Others are read as usual, then copied there.
    """
    try:
        if out is not None and hasattr(array, "read_into"):
            return array.read_into(index, out)
        if out is not None and _zarr_array(array) and out.dtype == array.dtype:
            from zarr.core.buffer.cpu import NDBuffer

            array.get_basic_selection(index, out=NDBuffer.from_numpy_array(out))
            return out
        piece = np.asarray(array[index])
    except (PeaklocError, MemoryError):
        raise
    except Exception as exc:
        # A decoder's failure (h5py's OSError, a codec's own error, or a plain error raised inside a codec, as
        # numcodecs' RuntimeError for a corrupt Zstd chunk) is the input's; anything else, an index this
        # module got wrong say, stays a bug to report.
        if not (isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in _DECODERS or _raised_in_codec(exc)):
            raise
        text = (str(exc).strip().splitlines() or ["unreadable"])[0]
        raise InputError(f"corrupt data in the file ({type(exc).__name__}: {text})") from None
    if out is None:
        return piece
    out[...] = piece
    return out


def _zarr_array(array: Any) -> bool:
    """Whether ``array`` is a Zarr array (Zarr 3's API: ``get_basic_selection`` with an ``out`` buffer)."""
    return type(array).__module__.split(".")[0] == "zarr" and hasattr(array, "get_basic_selection")


#: Libraries whose errors, raised while a piece is read, mean the stored data cannot be decoded.
_DECODERS = frozenset({"h5py", "zarr", "numcodecs", "imagecodecs", "tifffile", "zlib", "blosc", "zstandard"})

#: Modules that only decode: any error raised in one of them, whatever its class, is the data's.
_CODECS = ("numcodecs", "imagecodecs", "zlib", "blosc", "zstandard", "zarr.codecs")


def _raised_in_codec(exc: BaseException) -> bool:
    """Whether ``exc`` was raised inside a codec (its innermost frame's module), not by the store's indexing."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    name = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
    return any(name == codec or name.startswith(codec + ".") for codec in _CODECS)


def _get(array: Any, index: tuple, out: np.ndarray | None = None) -> np.ndarray:
    """``np.asarray(array[index])``, a chunked store read one chunk column at a time; into ``out`` if given.

    A Zarr store decodes every chunk a selection crosses at once, with several copies of each: a slab across
    a wide map would hold all its chunks decoded together. Here the selection is split along every sliced
    axis but its first, at chunk borders, so that each read decodes the chunks of one column only. With
    ``out`` (a memory-mapped file, say) each column goes straight there: nothing slab-sized is held.
    """
    chunks = getattr(array, "chunks", None)
    split = []
    if not isinstance(array, np.ndarray) and chunks and all(isinstance(c, (int, np.integer)) for c in chunks):
        index = index + (slice(None),) * (len(array.shape) - len(index))
        ranges = [(k, *i.indices(int(array.shape[k]))[:2]) for k, i in enumerate(index) if isinstance(i, slice)]
        if all(i.step in (None, 1) for i in index if isinstance(i, slice)):
            split = [(k, lo, hi) for k, lo, hi in ranges[1:] if hi - lo > int(chunks[k])]
    if not split:  # in memory, not chunked, or within one chunk column: one read
        if not isinstance(array, np.ndarray):
            return _piece(array, index, out)
        part = np.asarray(array[index])
        if out is None:
            return part
        out[...] = part
        return out
    kept = [k for k, _, _ in ranges]
    if out is None:
        out = np.empty([hi - lo for _, lo, hi in ranges], np.dtype(array.dtype))

    def column(corner: tuple[int, ...]) -> None:
        sub, place = list(index), [slice(None)] * len(kept)
        for (k, lo, hi), n in zip(split, corner):
            start = max(lo, (lo // int(chunks[k]) + n) * int(chunks[k]))
            stop = min(hi, (lo // int(chunks[k]) + n + 1) * int(chunks[k]))
            sub[k] = slice(start, stop)
            place[kept.index(k)] = slice(start - lo, stop - lo)
        _piece(array, tuple(sub), out[tuple(place)])

    corners = list(np.ndindex(*[-(-hi // int(chunks[k])) - lo // int(chunks[k]) for k, lo, hi in split]))
    # Zarr reads thread-safely and its codecs release the GIL: its columns decode on every core, on threads
    # of their own (a read may come from a thread of the compute pool). h5py and other stores read one
    # column after another.
    if type(array).__module__.split(".")[0] == "zarr" and len(corners) > 1:
        list(_read_pool().map(column, corners))
    else:
        for corner in corners:
            column(corner)
    return out


def _read_pool():
    """Threads that decode a store's chunk columns, one per core (at most 8), started on first use."""
    global _READERS
    if _READERS is None:
        from concurrent.futures import ThreadPoolExecutor

        from ..backends.numpy_backend import DEFAULT_THREADS

        _READERS = ThreadPoolExecutor(max_workers=DEFAULT_THREADS, thread_name_prefix="peakloc-read")
    return _READERS


_READERS = None


class Maps:
    """A lazy stack of maps ``(B, *spatial)`` over a stored array.

    Parameters
    ----------
    array : array-like
        The stored array (memmap, Zarr, Dask, or an ndarray).
    ndim : int
        Number of spatial axes: the last ``ndim`` axes after ``order`` is applied.
    order : sequence of int, optional
        Stored axis of each axis of the stack (batch axes first, then spatial), as ``numpy.transpose`` takes
        them. Default: the stored order.
    """

    def __init__(self, array: Any, ndim: int, order: Sequence[int] | None = None) -> None:
        self.array = array
        self.order = tuple(range(len(array.shape))) if order is None else tuple(order)
        moved = tuple(int(array.shape[a]) for a in self.order)
        self.batch_shape = moved[: len(moved) - ndim]
        self.spatial = moved[len(moved) - ndim :]
        self.dtype = np.dtype(array.dtype)
        self.count = int(np.prod(self.batch_shape, dtype=np.int64))
        self.shape = (self.count, *self.spatial)
        self.ndim = 1 + ndim
        #: How to open the same stack in another process (a :class:`peakloc.run.locate.Source`), or None.
        self.source = None
        #: What a pass over map ``b`` found that would otherwise take another read of it: ``seen[b]`` holds
        #: ``"projections"`` (a volume's maximum projections along Z, Y, X, float64, NaN where nothing is
        #: finite) or ``"pooled"`` (``(factor, picture)``: a large 2-D map max-pooled), and ``"range"`` (its
        #: finite minimum and maximum). Filled by :func:`peakloc.ops.streaming.survey`; read by the overlay.
        self.seen: dict[int, dict] = {}

    def __len__(self) -> int:
        return self.count

    def read(self, b: int, box: tuple[slice, ...] = (), out: np.ndarray | None = None) -> np.ndarray:
        """Map ``b`` (or the ``box`` of it: one slice per spatial axis) as an ndarray in spatial order.

        With ``out`` (the box's shape, spatial order), the values are written there and ``out`` returned.
        """
        box = tuple(box) + (slice(None),) * (len(self.spatial) - len(box))
        moved = tuple(int(i) for i in np.unravel_index(b, self.batch_shape)) + box
        stored = [None] * len(self.order)
        for position, axis in enumerate(self.order):
            stored[axis] = moved[position]
        # The slices stay, in stored order; put them in spatial order.
        kept = [axis for axis in sorted(self.order[len(self.batch_shape) :])]
        wanted = list(self.order[len(self.batch_shape) :])
        to_spatial = [kept.index(axis) for axis in wanted]
        if out is not None:
            _get(self.array, tuple(stored), np.transpose(out, np.argsort(to_spatial)))
            return out
        return np.transpose(_get(self.array, tuple(stored)), to_spatial)

    def load(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Maps ``start:stop`` in memory, ``(k, *spatial)``."""
        stop = self.count if stop is None else stop
        if stop - start == 1:  # one map: the array read is the answer, not a second copy of it
            return self.read(start)[np.newaxis]
        out = np.empty((max(0, stop - start), *self.spatial), self.dtype)
        for k, b in enumerate(range(start, stop)):
            out[k] = self.read(b)
        return out

    def __getitem__(self, index) -> Any:
        """``maps[b]`` is a :class:`Map`; ``maps[b, i, j]`` one value."""
        if isinstance(index, tuple) and len(index) == 1 + len(self.spatial):
            return self.read(int(index[0]), tuple(slice(int(i), int(i) + 1) for i in index[1:])).reshape(())[()]
        return Map(self, int(index))

    def chunk_shape(self) -> tuple[int, ...] | None:
        """The stored chunk's size along each spatial axis, or None where the store has no regular chunks."""
        chunks = getattr(self.array, "chunks", None)
        if not chunks or not all(isinstance(c, (int, np.integer)) for c in chunks):
            return None
        return tuple(int(chunks[axis]) for axis in self.order[len(self.batch_shape) :])

    def chunk_rows(self) -> int:
        """Rows of the first spatial axis in one stored chunk (1 where the store has no chunks)."""
        shape = self.chunk_shape()
        return 1 if shape is None else shape[0]


class Map:
    """One map of a :class:`Maps` stack: slicing it reads that piece only (``volume[10:20]``)."""

    def __init__(self, maps: Maps, b: int) -> None:
        self.maps, self.b = maps, b
        self.shape = maps.spatial
        self.ndim = len(maps.spatial)
        self.dtype = maps.dtype

    @property
    def seen(self) -> dict:
        """What a pass over this map already found (:attr:`Maps.seen`); empty before one."""
        return self.maps.seen.get(self.b, {})

    def __getitem__(self, index) -> np.ndarray:
        index = index if isinstance(index, tuple) else (index,)
        box = tuple(i if isinstance(i, slice) else slice(int(i), int(i) + 1) for i in index)
        squeeze = tuple(k for k, i in enumerate(index) if not isinstance(i, slice))
        piece = self.maps.read(self.b, box)
        return piece.reshape([n for k, n in enumerate(piece.shape) if k not in squeeze]) if squeeze else piece


class KeptBoxes(Maps):
    """A stack read in pieces whose small boxes are read with a margin once, then served from memory.

    The windows around a peak are read by every method, the shape estimate, the two-spot test and the value
    columns, each a little differently sized. From a store that decodes, each read decodes the chunks or
    tiles it crosses again; here the first read around a place takes ``margin`` more pixels a side, and a
    later box inside a kept one is cut from it. Boxes are kept up to ``limit`` bytes, the oldest dropped
    first; a box of more than a sixteenth of that is read directly. Reads hold a lock: the windows' threads
    share the boxes. The first window around a 3-D peak is the shape estimate's 17^3; the fits' windows of
    its spots are a few pixels wider (19^3 for the spots of the 4 GiB volume of ``make bench-memory``). A
    TIFF volume decodes every page a box crosses, so a wider margin costs: 8 px a side decoded 33 pages a
    peak where 21 served every window, and the box reads took 2.1-2.25 s instead of 1.7-2.0 s.
    """

    def __init__(self, maps: Maps, margin: int = 4, limit: int = 64 << 20) -> None:
        import threading

        self.__dict__.update(maps.__dict__)  # the same stack: array, order, shapes, what was seen
        self.inner, self.margin, self.limit = maps, margin, limit
        self.kept: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
        self.lock = threading.Lock()

    def prefetch(self, wanted: list[tuple[int, tuple[slice, ...]]], threads: int) -> None:
        """Read the boxes ``wanted`` (``(b, box)`` pairs, each with the margin) on ``threads`` threads, and keep them.

        Those first, up to the limit, where each :meth:`read` would decode its box in turn: a store's boxes,
        read side by side, decode on every core (a TIFF's tiles, a Zarr store's chunks). A store of chunks
        decodes each chunk the boxes cross once, for all of them (:meth:`_read_by_chunk`).
        """
        from ..backends.numpy_backend import map_in_threads

        jobs, total = [], 0
        for b, box in wanted:
            start, stop = self._margined(*self._span(box)[1:])
            size = int(np.prod(np.maximum(stop - start, 0))) * self.dtype.itemsize
            if size > self.limit // 16 or total + size > self.limit:
                break
            total += size
            jobs.append((b, start, stop))
        grid = self._chunk_grid()
        if grid is None or len(jobs) < 2:
            got = map_in_threads(lambda job: (*job, self._read_box(*job)), jobs, threads)
        else:
            got = self._read_by_chunk(jobs, grid, threads)
        with self.lock:
            self._keep(got)

    def _chunk_grid(self) -> np.ndarray | None:
        """The store's chunk size along each spatial axis, or None: no regular chunks, or pages read whole.

        A :class:`~peakloc.io.readers.TiffPages` series reads a box inside its pages through tifffile's tiles:
        its pages are not what a box decodes.
        """
        shape = None if hasattr(self.array, "read_into") else self.chunk_shape()
        return None if shape is None else np.array(shape)

    def _read_by_chunk(self, jobs: list[tuple], grid: np.ndarray, threads: int) -> list[tuple]:
        """``(b, start, stop, values)`` of each job, each stored chunk that the boxes cross read once.

        Each chunk's part that its boxes cover (their bounding box within it) is read on a thread of its own
        and cut into each box. The 4 GiB OME-Zarr volume's 101 boxes cross 115 chunks of 16 MiB, 155 times.
        """
        from collections import defaultdict
        from itertools import product

        from ..backends.numpy_backend import map_in_threads

        boxes = [np.empty(tuple(int(n) for n in stop - start), self.dtype) for _, start, stop in jobs]
        crossing: dict[tuple, list[int]] = defaultdict(list)
        for k, (b, start, stop) in enumerate(jobs):
            if np.any(stop <= start):
                continue
            first, last = start // grid, (stop - 1) // grid
            for corner in product(*(range(f, z + 1) for f, z in zip(first, last))):
                crossing[(b, corner)].append(k)

        def read_chunk(item: tuple[tuple, list[int]]) -> None:
            (b, corner), members = item
            lo = np.array(corner) * grid
            hi = np.minimum(lo + grid, self.spatial)
            parts = [(np.maximum(jobs[k][1], lo), np.minimum(jobs[k][2], hi)) for k in members]
            low = np.min([a for a, _ in parts], axis=0)
            high = np.max([z for _, z in parts], axis=0)
            # One read of the boxes' bounding part of the chunk, unless they lie far apart in a large chunk.
            together = int(np.prod(high - low)) * self.dtype.itemsize <= self.limit // 4
            if together:
                values, origin = self.inner.read(b, tuple(slice(int(i), int(e)) for i, e in zip(low, high))), low
            for k, (a, z) in zip(members, parts):
                if not together:
                    values, origin = self.inner.read(b, tuple(slice(int(i), int(e)) for i, e in zip(a, z))), a
                start = jobs[k][1]
                boxes[k][tuple(slice(int(i - j), int(e - j)) for i, e, j in zip(a, z, start))] = values[
                    tuple(slice(int(i - j), int(e - j)) for i, e, j in zip(a, z, origin))
                ]

        map_in_threads(read_chunk, list(crossing.items()), threads)
        return [(b, start, stop, values) for (b, start, stop), values in zip(jobs, boxes)]

    def read(self, b: int, box: tuple[slice, ...] = (), out: np.ndarray | None = None) -> np.ndarray:
        """:meth:`Maps.read`, a small box cut from a kept one where one holds it."""
        ranges, lo, hi = self._span(box)
        size = int(np.prod(hi - lo)) * self.dtype.itemsize
        if out is not None or any(r[2] != 1 for r in ranges) or size > self.limit // 16:
            return self.inner.read(b, box, out)
        with self.lock:
            for owner, start, stop, values in reversed(self.kept):
                if owner == b and np.all(start <= lo) and np.all(hi <= stop):
                    return values[tuple(slice(a - s, z - s) for a, z, s in zip(lo, hi, start))].copy()
            start, stop = self._margined(lo, hi)
            values = self._read_box(b, start, stop)
            self._keep([(b, start, stop, values)])
            return values[tuple(slice(a - s, z - s) for a, z, s in zip(lo, hi, start))].copy()

    def _span(self, box: tuple[slice, ...]) -> tuple[list, np.ndarray, np.ndarray]:
        """``(ranges, lo, hi)`` of a box: each axis's ``slice.indices``, and its first and end samples."""
        box = tuple(box) + (slice(None),) * (len(self.spatial) - len(box))
        ranges = [s.indices(n) for s, n in zip(box, self.spatial)]
        lo = np.array([r[0] for r in ranges])
        return ranges, lo, np.maximum(lo, [r[1] for r in ranges])

    def _margined(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The box ``lo:hi`` grown by the margin, within the map."""
        return np.maximum(lo - self.margin, 0), np.minimum(hi + self.margin, self.spatial)

    def _read_box(self, b: int, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
        return self.inner.read(b, tuple(slice(int(a), int(z)) for a, z in zip(start, stop)))

    def _keep(self, boxes: list[tuple]) -> None:
        """Keep ``(b, start, stop, values)`` boxes, the oldest dropped first past the limit (lock held)."""
        self.kept += boxes
        total = sum(v.nbytes for _, _, _, v in self.kept)
        while total > self.limit and len(self.kept) > 1:
            total -= self.kept.pop(0)[3].nbytes
