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


def maximum_filter(x: np.ndarray, radius: int) -> np.ndarray:
    """Maximum over the ``(2 * radius + 1)`` box around each element (values outside count as -inf).

    In ``x``'s own dtype (a maximum is exact in any), one axis at a time, each by doubling: the maximum over
    ``2^k`` neighbours from that over ``2^(k-1)``, so a window of ``w`` costs about ``log2(w) + 1`` passes.

    Examples
    --------
    >>> maximum_filter(np.array([0.0, 3.0, 0.0, 0.0, 1.0]), 1)
    array([3., 3., 3., 1., 1.])
    """
    out = np.asarray(x)
    for axis in range(out.ndim):
        # Beyond the axis's length a window adds only -inf: the maximum over the whole axis is the same.
        out = _maximum_along(out, min(radius, max(out.shape[axis] - 1, 0)), axis)
    return out if out is not x else out.copy()


def _maximum_along(x: np.ndarray, radius: int, axis: int) -> np.ndarray:
    if radius == 0:
        return x
    n, width = x.shape[axis], 2 * radius + 1
    widths = [(0, 0)] * x.ndim
    widths[axis] = (radius, radius)
    m = np.pad(x, widths, mode="constant", constant_values=lowest(x.dtype))
    moved = np.moveaxis(m, axis, 0)
    span = 1
    while 2 * span <= width:  # moved[j] becomes the maximum of the padded values j .. j + 2 span - 1
        moved = np.maximum(moved[:-span], moved[span:])
        span *= 2
    # Two windows of ``span`` (span <= width < 2 span) cover each window of ``width``.
    return np.moveaxis(np.maximum(moved[:n], moved[width - span : width - span + n]), 0, axis)


def correlate(x: np.ndarray, taps: np.ndarray, axis: int) -> np.ndarray:
    """Correlate float ``x`` with symmetric ``taps`` along ``axis``, borders mirrored about the edge pixel."""
    out = np.zeros_like(x)
    for tap, view in zip(taps, mirrored(x, len(taps) // 2, axis)):
        out += tap * view
    return out
