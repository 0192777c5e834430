"""``dark``: DARK (Zhang et al. 2020; MMPose's ``refine_keypoints_dark``): blur, log, Newton step."""

from __future__ import annotations

import numpy as np

from ..windows import PeakShape, groups, windows

#: Newton steps taken from a new start pixel at most (MMPose takes one step whatever its length).
ATTEMPTS = 4


def gaussian_kernels(sigma: np.ndarray, radius: int) -> np.ndarray:
    """Normalised 1-D Gaussian taps ``(N, 2 * radius + 1)``, one row per sigma."""
    t = np.arange(-radius, radius + 1)
    k = np.exp(-(t[None] ** 2) / (2 * sigma[:, None] ** 2))
    return k / k.sum(axis=1, keepdims=True)


def blur_centre(w: np.ndarray, kernels: np.ndarray, keep: int) -> np.ndarray:
    """Separable blur of windows ``(N, L, ...)`` by per-peak kernels ``(N, 2r+1)``; the central ``keep`` per axis."""
    radius = kernels.shape[1] // 2
    out = w
    for axis in range(1, w.ndim):
        n = out.shape[axis]
        start = (n - keep) // 2
        acc = 0.0
        for j, t in enumerate(range(-radius, radius + 1)):
            index = [slice(None)] * out.ndim
            index[axis] = slice(start + t, start + t + keep)
            acc = acc + kernels[:, j].reshape((-1,) + (1,) * (out.ndim - 1)) * out[tuple(index)]
        out = acc
    return out


def _step(heatmaps, owner, centres, sigma, radius):
    """One DARK Newton step at integer ``centres``: the shift and whether it is usable."""
    ndim = centres.shape[1]
    w = np.nan_to_num(windows(heatmaps, owner, centres, radius + 2), nan=0.0)
    with np.errstate(all="ignore"):
        logb = np.log(np.maximum(blur_centre(w, gaussian_kernels(sigma, radius), 5), 1e-10))

    def at(offset):
        return logb[(slice(None),) + tuple(2 + o for o in offset)]

    unit = np.eye(ndim, dtype=int)
    zero = np.zeros(ndim, dtype=int)
    grad = np.stack([0.5 * (at(unit[k]) - at(-unit[k])) for k in range(ndim)], axis=-1)
    hess = np.empty((len(centres), ndim, ndim))
    for k in range(ndim):
        hess[:, k, k] = 0.25 * (at(2 * unit[k]) - 2 * at(zero) + at(-2 * unit[k]))
        for m in range(k + 1, ndim):
            e, f = unit[k], unit[m]
            hess[:, k, m] = hess[:, m, k] = 0.25 * (at(e + f) - at(e - f) - at(-e + f) + at(-e - f))
    spatial = np.array(heatmaps.shape[1:])
    ok = np.all((centres >= 2) & (centres <= spatial - 3), axis=1)  # MMPose's 1 < x < W - 2
    with np.errstate(all="ignore"):
        ok &= np.all(np.isfinite(hess), axis=(1, 2)) & np.all(np.isfinite(grad), axis=1)
        ok &= np.all(np.linalg.eigvalsh(np.where(ok[:, None, None], hess, -np.eye(ndim))) < 0, axis=1)
    safe = np.where(ok[:, None, None], hess, -np.eye(ndim))
    shift = -np.linalg.solve(safe, grad[..., None])[..., 0]
    return np.where(ok[:, None], shift, 0.0), ok


def _newton(heatmaps, owner, centres, sigma, radius) -> tuple[np.ndarray, np.ndarray]:
    """DARK for peaks that share a blur radius: coordinates and usable flags."""
    spatial = np.array(heatmaps.shape[1:])
    current = centres.copy()
    result = centres.astype(np.float64)
    ok = np.ones(len(centres), bool)
    todo = np.arange(len(centres))
    for attempt in range(ATTEMPTS):
        step, good = _step(heatmaps, owner[todo], current[todo], sigma[todo], radius)
        result[todo] = current[todo] + step
        ok[todo] = good
        if attempt == ATTEMPTS - 1:
            break
        # Re-centre only for a step clearly past the pixel: a half-pixel threshold would oscillate.
        moved = np.clip(np.rint(result[todo]).astype(np.int64), 0, spatial - 1)
        again = good & np.any(np.abs(step) > 0.75, axis=1) & np.any(moved != current[todo], axis=1)
        current[todo[again]] = moved[again]
        todo = todo[again]
        if not len(todo):
            break
    return result, ok


def locate(
    heatmaps: np.ndarray, owner: np.ndarray, centres: np.ndarray, shape: PeakShape, **_
) -> tuple[np.ndarray, np.ndarray, PeakShape, np.ndarray]:
    """Coordinates ``(N, ndim)``, fallback flags, the shape estimate unchanged, and the uncertainty.

    The uncertainty is an approximation: the Cramer-Rao bound of the centre of a Gaussian of the peak's
    estimated sigma and amplitude in white noise of its estimated level (:func:`gaussian_bound`), which
    DARK comes close to on isolated peaks.

    The blur is a Gaussian of the peak's own sigma (radius ``ceil(3 sigma)``) with zero padding outside
    the map, as MMPose pads; the gradient uses central differences and the Hessian MMPose's stencils (second
    differences over two pixels, mixed differences over the four diagonal neighbours). Where the step leaves
    the start pixel (a noisy or clipped argmax), the step is taken again from the pixel it points to, up to
    :data:`ATTEMPTS` times.
    """
    result = centres.astype(np.float64)
    ok = np.ones(len(centres), bool)
    for radius, part in groups(np.ceil(3 * shape.sigma).astype(np.int64)):
        result[part], ok[part] = _newton(heatmaps, owner[part], centres[part], shape.sigma[part], radius)
    ok &= np.all(np.abs(result - centres) <= 4, axis=1)
    error = np.where(ok[:, None], gaussian_bound(shape, centres.shape[1])[:, None], np.nan) * np.ones(centres.shape)
    return np.where(ok[:, None], result, centres), ~ok, shape, error


def gaussian_bound(shape: PeakShape, ndim: int) -> np.ndarray:
    """Per peak, the Cramer-Rao bound (1 sigma, pixels, per axis) of the centre of an isotropic Gaussian.

    For amplitude ``A``, width ``s`` and white noise ``n`` sampled on the pixel grid, the centre's Fisher
    information per axis is ``(A / n)^2 * pi^(ndim / 2) * s^(ndim - 2) / 2``.

    Examples
    --------
    >>> from peakloc.ops.windows import PeakShape
    >>> one = np.ones(1)
    >>> float(gaussian_bound(PeakShape(2 * one, 0 * one, one, 0.05 * one), 2)[0]).__round__(4)
    0.0399
    """
    with np.errstate(all="ignore"):
        information = (shape.amplitude / shape.noise) ** 2 * np.pi ** (ndim / 2) * shape.sigma ** (ndim - 2) / 2
        bound = 1 / np.sqrt(information)
    return np.where(np.isfinite(bound) & (shape.amplitude > 0), bound, np.nan)
