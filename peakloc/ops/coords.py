"""The public array functions: hard argmax, soft-argmax and coordinate conversion over arrays or tensors.

Every function takes a heatmap of shape ``(..., *spatial)`` with ``ndim`` trailing spatial axes and any
number of leading batch axes, and returns coordinates of shape ``(..., ndim)`` in array-axis order
``(..., z, y, x)``, in pixel units: ``x`` is the column index, pixel centres are whole numbers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import backends
from ..errors import PeaklocValueError
from .lazy import is_lazy
from .normalize import NORMALIZE_MODES


def validate_heatmap(heatmap: Any, ndim: Any) -> tuple[Any, int]:
    """Check ``ndim`` and the dtype; NumPy-like input becomes an ndarray.

    Tensors and arrays read in pieces (memmaps, Zarr, Dask: :func:`~peakloc.ops.lazy.is_lazy`) pass through.
    """
    if isinstance(ndim, bool) or not isinstance(ndim, (int, np.integer)):
        raise TypeError(f"`ndim` must be an int. Got: {type(ndim).__name__}")
    if not 1 <= ndim <= 3:
        raise PeaklocValueError(f"`ndim` must be 1, 2 or 3. Got: {ndim}")
    if is_lazy(heatmap):
        if np.dtype(heatmap.dtype).kind not in "biuf":
            raise TypeError(f"`heatmap` must hold real numbers. Got dtype: {heatmap.dtype}")
    elif not backends.is_tensor(heatmap):
        heatmap = np.asarray(heatmap)
        if heatmap.dtype.kind not in "biuf":
            raise TypeError(f"`heatmap` must hold real numbers. Got dtype: {heatmap.dtype}")
    elif heatmap.is_complex():
        raise TypeError(f"`heatmap` must hold real numbers. Got dtype: {heatmap.dtype}")
    if heatmap.ndim < ndim:
        raise PeaklocValueError(f"`heatmap` must have at least `ndim`={ndim} axes. Got shape: {tuple(heatmap.shape)}")
    if any(int(n) == 0 for n in heatmap.shape[heatmap.ndim - ndim :]):
        raise PeaklocValueError(f"`heatmap` has an empty spatial axis. Got shape: {tuple(heatmap.shape)}")
    return heatmap, int(ndim)


def validate_beta(beta: Any) -> float:
    """``beta`` as a float; a number > 0 and finite, else TypeError or :class:`PeaklocValueError`."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.integer, np.floating)):
        raise TypeError(f"`beta` must be a number. Got: {type(beta).__name__}")
    beta = float(beta)
    if not (math.isfinite(beta) and beta > 0):
        raise PeaklocValueError(f"`beta` must be > 0 and finite. Got: {beta}")
    return beta


def validate_normalize(normalize: Any) -> str:
    """``normalize`` if it is one of :data:`NORMALIZE_MODES`, else :class:`PeaklocValueError`."""
    if normalize not in NORMALIZE_MODES:
        raise PeaklocValueError(f"`normalize` must be one of {', '.join(NORMALIZE_MODES)}. Got: {normalize!r}")
    return normalize


def _with_factors(coords: Any, factors: np.ndarray) -> tuple[Any, Any]:
    """``coords`` as floats with per-axis ``factors`` alike: NumPy float64, or tensors on ``coords``' device."""
    if backends.is_tensor(coords):
        import torch

        dtype = coords.dtype if coords.is_floating_point() else torch.float32
        return coords.to(dtype), torch.as_tensor(factors, dtype=dtype, device=coords.device)
    return np.asarray(coords, dtype=np.float64), factors


def _lengths(spatial_shape: Any) -> np.ndarray:
    n = np.asarray(spatial_shape, dtype=np.float64)
    if n.ndim != 1 or n.size == 0 or np.any(n < 1):
        raise PeaklocValueError(f"`spatial_shape` must be a sequence of axis lengths >= 1. Got: {spatial_shape!r}")
    return n


def pixel_to_normalized(coords: Any, spatial_shape: tuple[int, ...]) -> Any:
    """Map pixel coordinates to [-1, 1]: first pixel centre -1, last +1, as ``linspace(-1, 1, n)``.

    Parameters
    ----------
    coords : ndarray or torch.Tensor, shape ``(..., ndim)``
        Pixel coordinates in array-axis order.
    spatial_shape : tuple of int, length ``ndim``

    Returns
    -------
    ndarray of float64, or a float tensor on the same device (differentiable), same shape. An axis of
    length 1 maps to -1, as ``linspace(-1, 1, 1)`` does.

    Examples
    --------
    >>> pixel_to_normalized(np.array([0, 2, 4]), (5,))
    array([-1.,  0.,  1.])
    """
    n = _lengths(spatial_shape)
    coords, scale = _with_factors(coords, np.divide(2.0, n - 1, out=np.zeros_like(n), where=n > 1))
    return coords * scale - 1.0


def normalized_to_pixel(coords: Any, spatial_shape: tuple[int, ...]) -> Any:
    """Inverse of :func:`pixel_to_normalized`: -1 is the first pixel centre, +1 the last.

    Parameters
    ----------
    coords : ndarray or torch.Tensor, shape ``(..., ndim)``
        Normalized coordinates in array-axis order.
    spatial_shape : tuple of int, length ``ndim``

    Returns
    -------
    ndarray of float64, or a float tensor on the same device (differentiable), same shape. An axis of
    length 1 maps every value to 0, its only pixel.

    Examples
    --------
    >>> normalized_to_pixel(np.array([-1.0, 0.0, 1.0]), (5,))
    array([0., 2., 4.])
    """
    coords, half = _with_factors(coords, (_lengths(spatial_shape) - 1) / 2)
    return (coords + 1.0) * half
