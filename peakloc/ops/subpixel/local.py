"""``local``: the soft-argmax within a window around each peak, normalised within the window."""

from __future__ import annotations

import numpy as np

from ..normalize import coefficient, exp_logits
from ..windows import PeakShape, groups, offsets, windows


def default_window(sigma: np.ndarray) -> np.ndarray:
    """Half-width per peak when none is given: twice the peak's own sigma, at least 2 px."""
    return np.maximum(2, np.ceil(2 * sigma)).astype(np.int64)


def locate(
    heatmaps: np.ndarray,
    owner: np.ndarray,
    centres: np.ndarray,
    shape: PeakShape,
    *,
    window: int | None = None,
    beta: float = 100.0,
    normalize: str = "minmax",
    **_,
) -> tuple[np.ndarray, np.ndarray, PeakShape, np.ndarray]:
    """Coordinates ``(N, ndim)``, fallback flags (never set), the shape estimate unchanged, no uncertainty.

    The uncertainty is NaN: a windowed soft-argmax has no noise model.

    The window is ``window`` pixels each side, or :func:`default_window` of each peak's own sigma; peaks
    that share a half-width are gathered together.
    """
    halves = np.full(len(centres), int(window)) if window is not None else default_window(shape.sigma)
    coords = np.empty(centres.shape, np.float64)
    for half, part in groups(halves):
        w = windows(heatmaps, owner[part], centres[part], half)
        flat = w.reshape(len(w), -1)
        with np.errstate(all="ignore"):
            hi = np.nanmax(flat, axis=1)
            scale = coefficient(beta, normalize, hi, np.nanmin(flat, axis=1))
            weights = exp_logits(scale[:, None] * (flat - hi[:, None]))
        weights = np.nan_to_num(weights, nan=0.0)
        shift = weights @ offsets(half, centres.shape[1]) / weights.sum(axis=1, keepdims=True)
        coords[part] = centres[part] + shift
    return coords, np.zeros(len(centres), bool), shape, np.full(centres.shape, np.nan)
