"""``quadratic``: per axis, the vertex of the parabola through the logs of the three samples at the peak."""

from __future__ import annotations

import numpy as np

from ..windows import PeakShape, centre_index, windows


def vertex(
    heatmaps: np.ndarray, owner: np.ndarray, centres: np.ndarray, noise: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coordinates ``(N, ndim)`` and fallback flags (and, given each peak's ``noise``, the uncertainty).

    The fallback is the integer peak, where a parabola does not open down or its vertex lies more than half a
    pixel away. The uncertainty ``(N, ndim)`` propagates white noise of standard deviation ``noise`` through
    the vertex formula (the log of a sample ``v`` varies by ``noise / v``), to first order: an
    approximation, which holds while the three samples stand well above the noise.
    """
    w = windows(heatmaps, owner, centres, 1)
    ndim = centres.shape[1]
    c = centre_index(w)
    shift = np.zeros(centres.shape)
    error = np.full(centres.shape, np.nan)
    ok = np.ones(len(centres), bool)
    with np.errstate(all="ignore"):
        for k in range(ndim):
            before, after = list(c), list(c)
            before[k + 1], after[k + 1] = 0, 2
            samples = w[tuple(before)], w[c], w[tuple(after)]
            a, b, d = (np.log(v) for v in samples)
            curvature = a - 2 * b + d
            good = np.isfinite(a) & np.isfinite(b) & np.isfinite(d) & (curvature < 0)
            shift[:, k] = np.where(good, 0.5 * (a - d) / np.where(good, curvature, -1), 0)
            ok &= good
            if noise is not None:
                # d shift / d (a, b, d) of 0.5 (a - d) / (a - 2b + d), each log sample's variance (noise / v)^2
                slopes = (0.5 * (curvature - (a - d)), (a - d), 0.5 * (-curvature - (a - d)))
                variance = sum((g / curvature**2) ** 2 * (noise / v) ** 2 for g, v in zip(slopes, samples))
                error[:, k] = np.where(good, np.sqrt(variance), np.nan)
    ok &= np.all(np.abs(shift) <= 0.5 + 1e-9, axis=1)
    shift[~ok] = 0
    if noise is None:
        return centres + shift, ~ok
    error[~ok] = np.nan
    return centres + shift, ~ok, error


def locate(
    heatmaps: np.ndarray, owner: np.ndarray, centres: np.ndarray, shape: PeakShape, **_
) -> tuple[np.ndarray, np.ndarray, PeakShape, np.ndarray]:
    """Coordinates ``(N, ndim)``, fallback flags, the shape estimate unchanged, and the uncertainty."""
    coords, fallback, error = vertex(heatmaps, owner, centres, shape.noise)
    return coords, fallback, shape, error
