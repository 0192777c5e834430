"""Separable filters along one axis at a time: the maximum filter of peak finding and the smoothing's taps."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def shifted(x: np.ndarray, radius: int, axis: int, pad: str | float) -> Iterator[np.ndarray]:
    """Views of ``x`` shifted by ``-radius .. radius`` along ``axis``, padded outside the array.

    ``pad`` is a constant value, or ``"reflect"`` (mirror about the edge pixel; an axis of length 1 repeats
    its only value).
    """
    n = x.shape[axis]
    widths = [(0, 0)] * x.ndim
    widths[axis] = (radius, radius)
    if isinstance(pad, str):
        padded = np.pad(x, widths, mode="symmetric" if n == 1 else pad)
    else:
        padded = np.pad(x, widths, mode="constant", constant_values=pad)
    index = [slice(None)] * x.ndim
    for shift in range(2 * radius + 1):
        index[axis] = slice(shift, shift + n)
        yield padded[tuple(index)]


def maximum_filter(x: np.ndarray, radius: int) -> np.ndarray:
    """Maximum over the ``(2 * radius + 1)`` box around each element (values outside count as -inf).

    Examples
    --------
    >>> maximum_filter(np.array([0.0, 3.0, 0.0, 0.0, 1.0]), 1)
    array([3., 3., 3., 1., 1.])
    """
    out = x.astype(np.result_type(x.dtype, np.float64) if x.dtype.kind != "f" else x.dtype)
    for axis in range(x.ndim):
        views = shifted(out, radius, axis, -np.inf)
        result = next(views).copy()
        for view in views:
            np.maximum(result, view, out=result)
        out = result
    return out


def correlate(x: np.ndarray, taps: np.ndarray, axis: int) -> np.ndarray:
    """Correlate float ``x`` with symmetric ``taps`` along ``axis``, borders mirrored about the edge pixel."""
    out = np.zeros_like(x)
    for tap, view in zip(taps, shifted(x, len(taps) // 2, axis, "reflect")):
        out += tap * view
    return out
