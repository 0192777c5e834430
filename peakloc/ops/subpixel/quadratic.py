"""``quadratic``: per axis, the vertex of the parabola through the logs of the three samples at the peak."""

from __future__ import annotations

import numpy as np

from ..windows import PeakShape, centre_index, windows


def vertex(heatmaps: np.ndarray, owner: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates ``(N, ndim)`` and fallback flags.

    The fallback is the integer peak, where a parabola does not open down or its vertex lies more than half a
    pixel away.
    """
    w = windows(heatmaps, owner, centres, 1)
    ndim = centres.shape[1]
    c = centre_index(w)
    shift = np.zeros(centres.shape)
    ok = np.ones(len(centres), bool)
    with np.errstate(all="ignore"):
        for k in range(ndim):
            before, after = list(c), list(c)
            before[k + 1], after[k + 1] = 0, 2
            a, b, d = np.log(w[tuple(before)]), np.log(w[c]), np.log(w[tuple(after)])
            curvature = a - 2 * b + d
            good = np.isfinite(a) & np.isfinite(b) & np.isfinite(d) & (curvature < 0)
            shift[:, k] = np.where(good, 0.5 * (a - d) / np.where(good, curvature, -1), 0)
            ok &= good
    ok &= np.all(np.abs(shift) <= 0.5 + 1e-9, axis=1)
    shift[~ok] = 0
    return centres + shift, ~ok


def locate(
    heatmaps: np.ndarray, owner: np.ndarray, centres: np.ndarray, shape: PeakShape, **_
) -> tuple[np.ndarray, np.ndarray, PeakShape]:
    """Coordinates ``(N, ndim)``, fallback flags and the shape estimate, unchanged."""
    coords, fallback = vertex(heatmaps, owner, centres)
    return coords, fallback, shape
