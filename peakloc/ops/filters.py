"""Separable filters along one axis at a time: the maximum filter of peak finding and the smoothing's taps."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def _reflected(n: int, shift: int) -> np.ndarray:
    """Indices ``0..n-1`` moved by ``shift``, mirrored about the edge pixels as often as needed."""
    if n == 1:
        return np.zeros(1, np.int64)
    period = 2 * (n - 1)
    index = np.mod(np.arange(n) + shift, period)
    return np.where(index < n, index, period - index)


def mirrored(x: np.ndarray, radius: int, axis: int) -> Iterator[np.ndarray]:
    """``x`` shifted by ``-radius .. radius`` along ``axis``, mirrored about the edge pixel outside the array.

    An axis of length 1 repeats its only value. Up to a radius of the axis's length the shifts are views of
    one padded copy; beyond it, each shift is gathered on its own, so that memory stays a few copies of
    ``x`` however wide the filter.
    """
    n = x.shape[axis]
    if radius > n:
        for shift in range(-radius, radius + 1):
            yield np.take(x, _reflected(n, shift), axis=axis)
        return
    widths = [(0, 0)] * x.ndim
    widths[axis] = (radius, radius)
    padded = np.pad(x, widths, mode="symmetric" if n == 1 else "reflect")
    index = [slice(None)] * x.ndim
    for shift in range(2 * radius + 1):
        index[axis] = slice(shift, shift + n)
        yield padded[tuple(index)]


def lowest(dtype: np.dtype):
    """The value below or equal to every value of ``dtype``: -inf for floats, the minimum for integers."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return dtype.type(-np.inf)
    if dtype.kind == "b":
        return False
    return np.iinfo(dtype).min


#: Values of the pieces the maximum filter works on at once (a few 4-byte buffers of this many stay in a
#: core's 1-2 MiB cache), and of the pieces it hands on: fewer make the per-call overhead count.
TILE_VALUES = 1 << 17


def maximum_filter(x: np.ndarray, radius: int, rows: tuple[int, int] | None = None) -> np.ndarray:
    """Maximum over the ``(2 * radius + 1)`` box around each element (values outside count as -inf).

    In ``x``'s own dtype (a maximum is exact in any). ``rows`` ``(start, stop)`` of the first axis asks for
    those rows only; the other rows are read as their neighbours (a slab's halo). The work goes in pieces of
    about :data:`TILE_VALUES` values, each axis in ``log2(2 * radius + 1) + 1`` passes that stay in the
    CPU's cache (:func:`_tiles`).

    Examples
    --------
    >>> maximum_filter(np.array([0.0, 3.0, 0.0, 0.0, 1.0]), 1)
    array([3., 3., 3., 1., 1.])
    """
    x = np.asarray(x)
    start, stop = (0, len(x)) if rows is None else rows
    out = np.empty((stop - start, *x.shape[1:]), x.dtype)
    for index, peak in _tiles(x, radius, start, stop):
        out[index] = peak
    return out


def maxima_mask(x: np.ndarray, radius: int, rows: tuple[int, int] | None = None, above=None) -> np.ndarray:
    """Where ``x`` equals its :func:`maximum_filter` (and, given ``above``, lies strictly above it), as bool.

    The same rows as :func:`maximum_filter`; the comparison with ``above`` (a float) is exact whatever
    ``x``'s dtype (:func:`exact_bound`). Neither the filtered map nor a float copy is ever held whole:
    memory is the mask's one byte a value; except that a whole 2-D map (``rows`` not given) of a
    :data:`CV_DILATE` dtype, without NaN, is dilated by OpenCV in one call (:func:`dilated`): a copy in its
    dtype.
    """
    x = np.asarray(x)
    start, stop = (0, len(x)) if rows is None else rows
    inner = x[start:stop]
    bound = None if above is None else exact_bound(above, x.dtype)
    if rows is None and x.ndim == 2 and x.size and _dilates(x):
        # One call (10x faster on a 256x256 8-bit map, 2.7x on 1088 float32 pose maps laid end to end).
        mask = np.equal(x, dilated(x, radius))
        if bound is not None:
            mask &= x > bound
        return mask
    mask = np.empty(inner.shape, bool)
    for index, peak in _tiles(x, radius, start, stop):
        np.equal(inner[index], peak, out=mask[index])
        if bound is not None:
            mask[index] &= inner[index] > bound
    return mask


#: The dtypes whose 2-D maximum filter OpenCV's dilation takes.
CV_DILATE = {np.dtype(t) for t in (np.uint8, np.uint16, np.int16, np.float32, np.float64)}


def dilated(plane: np.ndarray, radius: int) -> np.ndarray:
    """:func:`maximum_filter` of a 2-D array of a :data:`CV_DILATE` dtype by OpenCV's dilation, one call.

    The border holds the dtype's lowest value: values outside add nothing (OpenCV's own border for floats
    is -DBL_MAX, above -inf). A NaN is not propagated as NumPy's maximum propagates it (:func:`_dilates`).
    """
    import cv2

    kernel = np.ones((2 * radius + 1,) * 2, np.uint8)
    border = float(lowest(plane.dtype))
    return cv2.dilate(np.ascontiguousarray(plane), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=border)


def _dilates(x: np.ndarray) -> bool:
    """Whether :func:`dilated` gives ``x``'s maximum filter exactly: its dtype, and no NaN in a float map."""
    return x.dtype in CV_DILATE and (x.dtype.kind != "f" or not np.isnan(x.max()))


def exact_bound(value: float, dtype: np.dtype):
    """A scalar of ``dtype`` such that ``x > bound`` equals ``float64(x) > value`` for every ``x`` of ``dtype``."""
    dtype = np.dtype(dtype)
    value = float(value)
    if dtype.kind == "f":
        with np.errstate(over="ignore"):
            bound = np.array(value).astype(dtype)[()]
        # The largest value of ``dtype`` at or below ``value``: nothing of the dtype lies between the two.
        return np.nextafter(bound, dtype.type(-np.inf)) if float(bound) > value else bound
    if dtype.kind == "b":
        return value  # compared as float: booleans are 0 and 1
    info = np.iinfo(dtype)
    if np.isnan(value) or value >= info.max:
        return dtype.type(info.max)  # nothing is above it (nothing is above NaN either)
    if value < info.min:
        return value  # everything is above it; a float comparison says so
    return dtype.type(np.floor(value))


def _spans(width: int) -> list[int]:
    """Shifts whose maxima, taken one after another, cover a window of ``width``: 1, 2, 4, ..., then the rest."""
    spans, span = [], 1
    while 2 * span <= width:
        spans.append(span)
        span *= 2
    if width > span:
        spans.append(width - span)
    return spans


def _along(src: np.ndarray, radius: int, axis: int, lo: int, hi: int, buffers: list[np.ndarray]) -> np.ndarray:
    """The maximum over ``src[j - radius : j + radius + 1]`` along ``axis`` for ``lo <= j < hi`` (outside: -inf).

    ``src``'s positions along ``axis`` beyond ``lo .. hi`` are read as neighbours. The rows needed are copied,
    padded with the dtype's lowest value, into ``buffers[0]`` laid out as ``(outer, hi - lo + 2 radius,
    inner)``; the maxima then double over the flat buffer, shifts of whole lines of ``inner`` values (a
    window never reaches past its own line's padded rows). Returns a view of one of the two buffers.
    """
    n = src.shape[axis]
    count = hi - lo
    length = count + 2 * radius
    shape = (*src.shape[:axis], length, *src.shape[axis + 1 :])
    size = int(np.prod(shape, dtype=np.int64))
    inner = int(np.prod(src.shape[axis + 1 :], dtype=np.int64))
    padded = buffers[0][:size].reshape(shape)
    first, last = lo - radius, hi + radius
    have_first, have_last = max(first, 0), min(last, n)
    low = lowest(src.dtype)
    before = (slice(None),) * axis
    if have_first > first:
        padded[(*before, slice(0, have_first - first))] = low
    padded[(*before, slice(have_first - first, have_last - first))] = src[(*before, slice(have_first, have_last))]
    if last > have_last:
        padded[(*before, slice(have_last - first, length))] = low
    now, spare = buffers[0][:size], buffers[1][:size]
    for span in _spans(2 * radius + 1):
        step = span * inner
        np.maximum(now[:-step], now[step:], out=spare[:-step])
        spare[-step:] = now[-step:]
        now, spare = spare, now
    return now.reshape(shape)[(*before, slice(0, count))]


def _tiles(x: np.ndarray, radius: int, start: int, stop: int):
    """Pieces of :func:`maximum_filter` of rows ``start .. stop``: ``(index, maxima)``, index relative to ``start``.

    A piece is a few rows of the first axis (one, where a row holds more than :data:`TILE_VALUES` values)
    and, in 3-D, a band of the second axis; it is read with ``radius`` rows of halo on both. The first axis
    is reduced first (a maximum over its ``2 * radius + 1`` rows), then each other axis in turn. Buffers
    are allocated once for all pieces.
    """
    radii = [min(radius, max(n - 1, 0)) for n in x.shape]
    plane = int(np.prod(x.shape[1:], dtype=np.int64))
    group = max(1, TILE_VALUES // max(plane, 1))
    band = max(x.shape[1], 1) if x.ndim >= 2 else 1
    if x.ndim >= 3 and plane > TILE_VALUES:
        band = max(1, TILE_VALUES // int(np.prod(x.shape[2:], dtype=np.int64)))
    # The largest padded piece any axis's step copies: its own axis grown by twice the radius, the first two
    # cut to the piece.
    sides = [n + 2 * r for n, r in zip(x.shape, radii)]
    sides[0] = group + 2 * radii[0]
    if x.ndim >= 3:
        sides[1] = band + 2 * radii[1]
    size = int(np.prod(sides, dtype=np.int64))
    buffers = [[np.empty(size, x.dtype), np.empty(size, x.dtype)] for _ in range(x.ndim)]
    for a in range(start, stop, group):
        b = min(a + group, stop)
        for c in range(0, band if x.ndim < 3 else x.shape[1], band):
            d = min(c + band, x.shape[1]) if x.ndim >= 3 else band
            if x.ndim >= 3:
                c0, d0 = max(c - radii[1], 0), min(d + radii[1], x.shape[1])
                src = x[:, c0:d0]
            else:
                c0, d0, src = c, d, x
            a0, b0 = max(a - radii[0], 0), min(b + radii[0], len(x))
            piece = src[a0:b0]
            if radii[0] == 0:
                peak = piece
            elif b - a == 1:  # one row: the maximum over its rows is cheaper than doubling over them
                out = buffers[0][0][: piece[0].size].reshape((1, *piece.shape[1:]))
                peak = np.maximum.reduce(piece, axis=0, keepdims=True, out=out)
            else:
                peak = _along(piece, radii[0], 0, a - a0, b - a0, buffers[0])
            if x.ndim >= 3 and radii[1]:
                peak = _along(peak, radii[1], 1, c - c0, d - c0, buffers[1])
            elif x.ndim >= 3:
                peak = peak[:, c - c0 : d - c0]
            for axis in range(2 if x.ndim >= 3 else 1, x.ndim):
                if radii[axis]:
                    peak = _along(peak, radii[axis], axis, 0, x.shape[axis], buffers[axis])
            yield (slice(a - start, b - start), slice(c, d)) if x.ndim >= 3 else (slice(a - start, b - start),), peak


def block_maxima(rows: np.ndarray, factor: int, top: int = 0, finite: bool | None = None) -> np.ndarray:
    """Max-pooling of 2-D ``rows``: the maxima of their ``factor`` x ``factor`` blocks, as an overlay draws.

    The first row lies ``top`` rows into its block. Returns float64 ``(ceil((top + rows) / factor),
    ceil(columns / factor))``, NaN where a block holds no finite value: NaN and inf are passed over, as are
    the places beyond ``rows``. ``finite`` (True: ``rows`` holds no NaN or inf) spares the check for inf.

    Examples
    --------
    >>> block_maxima(np.arange(12.0).reshape(3, 4), 2)
    array([[ 5.,  7.],
           [ 9., 11.]])
    """
    if not finite and rows.dtype.kind == "f" and np.isinf(rows).any():
        rows = np.where(np.isinf(rows), np.nan, rows)  # fmax skips NaN
    count, cols = rows.shape
    blocks, width = -(-(top + count) // factor), -(-cols // factor)
    if top or blocks * factor != count or width * factor != cols:
        fill = np.nan if rows.dtype.kind == "f" else lowest(rows.dtype)
        grown = np.full((blocks * factor, width * factor), fill, rows.dtype)
        grown[top : top + count, :cols] = rows
        rows = grown
    pooled = np.fmax.reduce(np.fmax.reduce(rows.reshape(blocks, factor, width, factor), axis=3), axis=1)
    return pooled.astype(np.float64)


def correlate(x: np.ndarray, taps: np.ndarray, axis: int) -> np.ndarray:
    """Correlate float ``x`` with symmetric ``taps`` along ``axis``, borders mirrored about the edge pixel."""
    out = np.zeros_like(x)
    for tap, view in zip(taps, mirrored(x, len(taps) // 2, axis)):
        out += tap * view
    return out
