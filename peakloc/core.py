"""The maths: hard argmax and soft-argmax over arrays or tensors. No I/O.

Every function takes a heatmap of shape ``(..., *spatial)`` with ``ndim`` trailing spatial axes and any
number of leading batch axes, and returns coordinates of shape ``(..., ndim)`` in array-axis order
``(..., z, y, x)``, in pixel units: ``x`` is the column index, pixel centres are whole numbers.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from . import backends
from .errors import NonFiniteWarning, PeaklocValueError

#: Default sharpness of the soft-argmax: weights are ``exp(beta * (v - max v))`` on normalised values.
DEFAULT_BETA = 100.0
#: How each heatmap is scaled before ``beta`` applies.
NORMALIZE_MODES = ("minmax", "max", "none")
DEFAULT_NORMALIZE = "minmax"


def _validate_heatmap(heatmap: Any, ndim: Any) -> tuple[Any, int]:
    """Check ``ndim`` and the dtype; NumPy-like input becomes an ndarray, tensors pass through."""
    if isinstance(ndim, bool) or not isinstance(ndim, (int, np.integer)):
        raise TypeError(f"`ndim` must be an int. Got: {type(ndim).__name__}")
    if not 1 <= ndim <= 3:
        raise PeaklocValueError(f"`ndim` must be 1, 2 or 3. Got: {ndim}")
    if not backends.is_tensor(heatmap):
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


def _validate_beta(beta: Any) -> float:
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.integer, np.floating)):
        raise TypeError(f"`beta` must be a number. Got: {type(beta).__name__}")
    if not (np.isfinite(beta) and beta > 0):
        raise PeaklocValueError(f"`beta` must be > 0 and finite. Got: {beta}")
    return float(beta)


def _validate_normalize(normalize: Any) -> str:
    if normalize not in NORMALIZE_MODES:
        raise PeaklocValueError(f"`normalize` must be one of {', '.join(NORMALIZE_MODES)}. Got: {normalize!r}")
    return normalize


def _warn_nonfinite(count: int) -> None:
    if count:
        # Why not fail: a few NaN holes (masked pixels, dead detector rows) should not cost the peak.
        warnings.warn(f"{count} non-finite value{'s' if count != 1 else ''} ignored", NonFiniteWarning, stacklevel=3)


def argmax(heatmap: Any, ndim: int = 2) -> Any:
    """Integer coordinates of the first maximum of each heatmap, as :func:`numpy.argmax` picks it.

    Parameters
    ----------
    heatmap : array_like or torch.Tensor, shape ``(..., *spatial)``
        Leading axes are batch axes; the last `ndim` axes are spatial. NaN and inf are ignored
        (with a :class:`~peakloc.errors.NonFiniteWarning`).
    ndim : {1, 2, 3}
        Number of spatial axes.

    Returns
    -------
    ndarray or torch.Tensor of int64, shape ``heatmap.shape[:-ndim] + (ndim,)``
        In array-axis order ``(..., z, y, x)``, like :func:`numpy.unravel_index`. A tensor in gives a
        tensor out on the same device.

    Raises
    ------
    NoFiniteValueError
        A heatmap holds no finite value.

    Examples
    --------
    >>> argmax(np.array([[0, 1, 0], [0, 3, 3]]))
    array([1, 1])
    >>> argmax(np.zeros((2, 4, 5)), ndim=2).shape
    (2, 2)
    """
    heatmap, ndim = _validate_heatmap(heatmap, ndim)
    coords, nonfinite = backends.for_array(heatmap).argmax(heatmap, ndim)
    _warn_nonfinite(nonfinite)
    return coords


def soft_argmax(heatmap: Any, beta: float = DEFAULT_BETA, ndim: int = 2, normalize: str = DEFAULT_NORMALIZE) -> Any:
    """Differentiable peak position: ``sum_i i * softmax(beta * v)_i`` over the spatial positions.

    Parameters
    ----------
    heatmap : array_like or torch.Tensor, shape ``(..., *spatial)``
        Leading axes are batch axes; the last `ndim` axes are spatial. NaN and inf get zero weight
        (with a :class:`~peakloc.errors.NonFiniteWarning`).
    beta : float
        Sharpness, > 0. Weights are ``exp(beta * (v - max v))`` where ``v`` is the normalised map;
        kornia's ``temperature`` is ``1 / beta``.
    ndim : {1, 2, 3}
        Number of spatial axes.
    normalize : {"minmax", "max", "none"}
        Scaling of each map before `beta`: ``minmax`` to [0, 1], ``max`` divides by the maximum (when it
        is positive; otherwise values stay raw), ``none`` uses raw values.

    Returns
    -------
    ndarray or torch.Tensor, shape ``heatmap.shape[:-ndim] + (ndim,)``
        Pixel coordinates in array-axis order ``(..., z, y, x)``, float64 for NumPy input; for a
        tensor, float32 (float64 if the input is float64) on the same device, differentiable with
        respect to the heatmap. A constant map gives its centre.

    Notes
    -----
    Computed in float32 or wider whatever the input dtype, with the maximum subtracted before
    ``exp`` so that no ``beta`` or integer type can overflow.

    Examples
    --------
    >>> soft_argmax(np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 1.0]]))
    array([1. , 1.5])
    >>> soft_argmax(np.ones((3, 5)))
    array([1., 2.])
    """
    heatmap, ndim = _validate_heatmap(heatmap, ndim)
    beta = _validate_beta(beta)
    normalize = _validate_normalize(normalize)
    coords, nonfinite = backends.for_array(heatmap).soft_argmax(heatmap, beta, ndim, normalize)
    _warn_nonfinite(nonfinite)
    return coords


def pixel_to_normalized(coords: np.ndarray, spatial_shape: tuple[int, ...]) -> np.ndarray:
    """Map pixel coordinates to [-1, 1]: first pixel centre -1, last +1, as ``linspace(-1, 1, n)``.

    Parameters
    ----------
    coords : ndarray, shape ``(..., ndim)``
        Pixel coordinates in array-axis order.
    spatial_shape : tuple of int, length ``ndim``

    Returns
    -------
    ndarray of float64, same shape. An axis of length 1 maps to -1, as ``linspace(-1, 1, 1)`` does.

    Examples
    --------
    >>> pixel_to_normalized(np.array([0, 2, 4]), (5,))
    array([-1.,  0.,  1.])
    """
    n = np.asarray(spatial_shape, dtype=np.float64)
    scale = np.divide(2.0, n - 1, out=np.zeros_like(n), where=n > 1)
    return np.asarray(coords, dtype=np.float64) * scale - 1.0
