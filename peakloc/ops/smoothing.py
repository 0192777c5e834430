"""Quadratic-preserving smoothing: undoes the plateaus that rounding leaves on broad peaks.

In an 8-bit map of a broad peak (sigma of tens of pixels), rounding turns the top into a plateau several
pixels wide, and two peaks whose saddle lies within one grey level merge into one plateau: no local-maximum
rule can separate them, and every sub-pixel method sees a flat top. The staircase around the plateau still
holds the shape: a least-squares quadratic fitted in a window that spans a few grey levels recovers the
smooth surface. Fitting at every pixel with Gaussian weights is a linear filter (a Savitzky-Golay filter
with Gaussian weights), so it costs a few separable passes.

The filter reproduces any polynomial of degree 2 exactly (away from the borders), so it moves neither the
position nor the height of a peak that is locally quadratic; it is biased where the surface has third-order
terms over the window, about ``smooth**2 * f''' / f''`` pixels, hence small windows: a few pixels.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import PeaklocValueError
from .filters import correlate
from .lazy import Maps, is_lazy

#: Narrowest smoothing, pixels: below half a pixel the window holds too few samples for a quadratic fit
#: (its moment matrix is singular).
MIN_SMOOTH = 0.5


def smoothing_kernels(sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-D taps ``t``, Gaussian weights ``w`` and ``t**2 * w`` of the fit's window (radius ``ceil(3 sigma)``)."""
    radius = max(1, math.ceil(3 * sigma))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (t / sigma) ** 2)
    return t, w, t * t * w


def _coefficients(w: np.ndarray, t: np.ndarray, ndim: int) -> tuple[float, float]:
    """``alpha, beta`` of the fitted constant term, whose kernel is ``w(x) * (alpha + beta * |x|**2)``.

    The constant of a weighted quadratic fit is a linear function of the data whose kernel must sum to 1 and
    have zero second moment along each axis (the fit reproduces 1 and ignores x_k**2 in the constant).
    """
    m0 = w.sum()
    m2 = (t**2 * w).sum()
    m4 = (t**4 * w).sum()
    moments = np.array(
        [
            [m0**ndim, ndim * m2 * m0 ** (ndim - 1)],
            [m2 * m0 ** (ndim - 1), m4 * m0 ** (ndim - 1) + (ndim - 1) * m2 * m2 * m0 ** max(ndim - 2, 0)],
        ]
    )
    alpha, beta = np.linalg.solve(moments, [1.0, 0.0])
    return float(alpha), float(beta)


def smooth_one(x: np.ndarray, sigma: float) -> np.ndarray:
    """Smooth one finite float64 map (any number of axes)."""
    t, w, q = smoothing_kernels(sigma)
    alpha, beta = _coefficients(w, t, x.ndim)
    # Partial results keyed by the kernels applied so far: the weighted sum and the per-axis
    # second moments share all but one of their passes.
    cache: dict[tuple[str, ...], np.ndarray] = {(): x}

    def passes(kinds: tuple[str, ...]) -> np.ndarray:
        if kinds not in cache:
            cache[kinds] = correlate(passes(kinds[:-1]), w if kinds[-1] == "w" else q, len(kinds) - 1)
        return cache[kinds]

    out = alpha * passes(("w",) * x.ndim)
    for k in range(x.ndim):
        out += beta * passes(tuple("q" if a == k else "w" for a in range(x.ndim)))
    return out


def smooth(heatmap: np.ndarray, sigma: float, ndim: int = 2) -> np.ndarray:
    """Each heatmap replaced by its Gaussian-weighted local quadratic fit (a Savitzky-Golay filter).

    Parameters
    ----------
    heatmap : array_like, shape ``(..., *spatial)``
        Any real dtype; NaN and inf are ignored (filled with the heatmap's finite minimum for the fit, and
        NaN again in the result).
    sigma : float
        Width of the fit's Gaussian weights in pixels (at least :data:`MIN_SMOOTH`); the window reaches
        ``ceil(3 * sigma)`` pixels. Pick it so that the window spans a few quantisation levels of the peak
        but stays well inside the peak: about an eighth of the peak's sigma for broad 8-bit peaks.
    ndim : {1, 2, 3}
        Number of spatial axes.

    Returns
    -------
    ndarray of float64, the shape of ``heatmap``
        Quadratic surfaces come back unchanged (up to rounding) wherever the window lies inside the map;
        at the borders the map is mirrored about its edge pixels.

    Examples
    --------
    >>> y, x = np.mgrid[:20, :30]
    >>> bowl = 100.0 - (y - 9.3) ** 2 - 0.5 * (x - 14.6) ** 2
    >>> bool(np.allclose(smooth(bowl, 2.0)[6:14, 6:24], bowl[6:14, 6:24]))
    True
    """
    number = isinstance(sigma, (int, float, np.floating, np.integer))
    if not (number and math.isfinite(sigma) and sigma >= MIN_SMOOTH):
        raise PeaklocValueError(f"`sigma` of the smoothing must be a finite number >= {MIN_SMOOTH}. Got: {sigma!r}")
    x = heatmap if is_lazy(heatmap) else np.asarray(heatmap)
    if np.dtype(x.dtype).kind not in "uifb":
        raise TypeError(f"`heatmap` must be a real array. Got dtype: {x.dtype}")
    if ndim not in (1, 2, 3) or len(x.shape) < ndim:
        raise PeaklocValueError(f"`ndim` must be 1, 2 or 3 and at most heatmap.ndim. Got: {ndim}")
    maps = Maps(x, ndim)  # memmaps, Zarr and Dask arrays are read one map at a time
    out = np.empty(maps.shape, np.float64)
    for b in range(maps.count):  # one map at a time bounds the temporaries to a few copies of one map
        one = maps.read(b).astype(np.float64)
        finite = np.isfinite(one)
        if not finite.any():
            out[b] = np.nan
            continue
        if not finite.all():
            one = np.where(finite, one, one[finite].min())
        out[b] = smooth_one(one, float(sigma))
        out[b][~finite] = np.nan
    return out.reshape(tuple(x.shape))
