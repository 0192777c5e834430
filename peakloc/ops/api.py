"""The public array functions: argmax, soft-argmax and peaks of arrays in memory, tensors, or arrays read in pieces.

Every function takes a heatmap of shape ``(..., *spatial)`` with ``ndim`` trailing spatial axes and any
number of leading batch axes, and returns coordinates of shape ``(..., ndim)`` in array-axis order
``(..., z, y, x)``, in pixel units: ``x`` is the column index, pixel centres are whole numbers. This is the
one door where an array read in pieces (:func:`~peakloc.ops.lazy.is_lazy`) goes to the slab-wise operations
of :mod:`~peakloc.ops.streaming`, and anything else to the in-memory ones and the back ends.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .. import backends
from ..errors import NoFiniteValueError, NonFiniteWarning
from .coords import validate_beta, validate_heatmap, validate_normalize
from .lazy import is_lazy
from .normalize import DEFAULT_BETA, DEFAULT_NORMALIZE
from .peaks import local_maxima, parse_threshold, stack_local_maxima, stacks_at_once, validate_counts


def _compiling() -> bool:
    """True while ``torch.compile`` traces (then data-dependent checks and warnings are skipped)."""
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and torch.compiler.is_compiling()


def _warn_nonfinite(count: int) -> None:
    if count and not _compiling():
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
    heatmap, ndim = validate_heatmap(heatmap, ndim)
    if is_lazy(heatmap):
        from .streaming import each_argmax  # here: a run of in-memory maps never loads the slab code

        coords, nonfinite = each_argmax(heatmap, ndim)
    else:
        coords, nonfinite = backends.for_array(heatmap).argmax(heatmap, ndim)
    _warn_nonfinite(nonfinite)
    return coords


def soft_argmax(
    heatmap: Any,
    beta: float = DEFAULT_BETA,
    ndim: int = 2,
    normalize: str = DEFAULT_NORMALIZE,
    *,
    threads: int | None = None,
) -> Any:
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
    threads : int, optional
        NumPy input only: threads for large arrays (default: one per core, at most 8; 1 for none).

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

    Tensors work under ``torch.compile(fullgraph=True)``. While compiling, the data-dependent checks are
    skipped: non-finite values are still ignored, but there is no :class:`~peakloc.errors.NonFiniteWarning`,
    and a map with no finite value gives NaN instead of :class:`~peakloc.errors.NoFiniteValueError`.
    On CUDA the fused Triton kernel serves float tensors (see :func:`peakloc.backends.use_triton`).

    Examples
    --------
    >>> soft_argmax(np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 1.0]]))
    array([1. , 1.5])
    >>> soft_argmax(np.ones((3, 5)))
    array([1., 2.])
    """
    heatmap, ndim = validate_heatmap(heatmap, ndim)
    beta = validate_beta(beta)
    normalize = validate_normalize(normalize)
    if is_lazy(heatmap):
        from .streaming import each_soft_argmax

        coords, nonfinite = each_soft_argmax(heatmap, beta, ndim, normalize, threads)
    else:
        coords, nonfinite = backends.for_array(heatmap).soft_argmax(heatmap, beta, ndim, normalize, threads)
    _warn_nonfinite(nonfinite)
    return coords


def find_peaks(
    heatmap,
    ndim: int = 2,
    num_peaks: int = 1,
    min_distance: int = 1,
    threshold: str | float | None = None,
    merge_plateaus: bool = True,
):
    """Up to ``num_peaks`` local maxima of each heatmap, highest first (scikit-image's rule, see module).

    Parameters
    ----------
    heatmap : array_like, shape ``(..., *spatial)``
    ndim : {1, 2, 3}
        Number of spatial axes.
    num_peaks : int
        At most this many peaks per heatmap (>= 1).
    min_distance : int
        Minimum distance between peaks in pixels (Chebyshev), >= 1.
    threshold : float or str, optional
        Peaks must be strictly above it: a number (raw value), ``"N%"`` of the heatmap's maximum, or
        ``"Nsd"``: N noise standard deviations above the heatmap's background (its median; the noise is 1.4826
        times the median of the values' deviations above it; see :func:`peakloc.ops.peaks.noise_floor`).
        Default: strictly above the heatmap's minimum.
    merge_plateaus : bool
        A plateau of equal values (the flat top of a peak in a quantised map) is one peak, at its first
        pixel in C order. False: scikit-image's rule, one peak per ``min_distance`` along a plateau.

    Returns
    -------
    ndarray of int64 ``(n, ndim)`` for a single heatmap; for a batch, a list of those, one per heatmap in
    C order. Array-axis order; empty results keep their shape ``(0, ndim)``.

    Examples
    --------
    >>> x = np.zeros((5, 7)); x[1, 1] = 3; x[3, 5] = 2
    >>> find_peaks(x, num_peaks=3)
    array([[1, 1],
           [3, 5]])
    >>> find_peaks(x, num_peaks=3, threshold="90%").shape
    (1, 2)
    """
    heatmap, ndim = validate_heatmap(heatmap, ndim)
    num_peaks, min_distance = validate_counts(num_peaks, min_distance)
    threshold_abs, threshold_rel, threshold_sd = parse_threshold(threshold)
    if is_lazy(heatmap):
        from .streaming import each_local_maxima

        found = each_local_maxima(
            heatmap,
            ndim,
            num_peaks=num_peaks,
            min_distance=min_distance,
            threshold_abs=threshold_abs,
            threshold_rel=threshold_rel,
            merge_plateaus=merge_plateaus,
            threshold_sd=threshold_sd,
        )
        return found[0] if heatmap.ndim == ndim else found
    x = np.asarray(heatmap.cpu().numpy() if hasattr(heatmap, "cpu") else heatmap)
    flat = x.reshape((-1,) + x.shape[x.ndim - ndim :])
    if stacks_at_once(flat):  # many small maps: filtered and labelled at once
        try:
            out = stack_local_maxima(
                flat, num_peaks, min_distance, threshold_abs, threshold_rel, merge_plateaus, threshold_sd=threshold_sd
            )
            return out[0] if x.ndim == ndim else out
        except NoFiniteValueError:
            pass  # map by map below, whose error names the map
    out = []
    for b, one in enumerate(flat):
        try:
            out.append(
                local_maxima(
                    one,
                    num_peaks,
                    min_distance,
                    threshold_abs,
                    threshold_rel,
                    merge_plateaus=merge_plateaus,
                    threshold_sd=threshold_sd,
                )
            )
        except NoFiniteValueError:
            raise NoFiniteValueError(f"heatmap {b} has no finite value", b) from None
    return out[0] if x.ndim == ndim else out
