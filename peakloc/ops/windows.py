"""Windows around peaks, gathered for all peaks of all heatmaps at once, and the peak-shape estimate.

Shared by the sub-pixel methods and the ``--extra`` columns. Everything here is per peak: a peak's window,
width and noise come from its own heatmap alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..backends import numpy_backend

#: Half-width (pixels) of the window in which a peak's width is estimated, per number of dimensions: 8 in
#: 3-D, where a window of 25^3 samples cost 6 s for 4700 spots (and the fit windows stop at sigma 2.4).
SIGMA_WINDOW = {1: 12, 2: 12, 3: 8}
#: Window values held at once by :func:`estimate_shape`, over all its threads (1 Mi: 8 MiB of float64; its
#: sorts and copies hold a few times that). 4 Mi took longer (the dense 3-D volume of make bench: 0.99 s
#: against 0.85 s on 2 threads) and 50 MiB more.
SHAPE_VALUES = 1 << 20


def c_strides(shape) -> np.ndarray:
    """C-order strides, in elements, of an array of shape ``shape``.

    Examples
    --------
    >>> c_strides((4, 5, 6))
    array([30,  6,  1])
    """
    shape = np.asarray(shape, dtype=np.int64)
    return np.r_[np.cumprod(shape[::-1])[:-1][::-1], 1].astype(np.int64)


def _halves(half, ndim: int) -> np.ndarray:
    """Half-widths per axis ``(ndim,)`` int64, from one for every axis or one per axis."""
    return np.broadcast_to(np.asarray(half, np.int64), (ndim,))


def offsets(half, ndim: int) -> np.ndarray:
    """All integer offsets of a window, C order, shape ``(M, ndim)``.

    ``half``: samples each side of the centre, one for every axis or one per axis.
    """
    axes = [np.arange(-h, h + 1) for h in _halves(half, ndim)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, ndim)


def windows(heatmaps: np.ndarray, owner: np.ndarray, centres: np.ndarray, half, dtype=np.float64) -> np.ndarray:
    """Windows around peaks, in ``dtype`` (float64 by default), NaN outside the map and where values are not finite.

    Parameters
    ----------
    heatmaps : ndarray or Maps, shape ``(B, *spatial)``
        A :class:`~peakloc.ops.lazy.Maps` stack is read one box per peak.
    owner : ndarray of int, shape ``(N,)``
        The heatmap of each peak.
    centres : ndarray of int, shape ``(N, ndim)``
    half : int, or sequence of ``ndim`` ints
        Samples each side of the centre, for every axis or per axis.
    dtype : float dtype, optional

    Returns
    -------
    ndarray, shape ``(N, 2 * half_0 + 1, ..., 2 * half_last + 1)``
    """
    spatial = np.array(heatmaps.shape[1:])
    ndim = len(spatial)
    half = _halves(half, ndim)
    if not isinstance(heatmaps, np.ndarray):  # a Maps stack read in pieces: one box per peak
        return _windows_read(heatmaps, owner, centres, half, dtype)
    side = tuple(int(s) for s in 2 * half + 1)
    out = np.empty((len(centres),) + side, dtype)
    inside = np.all((centres >= half) & (centres < spatial - half), axis=1)
    if inside.any():  # wholly inside their map: most peaks of a large map
        out[inside] = _boxes(heatmaps, owner[inside], centres[inside] - half, side)
    edge = np.flatnonzero(~inside)
    if edge.size:
        out[edge] = _edge_windows(heatmaps, owner[edge], centres[edge], half, dtype)
    if heatmaps.dtype.kind in "fc":
        out[~np.isfinite(out)] = np.nan
    return out


def _boxes(maps: np.ndarray, owner: np.ndarray, corners: np.ndarray, side: tuple[int, ...]) -> np.ndarray:
    """Boxes of ``side`` samples along each axis with these lowest ``corners`` ``(N, ndim)``, in the maps' dtype.

    One gather from a strided view of every box of ``maps`` ``(B, *spatial)``: no index arrays per sample.
    """
    ndim = maps.ndim - 1
    boxes = np.lib.stride_tricks.sliding_window_view(maps, side, axis=tuple(range(1, ndim + 1)))
    return boxes[(owner, *corners.T)]


def _edge_windows(
    heatmaps: np.ndarray, owner: np.ndarray, centres: np.ndarray, half: np.ndarray, dtype=np.float64
) -> np.ndarray:
    """:func:`windows` of peaks whose windows cross their map's edge: in ``dtype``, NaN outside the map.

    Where their maps are small next to the windows (tiny maps, whose every window crosses an edge), the maps
    are padded and the windows gathered from a strided view, as inside. Where a map is at least a window wide
    along each axis, each box is gathered moved inside it and shifted back (the 1357 windows crossing the faces
    of a 48x512x512 volume: 40 ms, against 331 ms by an index per sample). Else one index per sample.
    """
    spatial = np.array(heatmaps.shape[1:])
    ndim = len(spatial)
    side = tuple(int(s) for s in 2 * half + 1)
    samples = int(np.prod(side))
    maps, local = np.unique(owner, return_inverse=True)
    if len(maps) * np.prod(spatial + 2 * half, dtype=np.float64) <= 4 * len(owner) * samples:
        padded = np.pad(heatmaps[maps], [(0, 0)] + [(int(h), int(h)) for h in half])
        values = _boxes(padded, local, centres, side).astype(dtype)  # corners shift by the padding
        _outside_is_nan(values, centres - half, spatial)
        return values
    if np.all(spatial >= side):
        # Each window's box moved inside its map, gathered from the strided view as inside, then shifted
        # back along each axis it crossed: no index per sample into the map.
        corners = centres - half
        moved = np.clip(corners, 0, spatial - np.array(side))
        values = _boxes(heatmaps, owner, moved, side).astype(dtype)
        for k in range(ndim):
            shift = corners[:, k] - moved[:, k]
            rows = np.flatnonzero(shift)
            if rows.size:
                index = np.clip(np.arange(side[k]) + shift[rows, None], 0, side[k] - 1)
                index = index.reshape((len(rows),) + (1,) * k + (side[k],) + (1,) * (ndim - k - 1))
                values[rows] = np.take_along_axis(values[rows], index, axis=1 + k)
        _outside_is_nan(values, corners, spatial)
        return values
    index = centres[:, None, :] + offsets(half, ndim)[None]
    within = np.all((index >= 0) & (index < spatial), axis=-1)
    flat = np.clip(index, 0, spatial - 1) @ c_strides(spatial)
    values = heatmaps.reshape(len(heatmaps), -1)[owner[:, None], flat].astype(dtype)
    values[~within] = np.nan
    return values.reshape((len(owner),) + side)


def _outside_is_nan(values: np.ndarray, corners: np.ndarray, spatial: np.ndarray) -> None:
    """Set NaN, in place, where windows ``values`` ``(N, *side)`` lie outside their map, axis by axis.

    ``corners`` ``(N, ndim)``: each window's lowest position in the map; ``spatial``: the map's shape.
    """
    n, side = len(values), values.shape[1:]
    for k in range(len(side)):
        position = corners[:, k, None] + np.arange(side[k])
        outside = ((position < 0) | (position >= spatial[k])).reshape(
            (n,) + (1,) * k + (side[k],) + (1,) * (len(side) - k - 1)
        )
        if outside.any():
            values[np.broadcast_to(outside, values.shape)] = np.nan


def _windows_read(maps, owner: np.ndarray, centres: np.ndarray, half: np.ndarray, dtype=np.float64) -> np.ndarray:
    """:func:`windows` of a stack read in pieces (:class:`~peakloc.ops.lazy.Maps`): one box read per peak."""
    spatial = np.array(maps.shape[1:])
    out = np.full((len(centres),) + tuple(int(s) for s in 2 * half + 1), np.nan, dtype)
    for k, (b, centre) in enumerate(zip(owner, centres)):
        lo = np.maximum(centre - half, 0)
        hi = np.minimum(centre + half + 1, spatial)
        piece = maps.read(int(b), tuple(slice(int(a), int(z)) for a, z in zip(lo, hi))).astype(dtype)
        piece[~np.isfinite(piece)] = np.nan
        out[(k,) + tuple(slice(int(a - c + h), int(z - c + h)) for a, z, c, h in zip(lo, hi, centre, half))] = piece
    return out


def centre_index(w: np.ndarray) -> tuple:
    """Index of every window's centre sample in a stack of windows ``(N, L, ...)``."""
    return (slice(None),) + tuple(s // 2 for s in w.shape[1:])


def groups(keys: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """``(key, positions)`` for each distinct integer key: peaks that share a window size run together.

    Examples
    --------
    >>> [(k, p.tolist()) for k, p in groups(np.array([3, 5, 3]))]
    [(3, [0, 2]), (5, [1])]
    """
    for key in np.unique(keys):
        yield int(key), np.flatnonzero(keys == key)


def nanpercentile_rows(values: np.ndarray, q: float) -> np.ndarray:
    """``np.nanpercentile(values, q, axis=1)``, the same numbers, without its loop over rows."""
    return _finite_rows(values, lambda finite: percentile_rows(finite, q))


def nanmedian_rows(values: np.ndarray) -> np.ndarray:
    """``np.nanmedian(values, axis=1)``, the same numbers, without its loop over rows."""
    return _finite_rows(values, median_rows)


def percentile_rows(values: np.ndarray, q: float) -> np.ndarray:
    """``np.percentile(values, q, axis=1)`` (linear method, ``q`` a Python number) of rows ``(m, n)`` without NaN.

    The same numbers, bit for bit, at 0.6 times its cost: NumPy partitions each row at four places (its first
    and last value, to find NaN, and the two it interpolates between); here one partition finds the lower
    value, and the upper one is the least of the values above it. NumPy's interpolation is repeated as it
    is written (``_lerp``, its weight a Python float). 4913-value rows of a 3-D shape estimate: 51 -> 31 us.
    """
    n = values.shape[1]
    virtual = (n - 1) * np.true_divide(q, 100)
    lower = int(np.floor(virtual))
    weight = float(virtual - lower)
    low, high = _neighbouring_order_statistics(values, min(max(lower, 0), n - 1))
    step = high - low
    return high - step * (1 - weight) if weight >= 0.5 else low + step * weight


def median_rows(values: np.ndarray) -> np.ndarray:
    """``np.median(values, axis=1)`` of rows ``(m, n)`` without NaN: the same numbers (see :func:`percentile_rows`)."""
    n = values.shape[1]
    if n % 2:
        return np.partition(values, n // 2, axis=1)[:, n // 2]
    low, high = _neighbouring_order_statistics(values, n // 2 - 1)
    return np.mean(np.stack([low, high], axis=1), axis=1)


def _neighbouring_order_statistics(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k``-th and ``k + 1``-th smallest values (0-based; the ``k``-th twice where it is the last)."""
    part = np.partition(values, k, axis=1)
    low = part[:, k]
    return low, (part[:, k + 1 :].min(axis=1) if k + 1 < values.shape[1] else low)


def _finite_rows(values: np.ndarray, reduce) -> np.ndarray:
    """``reduce`` of each row's finite values, rows with as many NaN taken together; NaN for rows of NaN only.

    Rows with the same number of NaN are partitioned (NaN, made +inf, last) and their finite values reduced
    together by ``reduce``, which works on whole arrays: NumPy's nan-functions loop over rows in Python once a
    NaN is present. Partitioning keeps each row's values, so order statistics come out the same.
    """
    values = np.asarray(values)
    out = np.full(len(values), np.nan)
    valid = np.count_nonzero(~np.isnan(values), axis=1)
    for count in np.unique(valid):
        rows = np.flatnonzero(valid == count)
        if count == 0:
            continue
        if count == values.shape[1]:
            out[rows] = reduce(values[rows])
        else:  # only these rows partitioned: most windows lie inside their map, with no NaN
            part = values[rows]
            part[np.isnan(part)] = np.inf  # an infinite value of the row's own is the same value
            out[rows] = reduce(np.partition(part, count - 1, axis=1)[:, :count])
    return out


def robust_std(values: np.ndarray) -> np.ndarray:
    """1.4826 * median absolute deviation per row, ignoring NaN."""
    med = nanmedian_rows(values)
    return 1.4826 * nanmedian_rows(np.abs(values - med[:, None]))


def take_rows(record, index):
    """A new dataclass like ``record``, whose fields are arrays with one row per peak (or job), cut to ``index``.

    A field that is None stays None; one that is a list of arrays (per-axis coordinates) is cut in each.
    """

    def cut(value):
        if value is None:
            return None
        return [a[index] for a in value] if isinstance(value, list) else value[index]

    return type(record)(**{name: cut(getattr(record, name)) for name in record.__dataclass_fields__})


@dataclass(frozen=True)
class PeakShape:
    """Per peak, shape ``(N,)`` each: width (px), background, height above it, and noise level.

    ``widths`` ``(N, ndim)``, where known: the width (sigma, px) along each axis, from the half-maximum
    crossings on the lines through the peak (:func:`line_widths`).
    """

    sigma: np.ndarray
    background: np.ndarray
    amplitude: np.ndarray
    noise: np.ndarray
    widths: np.ndarray | None = None

    def rows(self, index) -> PeakShape:
        """The estimates of peaks ``index``, a new :class:`PeakShape`."""
        return take_rows(self, index)

    def per_axis(self, ndim: int) -> np.ndarray:
        """``widths``, or ``sigma`` along every axis where they are not known, ``(N, ndim)``."""
        return np.repeat(self.sigma[:, None], ndim, axis=1) if self.widths is None else self.widths


def estimate_shape(
    heatmaps: np.ndarray, owner: np.ndarray, centres: np.ndarray, threads: int | None = None
) -> PeakShape:
    """Peak width from the area above half maximum, with background and noise, per peak.

    ``sigma`` comes from the half-maximum area within :data:`SIGMA_WINDOW` px (clamped to [0.5, 6], 4 in 3-D);
    the background is the window's 10th percentile; the noise the robust std of the window's outer ring (its
    plain std where a quarter of the ring sits at its minimum, a clipped background, or the robust one is 0).
    ``widths``: :func:`line_widths`. Peaks a few at a time run on ``threads`` threads (default: one per core,
    at most 8; one for a stack read in pieces).
    """
    ndim = centres.shape[1]
    if not len(centres):
        return PeakShape(*(np.empty(0) for _ in range(4)), np.empty((0, ndim)))
    threads = numpy_backend.DEFAULT_THREADS if threads is None else max(1, int(threads))
    if not isinstance(heatmaps, np.ndarray):
        threads = 1  # boxes read from one file handle
    # A peak's estimate is its own: peaks taken a few at a time keep the windows (17^3 samples a peak in
    # 3-D) to tens of MB whatever the number of peaks, shared between the threads; the sorts and
    # percentiles, most of the time, release the GIL.
    step = max(1, SHAPE_VALUES // threads // (2 * SIGMA_WINDOW[ndim] + 1) ** ndim)
    parts = numpy_backend.map_in_threads(
        lambda k: _estimate_shape(heatmaps, owner[k : k + step], centres[k : k + step]),
        range(0, len(centres), step),
        threads,
    )
    if len(parts) == 1:
        return parts[0]
    return PeakShape(*(np.concatenate([getattr(p, f) for p in parts]) for f in PeakShape.__dataclass_fields__))


def _estimate_shape(heatmaps: np.ndarray, owner: np.ndarray, centres: np.ndarray) -> PeakShape:
    """:func:`estimate_shape` of a few peaks at once."""
    ndim = centres.shape[1]
    half = SIGMA_WINDOW[ndim]
    # In the work dtype: float32 for any map but a float64 one. The order statistics below (a partition per
    # window) take a third less time than in float64, and an integer map's values are exact in float32.
    w = windows(heatmaps, owner, centres, half, numpy_backend.work_dtype(heatmaps.dtype))
    flat = w.reshape(len(w), -1)
    with np.errstate(all="ignore"):
        background = nanpercentile_rows(flat, 10)
        amplitude = w[centre_index(w)] - background
        above = np.nansum(flat > (background + amplitude / 2)[:, None], axis=1).astype(np.float64)
        k = 2 * math.log(2)
        if ndim == 1:
            sigma = above / (2 * math.sqrt(k))
        elif ndim == 2:
            sigma = np.sqrt(above / (math.pi * k))
        else:
            sigma = np.cbrt(above / (4 / 3 * math.pi * k**1.5))
        ring = np.abs(offsets(half, ndim)).max(axis=1) >= half - 2
        samples = flat[:, ring]
        noise = robust_std(samples)
        # A ring with a quarter or more of its samples at its minimum (a background clipped at 0) has a
        # median deviation that says little: its plain standard deviation then, so that a clipped
        # background does not read as nearly noiseless. A ring wholly outside a tiny map stays NaN, as
        # robust_std gives; its rows are left out of nanmin and nanstd, which would warn (and catching
        # warnings is not safe on threads).
        count = np.sum(np.isfinite(samples), axis=1)
        some = np.flatnonzero(count)
        lowest, spread = np.full(len(samples), np.nan), np.full(len(samples), np.nan)
        lowest[some] = np.nanmin(samples[some], axis=1)
        spread[some] = np.nanstd(samples[some], axis=1)
        clipped = np.sum(samples == lowest[:, None], axis=1) >= 0.25 * count
        noise = np.where(clipped | ~(noise > 0), spread, noise)
    sigma = np.clip(np.nan_to_num(sigma, nan=1.0), 0.5, half / 2)
    widths = line_widths(w, background, amplitude)
    return PeakShape(*(np.asarray(a, np.float64) for a in (sigma, background, amplitude, noise, widths)))


def line_widths(w: np.ndarray, background: np.ndarray, amplitude: np.ndarray) -> np.ndarray:
    """Each peak's width (sigma, px) along each axis ``(N, ndim)``, from its window ``w`` ``(N, 2h+1, ...)``.

    Along each axis, on the line of samples through the peak, the first sample on each side below half
    maximum (``background + amplitude / 2``; NaN counts as below) marks the crossing, placed between it and
    the sample before by linear interpolation; the half width at half maximum is the mean of the two sides,
    and sigma that over ``sqrt(2 ln 2)``. A line never crosses where the window ends (``h``). Unlike the area
    above half maximum, a line meets a neighbouring spot only where one lies on it: in crowded fields
    (3-D, where a window holds several spots) the width is the spot's own. Clamped to [0.5, h / 2].
    """
    n, ndim = len(w), w.ndim - 1
    half = w.shape[1] // 2
    level = (background + amplitude / 2)[:, None]
    centre = (slice(None),) + (half,) * ndim
    rows = np.arange(n)
    out = np.empty((n, ndim))
    with np.errstate(all="ignore"):
        for a in range(ndim):
            line = w[centre[: a + 1] + (slice(None),) + centre[a + 2 :]]  # (N, 2h + 1) along axis a
            sides = []
            for seg in (line[:, half:], line[:, half::-1]):
                below = ~(seg >= level)
                below[:, 0] = False
                crossed = below.any(axis=1)
                first = np.where(crossed, below.argmax(axis=1), half)
                before, after = seg[rows, first - 1], seg[rows, first]
                share = np.where(np.isfinite(after) & (before > after), (before - level[:, 0]) / (before - after), 0.5)
                sides.append(np.where(crossed, first - 1 + np.clip(share, 0, 1), half))
            out[:, a] = (sides[0] + sides[1]) / (2 * math.sqrt(2 * math.log(2)))
    return np.clip(np.nan_to_num(out, nan=1.0), 0.5, half / 2)


#: Candidate pairs a search of :func:`near_pair_blocks` holds at once (per cell of the 3^ndim it looks in):
#: 2^17 pairs, a few MB. Every pair of 80 000 peaks of a noisy volume within a fit window's reach at once
#: took 438 MiB.
PAIR_BLOCK = 1 << 17


@dataclass(frozen=True)
class PeakGrid:
    """Peaks of heatmaps sorted by the cell they lie in, for :func:`near_pairs`; made by :func:`peak_grid`."""

    centres: np.ndarray  # (N, ndim)
    reach: np.ndarray  # (N,) float64
    key: np.ndarray  # (N,) int64: each peak's heatmap and cell, raveled
    order: np.ndarray  # (N,) the peaks sorted by key
    ordered: np.ndarray  # (N,) key[order]
    shifts: np.ndarray  # (3^ndim,) int64: a cell and its neighbours, as steps of key
    most: int  # the most peaks in one cell


def peak_grid(owner: np.ndarray, centres: np.ndarray, reach) -> PeakGrid:
    """Peaks on a grid of cells as wide as the widest reach, for :func:`near_pairs`.

    ``owner`` ``(N,)`` each peak's heatmap, ``centres`` ``(N, ndim)``; ``reach`` is a distance, or one per
    peak ``(N,)``: see :func:`near_pairs`.
    """
    n, ndim = centres.shape
    reach = np.broadcast_to(np.asarray(reach, np.float64), (n,))
    if n == 0:
        empty = np.zeros(0, np.int64)
        return PeakGrid(centres, reach, empty, empty, empty, np.zeros(1, np.int64), 0)
    size = max(float(reach.max()), 1.0)
    # Cells, shifted to start at 1: the ring of empty cells around them keeps every neighbour's index
    # inside the grid (no wrapping from one row of cells into the next).
    cells = np.floor((centres - centres.min(axis=0)) / size).astype(np.int64) + 1
    if np.prod(cells.max(axis=0) + 2, dtype=np.float64) * (int(owner.max()) + 1) >= 2.0**62:
        # Peaks spread far apart for their reach: the cells along each axis renumbered, keeping which are
        # next to each other (a gap of more than one cell stays a gap).
        for a in range(ndim):
            found, back = np.unique(cells[:, a], return_inverse=True)
            cells[:, a] = np.cumsum(np.r_[1, np.where(np.diff(found) == 1, 1, 2)])[back.reshape(-1)]
    dims = (int(owner.max()) + 1, *(int(d) for d in cells.max(axis=0) + 2))
    key = np.ravel_multi_index((owner, *cells.T), dims)
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    strides = c_strides(dims)[1:]  # one cell along each spatial axis, in raveled keys
    shifts = (np.array(list(np.ndindex(*(3,) * ndim)), np.int64).reshape(-1, ndim) - 1) @ strides
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    most = int(np.diff(np.r_[starts, n]).max())
    return PeakGrid(centres, reach, key, order, ordered, shifts, most)


def near_pair_blocks(grid: PeakGrid, query=None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """:func:`near_pairs` of the peaks ``query`` (all by default), a block of query peaks at a time.

    A block holds at most :data:`PAIR_BLOCK` candidate pairs per cell searched, so that a caller keeping
    only what it needs of each block (a flag per peak, the pairs that pass its own test) holds no more.
    """
    query = np.arange(len(grid.key)) if query is None else np.asarray(query, np.int64)
    if len(grid.key) < 2 or not len(query):
        return
    step = max(1, PAIR_BLOCK // grid.most)  # candidates per cell searched: at most step x most
    c = grid.centres
    for lo in range(0, len(query), step):
        q = query[lo : lo + step]
        first, second = [], []
        for shift in grid.shifts:
            wanted = grid.key[q] + shift
            start = np.searchsorted(grid.ordered, wanted, side="left")
            count = np.searchsorted(grid.ordered, wanted, side="right") - start
            i = np.repeat(q, count)
            j = grid.order[np.repeat(start - np.cumsum(count) + count, count) + np.arange(len(i))]
            near = (i != j) & (np.abs(c[i] - c[j]).max(axis=1) <= (grid.reach[i] + grid.reach[j]) / 2)
            first.append(i[near])
            second.append(j[near])
        yield np.concatenate(first), np.concatenate(second)


def near_pairs(grid: PeakGrid, query=None) -> tuple[np.ndarray, np.ndarray]:
    """Every ordered pair ``(i, j)``, ``i != j``, of peaks of one heatmap near each other (Chebyshev distance).

    ``i`` is among ``query`` (all peaks by default); the pairs come in no particular order.

    ``i`` and ``j`` are near where they are at most ``(reach_i + reach_j) / 2`` apart (windows of half-widths
    ``h`` overlap within ``2 h``: ``reach = 2 h``). A peak's neighbours lie in its own cell of ``grid`` or the
    ``3^ndim - 1`` around it, each found by a binary search among the peaks sorted by cell.

    Examples
    --------
    >>> i, j = near_pairs(peak_grid(np.array([0, 0, 0, 1]), np.array([[0, 0], [3, 1], [9, 0], [1, 0]]), 3))
    >>> sorted(zip(i.tolist(), j.tolist()))
    [(0, 1), (1, 0)]
    """
    blocks = list(near_pair_blocks(grid, query))
    if not blocks:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks])


def nearer_to_others(d_base: np.ndarray, i: np.ndarray, delta: np.ndarray, n: int) -> np.ndarray:
    """``(n, M)`` bool: which samples of each window lie nearer to a neighbouring peak than to its own.

    ``d_base`` ``(M, ndim)``: the samples' offsets from the window's peak; ``i`` ``(k,)`` and ``delta``
    ``(k, ndim)``: each neighbour's window and its offset from that window's peak, whole pixels both. A
    sample exactly between two peaks stays with its own.
    """
    out = np.zeros((n, len(d_base)), bool)
    # A sample is nearer to the neighbour when 2 d.delta > |delta|^2; over the window's box d.delta is at most
    # half-width * |delta|_1 (a corner): neighbours beyond that are nearer to none of its samples.
    half = np.abs(d_base).max(initial=0)
    keep = 2 * half * np.abs(delta).sum(axis=1) > np.sum(delta * delta, axis=1)
    i, delta = i[keep], delta[keep]
    if not len(i):
        return out
    order = np.argsort(i, kind="stable")
    i, delta = i[order], delta[order]
    square = np.sum(delta * delta, axis=1)
    for lo in range(0, len(i), 4096):  # (pairs, samples) at a time: a few MB
        part = slice(lo, lo + 4096)
        # |d - delta|^2 < |d|^2, as 2 d.delta > |delta|^2: exact (whole pixels), with no (pairs, samples,
        # ndim) array, and no BLAS (whose own threads would compete with the fits' threads).
        dot = delta[part, :1] * d_base[:, 0]
        for a in range(1, d_base.shape[1]):
            dot += delta[part, a : a + 1] * d_base[:, a]
        theirs = 2 * dot > square[part, None]
        rows, starts = np.unique(i[part], return_index=True)
        out[rows] |= np.logical_or.reduceat(theirs, starts, axis=0)
    return out
