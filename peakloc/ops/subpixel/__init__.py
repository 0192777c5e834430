"""Sub-pixel refinement of integer peaks: one module per method behind one registry, :data:`METHODS`.

Every method works on small windows around the peaks, gathered at once for all peaks of all heatmaps
(``(N, 2h+1, ...)`` arrays), so there is no per-peak Python loop; a peak's window, blur and fit size come
from that peak alone, so its result does not depend on the other peaks or heatmaps refined with it. Each
method falls back to the integer peak, flagged, where it cannot work (a border, a flat or non-positive
neighbourhood, a failed fit); no method returns NaN or a point outside the heatmap.

A method is ``locate(heatmaps, owner, centres, shape, **params) -> (coords, fallback, shape)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ...errors import PeaklocValueError
from ..coords import validate_heatmap
from ..lazy import Maps, is_lazy
from ..streaming import stats_of
from ..windows import PeakShape, estimate_shape
from . import crowded, dark, gaussian, local, quadratic

#: Method name -> its ``locate`` function, in the order the table lists them.
METHODS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray, PeakShape, np.ndarray]]] = {
    "local": local.locate,
    "quadratic": quadratic.locate,
    "dark": dark.locate,
    "gaussian": crowded.locate,
}


@dataclass
class Refined:
    """Refined peaks, one entry per peak.

    Attributes
    ----------
    coords : ndarray of float64, shape ``(N, ndim)``
        Pixel coordinates in array-axis order.
    fallback : ndarray of bool, shape ``(N,)``
        True where the method could not work and the integer peak was kept.
    sigma : ndarray of float64, shape ``(N,)``
        Peak width in pixels (the fit's geometric-mean sigma for ``gaussian``, else the half-maximum
        estimate).
    amplitude : ndarray of float64, shape ``(N,)``
        Height above the background (the fit's for ``gaussian``, else the peak value minus the window's
        10th percentile).
    snr : ndarray of float64, shape ``(N,)``
        Amplitude over the noise: the fit's residual standard deviation for ``gaussian``, else the robust
        standard deviation of the window's outer ring. A confidence: below about 3 the peak may be noise.
    uncertainty : ndarray of float64, shape ``(N, ndim)``
        The 1-sigma standard error of each coordinate, pixels: from the fit's Fisher information and its
        noise for ``gaussian`` (calibrated); approximations from the curvature and noise for ``quadratic`` and
        ``dark``; NaN for ``local`` and wherever the method fell back to the integer peak.
    """

    coords: np.ndarray
    fallback: np.ndarray
    sigma: np.ndarray
    amplitude: np.ndarray
    snr: np.ndarray
    uncertainty: np.ndarray


def snr(shape: PeakShape) -> np.ndarray:
    """Amplitude over noise per peak; 0 where undefined, the largest float where the noise is 0."""
    with np.errstate(all="ignore"):
        ratio = shape.amplitude / shape.noise
    return np.nan_to_num(ratio, nan=0.0, posinf=np.finfo(float).max)


def refine_flat(
    heatmaps: np.ndarray,
    owner: np.ndarray,
    centres: np.ndarray,
    method: str,
    *,
    window: int | None = None,
    sigma: float | None = None,
    beta: float = 100.0,
    normalize: str = "minmax",
    shape: PeakShape | None = None,
    clip_levels: tuple[np.ndarray, np.ndarray] | None = None,
    threads: int | None = None,
    known: tuple[np.ndarray, gaussian.Fits] | None = None,
    uncertainty: bool = True,
) -> Refined:
    """Refine peaks given as (heatmap, integer centre) pairs.

    Parameters
    ----------
    heatmaps : ndarray, shape ``(B, *spatial)``
    owner : ndarray of int, shape ``(N,)``
        Which heatmap each peak belongs to.
    centres : ndarray of int, shape ``(N, ndim)``
        Integer peak positions (local maxima), array-axis order.
    method : {"local", "quadratic", "dark", "gaussian"}
    window : int, optional
        ``local``: half-width of the window in pixels; default ``max(2, ceil(2 * sigma))`` of each peak.
    sigma : float, optional
        Peak width in pixels for ``dark``'s blur; default: estimated per peak.
    beta, normalize
        ``local``: as for the soft-argmax, applied within the window.
    shape : PeakShape, optional
        :func:`~peakloc.ops.windows.estimate_shape` of these peaks, if already computed.
    clip_levels : (ndarray, ndarray), optional
        ``gaussian``: each heatmap's saturation and floor levels, if already known (a stack read in pieces
        has them from :func:`peakloc.ops.streaming.map_stats`).
    threads : int, optional
        ``gaussian``: threads its chunks of peaks run on (default: one per core, at most 8; 1 for none).
    known : (ndarray, Fits), optional
        ``gaussian``: fits already made of some of these peaks, with this ``shape`` (see
        :func:`.gaussian.fit_peaks`); ignored with ``sigma``, which replaces the shape's widths.
    uncertainty : bool
        ``gaussian``: compute the uncertainty (NaN without: its terms are a third of a small batch's fit,
        and no other number depends on them).

    Returns
    -------
    Refined
    """
    if method not in METHODS:
        raise PeaklocValueError(f"`method` must be one of {', '.join(METHODS)}. Got: {method!r}")
    centres = np.asarray(centres, dtype=np.int64).reshape(len(owner), heatmaps.ndim - 1)
    owner = np.asarray(owner, dtype=np.int64)
    n = len(centres)
    if n == 0:
        empty = np.empty(0)
        nothing = np.empty((0, heatmaps.ndim - 1))
        return Refined(nothing, np.empty(0, bool), empty, empty, empty, nothing.copy())
    if shape is None:
        shape = estimate_shape(heatmaps, owner, centres, threads)
    if sigma is not None:
        shape = PeakShape(np.full(n, float(sigma)), shape.background, shape.amplitude, shape.noise)
        known = None  # made with the estimated widths, not this one
    coords, fallback, shape, error = METHODS[method](
        heatmaps,
        owner,
        centres,
        shape,
        window=window,
        beta=beta,
        normalize=normalize,
        clip_levels=clip_levels,
        threads=threads,
        known=known,
        uncertainty=uncertainty,
    )
    spatial = np.array(heatmaps.shape[1:]) - 1
    coords = np.clip(np.where(np.isfinite(coords), coords, centres), 0, spatial)
    error = np.where(fallback[:, None] | ~np.isfinite(coords), np.nan, error)
    return Refined(coords, fallback, shape.sigma, shape.amplitude, snr(shape), error)


def refine(
    heatmap,
    peaks,
    method: str = "dark",
    ndim: int = 2,
    *,
    window: int | None = None,
    sigma: float | None = None,
    beta: float = 100.0,
    normalize: str = "minmax",
    full_output: bool = False,
):
    """Sub-pixel positions of integer peaks.

    Parameters
    ----------
    heatmap : array_like, shape ``(..., *spatial)``
        A tensor is read back to the host: refinement runs in NumPy.
    peaks : array_like of int, shape ``(P, ndim)`` for one heatmap, ``batch_shape + (P, ndim)`` for a batch
        Integer peak positions in array-axis order, e.g. from :func:`peakloc.argmax` (add a ``P`` axis) or
        :func:`peakloc.find_peaks`.
    method : {"local", "quadratic", "dark", "gaussian"}
        ``local``: soft-argmax within a window; ``quadratic``: per-axis parabola through the logs of the
        three samples; ``dark``: DARK (Gaussian blur, log, Newton step); ``gaussian``: least-squares fit of
        a Gaussian with background and a width per array axis, saturated samples censored.
    ndim : {1, 2, 3}
    window : int, optional
        ``local`` only: half-width in pixels (default from the peak width).
    sigma : float, optional
        Peak width in pixels for ``dark``'s blur (default: estimated per peak).
    beta, normalize
        ``local`` only: as for :func:`peakloc.soft_argmax`, within the window.
    full_output : bool
        Return a :class:`Refined` (coordinates, fallback flags, sigma, amplitude, snr, and the uncertainty
        of each coordinate) shaped like `peaks` (without its last axis for the per-peak fields), instead of
        the coordinates alone.

    Returns
    -------
    ndarray of float64, same shape as `peaks`
        Pixel coordinates. Where the method cannot work (border, flat neighbourhood, failed fit) the
        integer peak is returned and flagged in ``full_output``.

    Examples
    --------
    >>> y, x = np.mgrid[:9, :9]
    >>> heat = np.exp(-((y - 4.25) ** 2 + (x - 3.6) ** 2) / 2)
    >>> refine(heat, [[4, 4]], method="quadratic").round(6)
    array([[4.25, 3.6 ]])
    """
    heatmap, ndim = validate_heatmap(heatmap, ndim)
    lazy = is_lazy(heatmap)  # then read one window per peak, never whole
    x = heatmap if lazy else np.asarray(heatmap.detach().cpu().numpy() if hasattr(heatmap, "detach") else heatmap)
    batch_shape = tuple(x.shape[: len(x.shape) - ndim])
    points = np.asarray(peaks)
    if points.dtype.kind not in "iu":
        if points.size and not np.all(points == np.round(points)):
            raise PeaklocValueError("`peaks` must be integer positions (local maxima), e.g. from find_peaks")
        points = points.astype(np.int64)
    if points.ndim < 2 or points.shape[-1] != ndim or points.shape[:-2] != batch_shape:
        raise PeaklocValueError(f"`peaks` must have shape {batch_shape + ('P', ndim)}. Got: {points.shape}")
    spatial = np.array(x.shape[len(x.shape) - ndim :])
    if points.size and (np.any(points < 0) or np.any(points >= spatial)):
        raise PeaklocValueError("`peaks` must lie inside the heatmap")
    flat = Maps(x, ndim) if lazy else x.reshape((-1,) + tuple(spatial))
    clip = None
    if lazy and method == "gaussian":
        clip = gaussian.clip_levels_of(stats_of(flat), flat.dtype)
    count = points.shape[-2]
    owner = np.repeat(np.arange(len(flat)), count)
    result = refine_flat(
        flat,
        owner,
        points.reshape(-1, ndim),
        method,
        window=window,
        sigma=sigma,
        beta=beta,
        normalize=normalize,
        clip_levels=clip,
        uncertainty=full_output,  # the coordinates alone need none
    )
    shape = points.shape[:-1]
    if not full_output:
        return result.coords.reshape(points.shape)
    return Refined(
        result.coords.reshape(points.shape),
        result.fallback.reshape(shape),
        result.sigma.reshape(shape),
        result.amplitude.reshape(shape),
        result.snr.reshape(shape),
        result.uncertainty.reshape(points.shape),
    )
