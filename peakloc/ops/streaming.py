"""Every method on maps too large to hold, read in slabs along their first spatial axis.

Each method reads with the halo it needs, and the answers equal the in-memory ones (the tests force tiny
slabs to check it).

- One read of each slab for every pass that needs it (:func:`survey`): the extremes and counts, what an
  overlay draws (a volume's maximum projections, a large 2-D map's max-pooled picture, the range), the local
  maxima's candidates and the soft-argmax; the argmax then reads one slab again. The soft-argmax's weights
  need the map's extremes, known only after the pass: each slab lists the values that could count, and the
  sums come from those lists where they hold every value that does (otherwise the slab is read again), in
  exactly the slabs of the NumPy back end's large-map path, added in the same order (:func:`soft_argmax`, its
  second pass, gives the same answer).
- Local maxima: candidates from ``min_distance`` rows of halo around each slab for the maximum filter (in
  cache-sized pieces, the slab's own dtype: :func:`~peakloc.ops.filters.maxima_mask`), the survey's first
  and more read only where the greedy spacing needs them; then that spacing, its plateaus and rounding
  ridges labelled slab by slab and joined across slab borders (:class:`_Joins`, :func:`local_maxima`).
- Sub-pixel methods read windows around each peak (:func:`peakloc.ops.windows.windows` takes a
  :class:`~peakloc.ops.lazy.Maps`), and the Gaussian fit's clip levels come from :func:`map_stats`.
- Smoothing: a pass with the filter's radius of halo, into a float64 memory-mapped temporary file
  (:func:`smooth`).
- A store whose reads decode: rows of overlapping halos are decoded once a pass (:class:`_Band`), and one
  chunked deeper than the slabs may be decoded once into a temporary file (:func:`decoded_copy`).
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass

import numpy as np

from ..backends import numpy_backend
from ..errors import NoFiniteValueError, NoRoomError
from . import peaks as in_memory
from . import regions as labelling
from .filters import block_maxima, exact_bound, maxima_mask
from .lazy import Maps
from .normalize import coefficient
from .smoothing import smooth_one, smoothing_kernels

#: Values read at once when the caller does not say: 16 Mi values (64 MiB of float32).
DEFAULT_BLOCK = 1 << 24

#: Values reduced twice in a row (max, then min) while they are still in the CPU's cache.
CACHE_VALUES = 1 << 18


@dataclass(frozen=True)
class MapStats:
    """One map's finite extremes (in its own dtype), counts, and the flat index of its first maximum."""

    hi: np.generic
    lo: np.generic
    count: int
    nonfinite: int
    first: int
    count_hi: int
    count_lo: int


def rows_per_read(maps: Maps, block: int = DEFAULT_BLOCK, multiple: int = 1) -> int:
    """Rows of the first spatial axis per read.

    About ``block`` values, a multiple of ``multiple`` rows and, where it fits, of the store's chunk rows
    (a chunk is then decoded once).
    """
    row = int(np.prod(maps.spatial[1:], dtype=np.int64))
    rows = max(1, block // max(1, row))
    chunk = maps.chunk_rows()
    if chunk > 1 and rows >= chunk:
        rows -= rows % chunk
    rows = max(multiple, rows - rows % multiple)
    return rows


class Slabs:
    """Where the slab work of a pass runs: here, each slab read in this thread and computed on threads.

    ``map(compute, maps, b, boxes, *args)`` is ``[compute(maps.read(b, rows low:high), box, *args) for box
    in boxes]``, in order, with ``threads`` slabs in memory at once; a box is ``(low, high, start)``: the
    rows read, and the first row of the slab they hold (the rest is halo). The reads stay in this thread and in
    order: a store that decodes is asked one slab at a time. ``compute`` is a module-level function, so that
    a cluster's runner (:class:`peakloc.run.cluster.ClusterSlabs`) can send it to workers that read their
    own slabs.
    """

    def __init__(self, threads: int | None = None, band: int = 0) -> None:
        self.threads = numpy_backend.DEFAULT_THREADS if threads is None else max(1, int(threads))
        #: Rows of the store's chunks when slabs are read through a band of whole chunks (0: read directly).
        self.band = band

    def map(self, compute, maps: Maps, b: int, boxes: list[tuple[int, int, int]], *args, fold=None) -> list:
        """``compute(slab, box, *args)`` of each box's slab of map ``b``, in order.

        A store that decodes is read through a band (:class:`_Band`) where slabs overlap (their halos), so
        that each row is decoded once a pass. With ``fold``, each result is handed to ``fold(box, result)``
        as soon as its slab is done, in order, and not kept: returns an empty list.
        """
        overlap = any(box[0] < previous[1] for previous, box in zip(boxes, boxes[1:]))
        if self.band > 1:
            rows = _Band(maps, b, self.band, reuse=True)
        else:  # bands of one row: each row read once, kept for the next slab's halo
            rows = _Band(maps, b, 1) if overlap and decodes(maps) else None
        out: list = []

        def take(box: tuple[int, int, int], result) -> None:
            if fold is None:
                out.append(result)
            else:
                fold(box, result)

        def read(box: tuple[int, int, int]) -> np.ndarray:
            return rows.read(box[0], box[1]) if rows else maps.read(b, (slice(box[0], box[1]),))

        if self.threads == 1:
            for box in boxes:
                take(box, compute(read(box), box, *args))
            return out
        # The next slab is read (a store decodes it, on threads of its own) while the slabs before it are
        # computed: up to ``threads`` slabs computed and one read, the one more within the budget's room for a
        # slab read again (a 4 GiB zlib TIFF's pass: 13.0 -> 10.5 s, with reads and computing in turn).
        pool = numpy_backend.worker_pool(self.threads)
        running: deque = deque()
        for box in boxes:
            if self.band > 1 and rows.fresh(box[0], box[1]):
                # A new band of whole chunks: the slabs of the last one end first, so that one band is held.
                while running:
                    done, future = running.popleft()
                    take(done, future.result())
            piece = read(box)
            running.append((box, pool.submit(compute, piece, box, *args)))
            del piece
            if len(running) > self.threads:
                done, future = running.popleft()
                take(done, future.result())
        while running:
            done, future = running.popleft()
            take(done, future.result())
        return out


class _Band:
    """Rows of one map read in whole chunks of its store, for slabs asked in row order.

    A compressed chunk decodes whole: slabs thinner than a chunk, read directly, would decode each chunk once
    per slab, and hold all the chunks a slab crosses at once. Here each chunk is decoded once, and the rows
    kept are those from the current slab's first to the end of the chunks read.

    With ``reuse`` (for a caller that holds no slab of a band when it asks for rows past it), each band is
    decoded into the last one's array, after the rows kept moved to its front: a new array of a band's size
    each time had the kernel find and zero its pages as they were first written (the 4 GiB OME-Zarr volume,
    16 bands of 256 MiB, its chunks decoded straight into the band, see :func:`~peakloc.ops.lazy._piece`:
    9.2-9.3 s without, 7.8-8.4 s with).
    """

    def __init__(self, maps: Maps, b: int, band: int, reuse: bool = False) -> None:
        self.maps, self.b, self.band, self.reuse = maps, b, band, reuse
        self.lo = self.hi = 0
        self.rows: np.ndarray | None = None
        self._buffer: np.ndarray | None = None

    def fresh(self, lo: int, hi: int) -> bool:
        """Whether :meth:`read` of rows ``lo:hi`` decodes new rows."""
        return self.rows is None or lo < self.lo or hi > self.hi

    def _room(self, count: int) -> np.ndarray | None:
        """The reused array's first ``count`` rows, or None where there is no such array of as many rows."""
        if not self.reuse or self._buffer is None or len(self._buffer) < count:
            return None
        return self._buffer[:count]

    def read(self, lo: int, hi: int) -> np.ndarray:
        if self.fresh(lo, hi):
            keep = self.rows is not None and self.lo <= lo < self.hi
            start = self.hi if keep else lo
            stop = min(self.maps.spatial[0], -(-hi // self.band) * self.band)
            kept = self.hi - lo if keep else 0
            rows = self._room(kept + stop - start)
            if rows is None:
                # Reused, with room for as many rows as a slab reads: those a later band keeps (pages never
                # written are never given memory).
                spare = hi - lo if self.reuse else 0
                whole = np.empty((kept + stop - start + spare, *self.maps.spatial[1:]), np.dtype(self.maps.dtype))
                rows = whole[: kept + stop - start]
                self._buffer = whole if self.reuse else None
            if kept:
                _move_rows(self.rows[lo - self.lo :], rows)
            self.rows = None  # the last band goes before the next is decoded
            self.maps.read(self.b, (slice(start, stop),), out=rows[kept:])
            self.rows = rows
            self.lo, self.hi = lo, stop
        return self.rows[lo - self.lo : hi - self.lo]


def _move_rows(source: np.ndarray, into: np.ndarray) -> None:
    """``into[:len(source)] = source``, row by row where ``source`` lies after ``into`` in one array.

    Assigned at once, rows that overlap go through a temporary copy as large as ``source``: pages the kernel
    has to provide and zero for every band. Copied in order, each row is read before it is written over.
    """
    if not np.may_share_memory(source, into):
        into[: len(source)] = source
        return
    for k in range(len(source)):
        into[k] = source[k]


def _boxes(n: int, rows: int, halo: int = 0) -> list[tuple[int, int, int]]:
    """``(low, high, start)`` of each slab of ``rows`` rows of an axis of ``n``.

    Rows ``low:high`` are read (``halo`` rows a side); ``start`` is the slab's first row.
    """
    return [(max(0, start - halo), min(n, start + rows + halo), start) for start in range(0, n, rows)]


def _runner(slabs: Slabs | None, threads: int | None) -> Slabs:
    return Slabs(threads) if slabs is None else slabs


def _extremes_of(piece: np.ndarray, box: tuple[int, int, int], counts: bool, picture: int = 0):
    """A slab's :func:`_finite_extremes`, and with ``picture`` what an overlay draws of it.

    ``picture`` 0: nothing; else a volume's maximum projections (:func:`_projections_of`), or a 2-D map's
    rows max-pooled by ``picture`` (:func:`_pooled_rows`; nothing where it is 1).
    """
    extremes = _finite_extremes(piece.reshape(-1), counts)
    if not picture:
        return extremes
    finite = extremes is not None and extremes[2] == piece.size  # every value counted finite
    if piece.ndim == 3:
        return extremes, _projections_of(piece, finite)
    return extremes, _pooled_rows(piece, box[0], picture, finite) if piece.ndim == 2 and picture > 1 else None


def _pooled_rows(piece: np.ndarray, low: int, factor: int, finite: bool) -> tuple[int, np.ndarray]:
    """``(first block row, block maxima)`` of a 2-D slab starting at row ``low``: the overlay's max-pooling.

    Blocks of ``factor`` x ``factor`` pixels of the whole map (:func:`~peakloc.ops.filters.block_maxima`); a
    block the slab shares with its neighbours holds the maximum of the slab's rows only, and the blocks of
    all slabs are folded with ``fmax``.
    """
    return low // factor, block_maxima(piece, factor, low % factor, finite)


def _projections_of(piece: np.ndarray, finite: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximum projections of a ``(rows, Y, X)`` slab along each axis, in its dtype; NaN where nothing is finite.

    ``finite``: the slab has no NaN or inf (else they are set aside: inf as NaN, which ``fmax`` skips).
    """
    if finite or piece.dtype.kind != "f":
        return piece.max(axis=0), piece.max(axis=1), piece.max(axis=2)  # the same as fmax, and faster
    piece = np.where(np.isinf(piece), np.nan, piece)
    return np.fmax.reduce(piece, axis=0), np.fmax.reduce(piece, axis=1), np.fmax.reduce(piece, axis=2)


def _finite_extremes(flat: np.ndarray, counts: bool):
    """``(hi, lo, finite count, values equal to hi, to lo)`` of a flat array, or None where nothing is finite.

    The two equality counts are 0 unless ``counts``.
    """
    # Max and min of each cache-sized piece in turn: the min then reads from cache, not memory.
    pieces = [flat[i : i + CACHE_VALUES] for i in range(0, flat.size, CACHE_VALUES)]
    extremes = np.array([(p.max(), p.min()) for p in pieces], flat.dtype)
    hi, lo, count = extremes[:, 0].max(), extremes[:, 1].min(), flat.size
    if flat.dtype.kind == "f" and not (np.isfinite(hi) and np.isfinite(lo)):
        # NaN wins max and min, inf is an extreme: only then is a finite mask needed.
        finite = np.isfinite(flat)
        if not finite.any():
            return None
        hi, lo = np.where(finite, flat, -np.inf).max(), np.where(finite, flat, np.inf).min()
        count = int(finite.sum())
        if not counts:
            return hi, lo, count, 0, 0
        return hi, lo, count, int((flat == hi).sum()), int((flat == lo).sum())
    if not counts:
        return hi, lo, count, 0, 0
    # Only the pieces whose own extreme is the slab's can hold it.
    count_hi = sum(int((pieces[k] == hi).sum()) for k in np.flatnonzero(extremes[:, 0] == hi))
    count_lo = sum(int((pieces[k] == lo).sum()) for k in np.flatnonzero(extremes[:, 1] == lo))
    return hi, lo, count, count_hi, count_lo


def _first_at(flat: np.ndarray, value: np.generic, block: int = 4096) -> int:
    """Flat index of the first occurrence of the finite ``value`` in ``flat`` (which holds it).

    Block maxima first, then one block searched: a max is several times faster than an argmax over the
    same values, and a block whose maximum is non-finite (NaN, inf) may still hold ``value``.
    """
    whole = flat.size - flat.size % block
    blocks = flat[:whole].reshape(-1, block)
    top = blocks.max(axis=1)
    maybe = top == value
    if flat.dtype.kind == "f":
        maybe |= ~np.isfinite(top)
    for k in np.flatnonzero(maybe):
        hit = blocks[k] == value
        if hit.any():
            return int(k) * block + int(hit.argmax())
    return whole + int(np.argmax(flat[whole:] == value))


def map_stats(
    maps: Maps,
    b: int,
    rows: int,
    counts: bool = True,
    threads: int | None = None,
    slabs: Slabs | None = None,
    picture: int = 0,
) -> MapStats:
    """Extremes, finite count, first maximum (C order), and how many values equal each extreme.

    One pass of max and min over slabs of ``rows`` rows (on ``slabs``, default :class:`Slabs` of
    ``threads`` threads); the argmax (a slower reduction than the max) then runs on the first slab holding
    the maximum only, read again. Without ``counts`` (only the Gaussian fit needs them) the two equality
    counts are skipped and left 0.

    With ``picture`` (an overlay will be drawn), the same pass takes what it draws: a volume's maximum
    projections along Z, Y and X, or a 2-D map's picture max-pooled by ``picture`` pixels a side (where that
    is more than 1). They are kept with the map's finite range in ``maps.seen[b]``
    (:attr:`~peakloc.ops.lazy.Maps.seen`): the overlay then reads the map no more.
    """
    return survey(maps, b, rows, counts, threads, slabs, picture).stats


@dataclass(frozen=True)
class Survey:
    """What one read of each slab of a map gives (:func:`survey`)."""

    stats: MapStats
    #: Per slab, its local-maximum candidates under no threshold (:func:`_candidates_of`), if asked.
    candidates: list | None
    #: The soft-argmax ``(ndim,)``, if asked: :func:`soft_argmax`'s answer.
    soft: np.ndarray | None


def survey(
    maps: Maps,
    b: int,
    rows: int,
    counts: bool = True,
    threads: int | None = None,
    slabs: Slabs | None = None,
    picture: int = 0,
    peaks: tuple[int, int] | None = None,
    soft: tuple[float, str] | None = None,
) -> Survey:
    """:func:`map_stats` of map ``b``, and from the same read of each slab what the later passes need.

    - ``peaks`` ``(min_distance, most)``: each slab is read with ``min_distance`` rows of halo, and its
      ``most`` best local-maximum candidates are kept, under no threshold yet (the threshold may depend on
      the extremes): :func:`local_maxima` takes them as ``surveyed`` and applies it.
    - ``soft`` ``(beta, normalize)``: the soft-argmax, equal to :func:`soft_argmax`'s bit for bit. Its weights
      need the map's extremes, which only the whole pass gives; so each slab lists the few values that could
      weigh anything (:func:`_soft_listing`), and the sums come from those lists wherever they hold every
      value that counts (:func:`_listed_sums`). Only the slabs where they do not are read again: a map
      whose weight lies on a few peaks is read once.
    """
    per_row = int(np.prod(maps.spatial[1:], dtype=np.int64))
    n = maps.spatial[0]
    boxes = _boxes(n, rows, 0 if peaks is None else peaks[0])
    runner = _runner(slabs, threads)
    ndim = len(maps.spatial)
    picture = picture if ndim == 3 or (ndim == 2 and picture > 1) else 0
    plan = None
    if soft is not None and not _one_block(maps):
        plan = (*soft, numpy_backend.large_map_rows(maps.spatial))
    along_z = None
    if picture:  # what an overlay draws, folded slab by slab
        if ndim == 3:
            along_z = np.full(maps.spatial[1:], np.nan)
            along_y = np.empty((maps.spatial[0], maps.spatial[2]), np.float64)
            along_x = np.empty((maps.spatial[0], maps.spatial[1]), np.float64)
        else:
            pooled = np.full([-(-side // picture) for side in maps.spatial], np.nan)
    parts, candidates, listings = [], [], []

    def fold(box: tuple[int, int, int], got: tuple) -> None:
        # Folded as they come: every slab's projection or block row at once could outgrow the budget.
        nonlocal along_z
        extremes, drawn, found, listing = got
        parts.append(extremes)
        candidates.append(found)
        listings.append(listing)
        if not picture:
            return
        start, stop = box[2], min(box[2] + rows, n)
        if ndim == 3:
            along_z = np.fmax(along_z, drawn[0])
            along_y[start:stop], along_x[start:stop] = drawn[1], drawn[2]
        else:
            at, block_rows = drawn
            pooled[at : at + len(block_rows)] = np.fmax(pooled[at : at + len(block_rows)], block_rows)

    runner.map(_survey_of, maps, b, boxes, rows, counts, picture, peaks, plan, fold=fold)
    inner = [(start, min(start + rows, n)) for _, _, start in boxes]
    found = [(box, p) for box, p in zip(inner, parts) if p is not None]
    if not found:
        raise NoFiniteValueError(f"heatmap {b} has no finite value", b)
    hi = max(p[0] for _, p in found)
    lo = min(p[1] for _, p in found)
    count = sum(p[2] for _, p in found)
    low, high = next(box for box, p in found if p[0] == hi)
    first = low * per_row + _first_at(maps.read(b, (slice(low, high),)).reshape(-1), hi)
    count_hi = sum(p[3] for _, p in found if p[0] == hi)
    count_lo = sum(p[4] for _, p in found if p[1] == lo)
    total = maps.spatial[0] * per_row
    if picture:
        seen = {"projections": (along_z, along_y, along_x)} if ndim == 3 else {"pooled": (picture, pooled)}
        maps.seen[b] = {**seen, "range": (float(lo), float(hi))}
    stats = MapStats(hi, lo, count, total - count, first, count_hi, count_lo)
    soft_at = None
    if soft is not None:
        soft_plan = _soft_plan(maps, stats, *soft)
        if soft_plan is None:  # one block: read whole, as soft_argmax does
            soft_at = soft_argmax(maps, b, stats, *soft, rows, threads, slabs)
        else:
            soft_at = _soft_coords(_listed_sums(maps, b, inner, listings, *soft_plan))
    return Survey(stats, candidates if peaks is not None else None, soft_at)


def _survey_of(
    piece: np.ndarray,
    box: tuple[int, int, int],
    rows: int,
    counts: bool,
    picture: int,
    peaks: tuple[int, int] | None,
    plan: tuple | None,
) -> tuple:
    """One slab's part of :func:`survey`: ``(extremes, drawn, candidates, listing)``.

    ``piece`` is read with its halo (``box``: see :class:`Slabs`); the extremes and what an overlay draws
    (:func:`_extremes_of`) are those of the slab's own rows, the candidates (:func:`_candidates_of`, under no
    threshold) compare the halo too, and the listing is :func:`_soft_listing`'s. Those not asked are None.
    """
    low, high, start = box
    stop = min(start + rows, high)
    inner = piece[start - low : stop - low]
    extremes = _extremes_of(inner, (start, stop, start), counts, picture)
    drawn = None
    if picture:
        extremes, drawn = extremes
    found = listing = None
    if peaks is not None:
        min_distance, most = peaks
        halo = (piece[: start - low], piece[stop - low :])
        finite = (
            extremes is not None
            and extremes[2] == inner.size
            and (piece.dtype.kind != "f" or all(np.isfinite(h).all() for h in halo))
        )
        found = _candidates_of(piece, box, rows, min_distance, None, most, finite)
    if plan is not None:
        listing = _soft_listing(inner, start, extremes, *plan)
    return extremes, drawn, found, listing


#: Values a slab lists at most for the soft-argmax (:func:`_soft_listing`); more are read again if needed.
SOFT_LISTED = 1 << 14

#: How much further below its maximum than its own extremes would put the weight threshold a slab lists
#: values (:func:`_soft_listing`): the map's extremes, known only after the pass, set the threshold lower
#: where the map's range is wider than the slab's.
SOFT_MARGIN = 1.5


def _soft_listing(inner: np.ndarray, start: int, extremes, beta: float, normalize: str, step: int) -> tuple | None:
    """The values of a slab (no halo) that the soft-argmax could weigh, as far as the slab alone can tell.

    The map's weight threshold (:func:`~peakloc.backends.numpy_backend.weight_threshold`) needs the whole
    map's extremes. The slab lists, by flat position, its finite values at or above ``bound``:
    :data:`SOFT_MARGIN` times as far below its own maximum as its own extremes would put that threshold.
    Returns ``(hi, bound, positions, values)`` (``hi``: the slab's finite maximum), with ``bound`` None
    where more than :data:`SOFT_LISTED` values reach it or every value weighs alike; None where the slab
    has no finite value. :func:`_listed_sums` uses a list only where the map's threshold is no lower.
    """
    if extremes is None:
        return None
    hi, lo, count = extremes[:3]
    dtype = inner.dtype
    coef = float(coefficient(beta, normalize, np.array([hi], dtype), np.array([lo], dtype))[0])
    if not coef > 0:
        return hi, None, None, None
    per_row = inner[0].size
    cut = min(
        -(np.log(min(step, len(inner) - s) * per_row * (1 + start + s)) + numpy_backend.NEGLIGIBLE_LOGIT)
        for s in range(0, len(inner), step)
    )
    bound = float(hi) + SOFT_MARGIN * cut / coef
    # float64(x) >= bound exactly where float64(x) > the float64 just below it (an exact bound in x's dtype).
    below = exact_bound(np.nextafter(bound, -np.inf), dtype)
    flat = inner.reshape(-1)
    positions, total = [], 0
    for i in range(0, flat.size, CACHE_VALUES):
        part = flat[i : i + CACHE_VALUES]
        hit = part > below
        if count < inner.size and dtype.kind == "f":
            hit &= np.isfinite(part)  # +inf is never kept (NaN never reaches a bound)
        where = np.flatnonzero(hit)
        total += len(where)
        if total > SOFT_LISTED:
            return hi, None, None, None
        positions.append(where + i)
    positions = np.concatenate(positions) if positions else np.empty(0, np.intp)
    return hi, bound, positions, flat[positions]


def _listed_sums(
    maps: Maps, b: int, inner: list[tuple[int, int]], listings: list, hi, coef, dtype, step: int, all_finite: bool
) -> list:
    """Every slab's :func:`_sums_of`, from its :func:`_soft_listing` where that holds every kept value.

    A sub-slab of ``step`` rows takes the sparse path's sums over the listed values that reach its weight
    threshold when the list was made at or below that threshold and the values kept are few enough for the
    sparse path; none are kept where the slab's maximum lies below it. The others are read again and summed
    as :func:`_sums_of` sums them.
    """
    per_row = int(np.prod(maps.spatial[1:], dtype=np.int64))
    ndim = len(maps.spatial)
    out = []
    for (start, stop), listing in zip(inner, listings):
        sums = []
        for s in range(start, stop, step):
            e = min(s + step, stop)
            per_map = (e - s) * per_row
            threshold = numpy_backend.weight_threshold(hi, coef, per_map, s, maps.dtype)
            if listing is None or not listing[0] >= threshold[0]:  # nothing finite, or nothing reaches it
                sums.append(np.zeros((1, 1 + ndim)))
                continue
            _, bound, positions, values = listing
            if bound is None or not bound <= float(threshold[0]):
                sums.append(None)
                continue
            first, last = np.searchsorted(positions, [(s - start) * per_row, (e - start) * per_row])
            index, kept = positions[first:last] - (s - start) * per_row, values[first:last]
            keep = kept >= threshold[0]
            index, kept = index[keep], kept[keep]
            if numpy_backend.dense_sample(np.count_nonzero(index % numpy_backend.SAMPLE_STRIDE == 0), per_map):
                sums.append(None)  # the dense path weighs every value: read again
                continue
            got = numpy_backend.sparse_sums(kept, index, 1, (e - s, *maps.spatial[1:]), hi, coef, dtype)
            got[:, 1] += s * got[:, 0]
            sums.append(got)
        missing = [k for k, got in enumerate(sums) if got is None]
        if missing:
            low, high = start + missing[0] * step, min(start + (missing[-1] + 1) * step, stop)
            piece = maps.read(b, (slice(low, high),))[np.newaxis]
            for k in missing:
                s = start + k * step
                rows = piece[:, s - low : min(s + step, stop) - low]
                sums[k] = numpy_backend.slab_sums(rows, hi, coef, dtype, s, all_finite)
        out.append(sums)
    return out


def argmax(stats: MapStats, spatial: tuple[int, ...]) -> np.ndarray:
    """The first maximum's coordinates ``(ndim,)``, int64, array-axis order."""
    return np.array(np.unravel_index(stats.first, spatial), dtype=np.int64)


def _sums_of(piece: np.ndarray, box: tuple[int, int, int], hi, coef, dtype, step: int, all_finite: bool) -> list:
    """The NumPy back end's slab sums of a slab (no halo), in its slabs of ``step`` rows."""
    piece = piece[np.newaxis]
    return [
        numpy_backend.slab_sums(piece[:, s : s + step], hi, coef, dtype, box[2] + s, all_finite)
        for s in range(0, piece.shape[1], step)
    ]


def soft_argmax(
    maps: Maps,
    b: int,
    stats: MapStats,
    beta: float,
    normalize: str,
    rows: int,
    threads: int | None = None,
    slabs: Slabs | None = None,
) -> np.ndarray:
    """Soft-argmax ``(ndim,)`` of map ``b`` read in pieces, equal to the in-memory answer.

    ``rows`` must be a multiple of :func:`~peakloc.backends.numpy_backend.large_map_rows`: the sums are
    taken in exactly the back end's slabs and added in the same order.
    """
    plan = _soft_plan(maps, stats, beta, normalize)
    if plan is None:
        coords, _ = numpy_backend.soft_argmax(maps.read(b), beta, len(maps.spatial), normalize, threads)
        return coords
    boxes = _boxes(maps.spatial[0], rows)
    return _soft_coords(_runner(slabs, threads).map(_sums_of, maps, b, boxes, *plan))


def _soft_plan(maps: Maps, stats: MapStats, beta: float, normalize: str) -> tuple | None:
    """What :func:`_sums_of` needs beside a slab, or None for a map of one block (read whole instead)."""
    if _one_block(maps):
        return None
    hi = np.array([stats.hi], maps.dtype)
    lo = np.array([stats.lo], maps.dtype) if normalize == "minmax" else None
    coef = coefficient(beta, normalize, hi, lo)
    step = numpy_backend.large_map_rows(maps.spatial)
    return hi, coef, numpy_backend.work_dtype(maps.dtype), step, stats.nonfinite == 0


def _one_block(maps: Maps) -> bool:
    """Whether a map of ``maps`` is one block of the NumPy back end's soft-argmax (summed whole, not in slabs)."""
    return int(np.prod(maps.spatial, dtype=np.int64)) <= numpy_backend.BLOCK_ELEMENTS


def _soft_coords(parts: list) -> np.ndarray:
    """The soft-argmax ``(ndim,)`` from every slab's :func:`_sums_of`, added in order."""
    total = np.sum([s for part in parts for s in part], axis=0)
    return (total[:, 1:] / total[:, :1])[0]


def _as_float(piece: np.ndarray) -> np.ndarray:
    """float64 with -inf for non-finite values: what the candidates and plateau growing compare."""
    piece = piece.astype(np.float64)
    piece[~np.isfinite(piece)] = -np.inf
    return piece


#: Candidates a slab hands on at first, best first: the rest of a noisy volume's local maxima (one voxel in
#: 27) would outgrow the memory budget. Fewer than the greedy spacing needs: more, read again (see
#: :func:`local_maxima`).
SLAB_CANDIDATES = 1 << 14


def _comparable(x: np.ndarray, finite: bool) -> np.ndarray:
    """A slab as local maxima compare it, as :func:`peakloc.ops.peaks.local_maxima` does.

    :func:`~peakloc.ops.peaks.comparable`; non-finite values -inf, copied only where the map has any.
    """
    x = in_memory.comparable(x)
    if x.dtype.kind == "f" and not finite:
        x = np.where(np.isfinite(x), x, x.dtype.type(-np.inf))
    return x


def _candidates_of(
    x: np.ndarray,
    box: tuple[int, int, int],
    rows: int,
    min_distance: int,
    threshold: float,
    most: int | None,
    finite: bool = False,
) -> tuple[np.ndarray, np.ndarray, tuple | None]:
    """Local-maximum candidates of one slab of ``rows`` rows: the ``most`` best, and the best one left out.

    ``x`` is the slab read with its halo (``box``: see :class:`Slabs`); ``finite``: the map holds no NaN or
    inf. Returns coords ``(k, ndim)`` and float64 values ``(k,)``, best first (ties in C order), and
    ``(value, coords)`` of the first candidate left out, or None when none was. The slab is compared in its
    own dtype, in cache-sized pieces (:func:`~peakloc.ops.filters.maxima_mask`): one byte a value is held.
    """
    x = _comparable(x, finite)
    low, high, start = box
    inner = (start - low, min(start + rows, high) - low)
    mask = maxima_mask(x, min_distance, inner, above=threshold)
    x = x[inner[0] : inner[1]]
    # Flat positions first, coordinates only of the candidates handed on: a noisy slab has many.
    flat = np.flatnonzero(mask)
    del mask
    values = x.reshape(-1)[flat]
    order = in_memory.highest_first(values)
    values = values.astype(np.float64)
    left_out = None
    if most is not None and len(order) > most:
        first = np.unravel_index(flat[order[most]], x.shape)
        left_out = (float(values[order[most]]), (int(first[0]) + start, *map(int, first[1:])))
        order = order[:most]
    coords = in_memory.unravel(flat[order], x.shape)
    coords[:, 0] += start
    return coords, values[order], left_out


def _candidates_and_sums_of(piece: np.ndarray, box: tuple[int, int, int], rows: int, *args) -> tuple:
    """One read of a slab for two passes: its :func:`_candidates_of` and the soft-argmax's :func:`_sums_of`.

    ``args`` are the former's after ``rows`` (four), then the latter's after ``box``.
    """
    low, high, start = box
    stop = min(start + rows, high)
    inner = piece[start - low : stop - low]
    return _candidates_of(piece, box, rows, *args[:4]), _sums_of(inner, (start, stop, start), *args[4:])


#: Candidates of an integer map read in pieces whose regions are labelled at first (more where the greedy
#: spacing needs them): the fewer, the higher the lowest of them, and the fewer pixels labelled.
HEAD_CANDIDATES = 1 << 10

#: Rows read beyond a slab for its labelling: the band tops of the row after it need two rows more.
LABEL_HALO = 3


def _labels_of(
    x: np.ndarray, box: tuple[int, int, int], rows: int, n: int, points: np.ndarray, parity: int | None, level: float
) -> tuple:
    """One slab's part of a labelling of the whole map: its candidates' labels, its seams' and its flags.

    The slab's rows are labelled together with the next slab's first row, which that slab labels too: the
    two labellings of that row (its marked pixels in C order) join the slabs' labels. What is labelled is
    the pixels ``>= level``: all of them with ``parity`` None (no flags), else those among the band tops of
    :func:`~peakloc.ops.regions.half_levels` ``(x, parity)`` (flags: the regions holding an edge pixel). A
    slab with no pixel ``>= level`` is skipped. Labels are renumbered to those that matter here: the
    candidates' and the seams'.
    """
    low, high, start = box
    stop = min(start + rows, n)
    inner = slice(start - low, min(stop + 1, n) - low)
    mine = points[(points[:, 0] >= start) & (points[:, 0] < stop)]
    floor = x[inner] >= level
    if x.dtype.kind == "f":
        floor &= np.isfinite(x[inner])  # +inf is ignored, as everywhere
    if not floor.any():  # no candidate here either: they are all at or above ``level``
        empty = np.empty(0, np.int32)
        return empty, empty, empty, 0, np.empty(0, bool) if parity is not None else None
    if parity is not None and in_memory.gathered(int(np.count_nonzero(floor)), floor.size, int(level), x.dtype):
        # Few pixels at or above the lowest band: gathered pixel by pixel, as in memory.
        coords, component, flagged = labelling.sparse_band(x, parity, int(level), (inner.start, inner.stop))
        row = coords[:, 0] + low
        in_slab = mine.copy()
        in_slab[:, 0] -= low
        at = component[labelling.find_rows(coords, in_slab)]
        first = component[row == start]
        after = component[row == stop] if stop < n else np.empty(0, np.int64)
        kept = np.unique(np.concatenate([at, first, after]))
        return tuple(np.searchsorted(kept, a).astype(np.int32) for a in (at, first, after)) + (len(kept), flagged[kept])
    if parity is None:
        mask, marks = floor, None
    else:
        top, edge = labelling.band_tops(labelling.half_levels(x, parity))
        mask, marks = top[inner] & floor, edge[inner]
    del floor
    labels, count = labelling.label(mask)
    at = labels[(mine[:, 0] - start, *mine[:, 1:].T)]
    first = labels[0][mask[0]]
    after = labels[-1][mask[-1]] if stop < n else np.empty(0, labels.dtype)
    kept = np.unique(np.concatenate([at, first, after]))
    flags = labelling.flag_labels(labels, count, marks)[kept] if marks is not None else None
    return tuple(np.searchsorted(kept, a).astype(np.int32) for a in (at, first, after)) + (len(kept), flags)


class _Joins:
    """Regions of one map read in pieces, for its candidates: the in-memory labellings, slab by slab.

    Each slab is labelled alone (:func:`_labels_of`); labels that meet across a seam are joined by SciPy's
    connected components over the seams' pairs, so a region is one whatever slabs it crosses. Memory: a slab
    at a time, plus a few numbers per candidate and per marked pixel of each seam row.
    """

    def __init__(self, maps: Maps, b: int, rows: int, slabs: Slabs) -> None:
        self.maps, self.b, self.rows, self.slabs = maps, b, rows, slabs
        self.boxes = _boxes(maps.spatial[0], rows, LABEL_HALO)

    def _keys(self, points: np.ndarray, parity: int | None, level: float):
        """Region keys of ``points`` ``(k, ndim)`` (in their order), and which regions are flagged.

        Only pixels ``>= level`` are labelled (see :func:`_labels_of`).
        """
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        n = self.maps.spatial[0]
        parts = self.slabs.map(_labels_of, self.maps, self.b, self.boxes, self.rows, n, points, parity, level)
        offsets = np.cumsum([0] + [p[3] for p in parts], dtype=np.int64)
        pairs = [(a[2] + o, c[1] + q) for a, c, o, q in zip(parts, parts[1:], offsets, offsets[1:])]
        ends = [np.concatenate(side) if pairs else np.empty(0, np.int64) for side in zip(*pairs)] or [[], []]
        total = int(offsets[-1])
        graph = coo_matrix((np.ones(len(ends[0]), np.int8), (ends[0], ends[1])), shape=(total, total))
        _, component = connected_components(graph, directed=False)
        keys = np.empty(len(points), np.int64)
        rows = points[:, 0]
        for p, o, (_, _, start) in zip(parts, offsets, self.boxes):
            mine = (rows >= start) & (rows < min(start + self.rows, n))
            keys[mine] = component[p[0] + o]
        flagged = None
        if parity is not None:
            flagged = np.zeros(total, bool)
            flagged[component[np.flatnonzero(np.concatenate([p[4] for p in parts]))]] = True
        return keys, flagged

    def bands(self, coords: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:func:`peakloc.ops.peaks.band_keys` of an integer map read in pieces (``values``: the candidates')."""
        return in_memory.keyed_by_band(coords, values, self._keys)

    def level(self, value: float, coords: np.ndarray) -> np.ndarray:
        """:func:`peakloc.ops.peaks.level_keys` of a map read in pieces.

        Ties of a float map are plateaus of a pixel or a few: each region is first grown in a box around its
        point (doubled until the region stops short of its edge), and only where a box would outgrow a slab
        is the whole map labelled, slab by slab.
        """
        most = self.rows * int(np.prod(self.maps.spatial[1:], dtype=np.int64))
        found: list[tuple[tuple[slice, ...], np.ndarray]] = []
        keys = np.empty(len(coords), dtype=np.int64)
        for i, point in enumerate(coords):
            # A point inside a region already grown shares its key: each region is grown once.
            for j, (box, region) in enumerate(found):
                inside = all(b.start <= p < b.stop for p, b in zip(point, box))
                if inside and region[tuple(p - b.start for p, b in zip(point, box))]:
                    keys[i] = j
                    break
            else:
                grown = self._grown(value, point, most)
                if grown is None:
                    return self._keys(coords, None, value)[0]
                keys[i] = len(found)
                found.append(grown)
        return keys

    def _grown(self, value: float, point: np.ndarray, most: int):
        """``(box, region)``: the pixels ``>= value`` joined to ``point``, or None past ``most`` values."""
        reach = 2
        spatial = self.maps.spatial
        while True:
            box = tuple(slice(max(0, int(p) - reach), min(n, int(p) + reach + 1)) for p, n in zip(point, spatial))
            if int(np.prod([b.stop - b.start for b in box])) > most:
                return None
            piece = _as_float(self.maps.read(self.b, box))
            region = labelling.component(piece >= value, tuple(int(p) - b.start for p, b in zip(point, box)))
            edges = [
                (region.take(0, axis=a).any() and b.start > 0) or (region.take(-1, axis=a).any() and b.stop < n)
                for a, (b, n) in enumerate(zip(box, spatial))
            ]
            if not any(edges):
                return box, region
            reach *= 2


def local_maxima(
    maps: Maps,
    b: int,
    stats: MapStats,
    rows: int,
    num_peaks: int = 1,
    min_distance: int = 1,
    threshold_abs: float | None = None,
    threshold_rel: float | None = None,
    merge_plateaus: bool = True,
    threads: int | None = None,
    slabs: Slabs | None = None,
    threshold_sd: float | None = None,
    soft: tuple[float, str] | None = None,
    surveyed: list | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """:func:`peakloc.ops.peaks.local_maxima` of map ``b`` read in pieces: the same peaks, in the same order.

    Candidates come slab by slab, each slab read with ``min_distance`` rows of halo; the greedy spacing then
    runs here, reading the boxes that plateau growing asks for. With ``soft`` ``(beta, normalize)``, returns
    ``(peaks, soft-argmax)``: the first read of each slab serves both (a compressed store decodes once),
    and the soft-argmax equals :func:`soft_argmax`'s. ``surveyed``: the candidates :func:`survey` took
    (with ``peaks=(min_distance, first_candidates(num_peaks))``), used instead of a first read.
    """
    found, soft_at = _local_maxima(
        maps,
        b,
        stats,
        rows,
        num_peaks,
        min_distance,
        threshold_abs,
        threshold_rel,
        merge_plateaus,
        threads,
        slabs,
        threshold_sd,
        None if soft is None else _soft_plan(maps, stats, *soft),
        surveyed,
    )
    if soft is None:
        return found
    if soft_at is None:  # one block, or no candidate pass: read apart
        soft_at = soft_argmax(maps, b, stats, *soft, rows, threads, slabs)
    return found, soft_at


def _local_maxima(
    maps: Maps,
    b: int,
    stats: MapStats,
    rows: int,
    num_peaks: int,
    min_distance: int,
    threshold_abs: float | None,
    threshold_rel: float | None,
    merge_plateaus: bool,
    threads: int | None,
    slabs: Slabs | None,
    threshold_sd: float | None,
    plan: tuple | None,
    surveyed: list | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`local_maxima`'s peaks, and the soft-argmax of ``plan`` (:func:`_soft_plan`) if one was given."""
    ndim = len(maps.spatial)
    soft_at = None
    noise = None
    if threshold_sd is not None:
        noise = (*in_memory.noise_floor(noise_sample(maps, b, rows)), threshold_sd)
    hi, lo = float(stats.hi), float(stats.lo)
    asked, threshold = map(float, in_memory.peak_bar(hi, lo, threshold_abs, threshold_rel, noise))
    if lo == hi:
        first = argmax(stats, maps.spatial)[None]
        return (first if hi > asked else np.empty((0, ndim), np.int64)), None
    n = maps.spatial[0]
    boxes = _boxes(n, rows, min_distance)
    integer = maps.dtype.kind in "iu"
    most = first_candidates(num_peaks)
    while True:
        options = (min_distance, threshold, most, stats.nonfinite == 0)
        if surveyed is not None:  # the first read's, taken under no threshold
            found, surveyed = [_above(f, threshold) for f in surveyed], None
        elif plan is not None and soft_at is None:
            both = _runner(slabs, threads).map(_candidates_and_sums_of, maps, b, boxes, rows, *options, *plan)
            found, soft_at = [f for f, _ in both], _soft_coords([s for _, s in both])
        else:
            found = _runner(slabs, threads).map(_candidates_of, maps, b, boxes, rows, *options)
        coords = np.concatenate([c for c, _, _ in found]) if found else np.empty((0, ndim), np.int64)
        values = np.concatenate([v for _, v, _ in found]) if found else np.empty(0)
        order = np.argsort(-values, kind="stable")  # slabs in C order: ties stay in C order
        coords, values = coords[order], values[order]
        left_out = [d for _, _, d in found if d is not None]
        if left_out:
            # Only candidates before the best one left out (by value, then C order) are all here: the greedy
            # spacing over them is the one over every candidate if it finds its peaks before reaching it.
            value, point = max(left_out, key=lambda d: (d[0], tuple(-i for i in d[1])))
            before = (values > value) | ((values == value) & _c_order_before(coords, point))
            coords, values = coords[before], values[before]
        joins = _Joins(maps, b, rows, _runner(slabs, threads))
        if not merge_plateaus:
            peaks = in_memory.choose(coords, values, min_distance, num_peaks, maps.spatial)
        elif integer:
            # The best candidates first: their bands lie high, where few pixels need a label.
            head = max(4 * num_peaks, HEAD_CANDIDATES)
            while True:
                shoulder, keys = joins.bands(coords[:head], values[:head])
                peaks = in_memory.choose(
                    coords[:head], values[:head], min_distance, num_peaks, maps.spatial, shoulder, keys
                )
                if len(peaks) >= num_peaks or head >= len(coords):
                    break
                head *= 8
        else:
            peaks = in_memory.choose(coords, values, min_distance, num_peaks, maps.spatial, joined=joins.level)
        if not left_out or len(peaks) >= num_peaks:
            return peaks, soft_at
        most *= 16


def first_candidates(num_peaks: int) -> int:
    """How many candidates each slab hands on at first (:func:`_candidates_of`'s ``most``)."""
    # Many thin slabs would hand on 16 Ki candidates each: a few times the peaks asked are enough at first.
    return min(SLAB_CANDIDATES, max(8 * num_peaks, 256))


def _above(found: tuple, threshold: float) -> tuple:
    """A slab's :func:`_candidates_of` taken under no threshold, as it would be under ``threshold``.

    Its candidates are best first, so those strictly above ``threshold`` come first; the one left out
    remains only if it lies above too (else every one after it lies below). The same arrays as a read with
    ``threshold``: that read's mask drops exactly the values at or below it, as float64 compares them.
    """
    coords, values, left_out = found
    keep = int(np.count_nonzero(values > threshold))
    return coords[:keep], values[:keep], left_out if left_out is not None and left_out[0] > threshold else None


def _c_order_before(coords: np.ndarray, point: tuple[int, ...]) -> np.ndarray:
    """Which of ``coords`` ``(k, ndim)`` come before ``point`` in C order."""
    before = np.zeros(len(coords), bool)
    same = np.ones(len(coords), bool)
    for axis, p in enumerate(point):
        before |= same & (coords[:, axis] < p)
        same &= coords[:, axis] == p
    return before


def decodes(maps: Maps) -> bool:
    """Whether reading ``maps`` decodes (a compressed or remote store), rather than reading memory or a memmap."""
    return not isinstance(maps.array, np.ndarray)


def decoded_copy(maps: Maps, b: int, rows: int, folder: str | None = None) -> Maps:
    """Map ``b`` decoded once into an uncompressed memory-mapped temporary NPY file, as a single-map stack.

    Every later pass and window then reads the copy, at the speed of an NPY file, instead of decoding the
    store again. The store is read in bands of whole chunks (``rows`` rows where its chunks are thinner), each
    written straight into the file a chunk column at a time (:meth:`~peakloc.ops.lazy.Maps.read` with
    ``out``). The file's pages are the kernel's cache, not the run's memory; the file is deleted with the
    stack.
    """
    handle, out = temporary_npy("peakloc-decoded-", maps.dtype, maps.spatial, folder)
    n, chunk = maps.spatial[0], maps.chunk_rows()
    band = chunk if chunk > 1 else rows

    def copy(start: int) -> None:
        stop = min(start + band, n)
        maps.read(b, (slice(start, stop),), out=out[start:stop])

    # One band after another: a Zarr band's chunk columns decode on threads (:func:`~peakloc.ops.lazy._get`),
    # a TIFF band's pages on tifffile's.
    for start in range(0, n, band):
        copy(start)
    out.flush()
    copied = Maps(out[np.newaxis], len(maps.spatial))
    copied.keepalive = handle  # the file lives as long as the stack
    return copied


def temporary_npy(prefix: str, dtype, shape: tuple[int, ...], folder: str | None = None) -> tuple:
    """``(handle, memmap)``: a temporary NPY file of ``shape``, deleted when ``handle`` is, its disk reserved.

    The file's blocks are allocated before it is mapped: a disk without room fails here, with
    :class:`~peakloc.errors.NoRoomError` (an ``OSError``), rather than with SIGBUS on the first write to a
    page it cannot hold.
    """
    import tempfile  # only here: start-up of the runs that never write one stays short

    handle = tempfile.NamedTemporaryFile(prefix=prefix, suffix=".npy", dir=folder)  # noqa: SIM115
    out = np.lib.format.open_memmap(handle.name, mode="w+", dtype=dtype, shape=shape)
    if hasattr(os, "posix_fallocate"):
        size = os.path.getsize(handle.name)
        try:
            os.posix_fallocate(handle.fileno(), 0, size)
        except OSError as exc:
            del out
            handle.close()
            where = os.path.dirname(handle.name)
            raise NoRoomError(
                f"no room for a temporary file of {size / 2**20:.1f} MiB in {where} ({exc.strerror or exc}); "
                "set TMPDIR to a folder with more room"
            ) from None
    return handle, out


def smooth(maps: Maps, b: int, stats: MapStats, sigma: float, rows: int, folder: str | None = None) -> Maps:
    """Map ``b`` smoothed as :func:`peakloc.smooth` does it, into a float64 memory-mapped temporary file.

    Slabs are read with the filter's radius of halo, so that every row sees the neighbours it would see in
    memory; non-finite values are filled with the map's finite minimum first and NaN again after, as there.
    """
    radius = len(smoothing_kernels(sigma)[0]) // 2
    handle, out = temporary_npy("peakloc-smooth-", np.float64, maps.spatial, folder)
    n = maps.spatial[0]
    fill = float(stats.lo)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        low, high = max(0, start - radius), min(n, stop + radius)
        piece = maps.read(b, (slice(low, high),)).astype(np.float64)
        finite = np.isfinite(piece)
        if not finite.all():
            piece = np.where(finite, piece, fill)
        result = smooth_one(piece, sigma)
        inner = slice(start - low, start - low + stop - start)
        result = result[inner]
        result[~finite[inner]] = np.nan
        out[start:stop] = result
    out.flush()
    smoothed = Maps(out[np.newaxis], len(maps.spatial))
    smoothed.keepalive = handle  # the file lives as long as the stack
    return smoothed


def _each(heatmap, ndim: int, block: int | None) -> tuple[Maps, int]:
    maps = Maps(heatmap, ndim)
    block = block or DEFAULT_BLOCK
    return maps, rows_per_read(maps, block, numpy_backend.large_map_rows(maps.spatial))


def _fits(maps: Maps, block: int | None) -> bool:
    return int(np.prod(maps.spatial, dtype=np.int64)) <= (block or DEFAULT_BLOCK)


def _named(b: int) -> NoFiniteValueError:
    return NoFiniteValueError(f"heatmap {b} has no finite value", b)


def each_argmax(heatmap, ndim: int, block: int | None = None) -> tuple[np.ndarray, int]:
    """The NumPy back end's argmax of an array read in pieces, map by map: ``(..., ndim)`` and non-finite count."""
    maps, rows = _each(heatmap, ndim, block)
    out = np.empty((maps.count, ndim), np.int64)
    nonfinite = 0
    for b in range(maps.count):
        try:
            if _fits(maps, block):
                coords, n = numpy_backend.argmax(maps.read(b), ndim)
            else:
                stats = map_stats(maps, b, rows)
                coords, n = argmax(stats, maps.spatial), stats.nonfinite
        except NoFiniteValueError:
            raise _named(b) from None
        out[b], nonfinite = coords, nonfinite + n
    return out.reshape(maps.batch_shape + (ndim,)), nonfinite


def each_soft_argmax(
    heatmap, beta: float, ndim: int, normalize: str, threads: int | None = None, block: int | None = None
) -> tuple[np.ndarray, int]:
    """The NumPy back end's soft-argmax of an array read in pieces, map by map; equal to the in-memory one."""
    maps, rows = _each(heatmap, ndim, block)
    out = np.empty((maps.count, ndim))
    nonfinite = 0
    for b in range(maps.count):
        try:
            if _fits(maps, block):
                coords, n = numpy_backend.soft_argmax(maps.read(b), beta, ndim, normalize, threads)
            else:  # one read of each slab where the weight lies on a few peaks
                surveyed = survey(maps, b, rows, threads=threads, soft=(beta, normalize))
                coords, n = surveyed.soft, surveyed.stats.nonfinite
        except NoFiniteValueError:
            raise _named(b) from None
        out[b], nonfinite = coords, nonfinite + n
    return out.reshape(maps.batch_shape + (ndim,)), nonfinite


def noise_sample(maps: Maps, b: int, rows: int) -> np.ndarray:
    """The values of map ``b`` that :func:`peakloc.ops.peaks.noise_floor` looks at, read ``rows`` at a time.

    The same rows as in memory (every :func:`~peakloc.ops.peaks.noise_rows`-th along the first axis), so a map
    read in pieces gets the same threshold.
    """
    n, step = maps.spatial[0], in_memory.noise_rows(maps.spatial)
    block = max(step, rows - rows % step)  # blocks start on sampled rows
    # Only the sampled rows are read: a compressed store decodes those alone.
    parts = [maps.read(b, (slice(lo, min(lo + block, n), step),)) for lo in range(0, n, block)]
    return np.concatenate([p.ravel() for p in parts])


def each_local_maxima(heatmap, ndim: int, block: int | None = None, **options) -> list[np.ndarray]:
    """:func:`peakloc.ops.peaks.local_maxima` of every map of an array read in pieces."""
    maps, rows = _each(heatmap, ndim, block)
    out = []
    for b in range(maps.count):
        try:
            if _fits(maps, block):
                out.append(in_memory.local_maxima(maps.read(b), **options))
            else:  # the extremes and the first candidates from one read of each slab
                distance, count = options.get("min_distance", 1), options.get("num_peaks", 1)
                surveyed = survey(maps, b, rows, peaks=(distance, first_candidates(count)))
                out.append(local_maxima(maps, b, surveyed.stats, rows, surveyed=surveyed.candidates, **options))
        except NoFiniteValueError:
            raise _named(b) from None
    return out


def stats_of(maps: Maps, block: int | None = None) -> list[MapStats]:
    """:func:`map_stats` of every map of a stack read in pieces."""
    rows = rows_per_read(maps, block or DEFAULT_BLOCK)
    return [map_stats(maps, b, rows) for b in range(maps.count)]
