"""Sub-pixel refinement of integer peaks: ``local``, ``quadratic``, ``dark`` and ``gaussian``.

Every method works on small windows around the peaks, gathered at once for all peaks of all heatmaps
(``(N, 2h+1, ...)`` arrays), so there is no per-peak Python loop. Each falls back to the integer peak,
flagged, where it cannot work (a border, a flat or non-positive neighbourhood, a failed fit); no method
returns NaN or a point outside the heatmap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import PeaklocValueError

METHODS = ("local", "quadratic", "dark", "gaussian")
#: Half-width (pixels) of the window in which a peak's width is estimated.
SIGMA_WINDOW = 12
#: Largest half-width of the Gaussian fit's window (3-D windows grow as its cube).
FIT_MAX_HALF = {1: 16, 2: 10, 3: 6}
FIT_ITERATIONS = 40
#: Peaks fitted together: bounds the fit's Jacobian to a few tens of MB.
FIT_CHUNK = 256


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
    """

    coords: np.ndarray
    fallback: np.ndarray
    sigma: np.ndarray
    amplitude: np.ndarray
    snr: np.ndarray


# ------------------------------------------------------------------------------------------ windows


def _offsets(half: int, ndim: int) -> np.ndarray:
    """All integer offsets of a ``(2 * half + 1) ** ndim`` window, C order, shape ``(M, ndim)``."""
    axes = [np.arange(-half, half + 1)] * ndim
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, ndim)


def windows(heatmaps: np.ndarray, owner: np.ndarray, centres: np.ndarray, half: int) -> np.ndarray:
    """Windows around peaks, float64, NaN outside the map and where values are not finite.

    Parameters
    ----------
    heatmaps : ndarray, shape ``(B, *spatial)``
    owner : ndarray of int, shape ``(N,)``
        The heatmap of each peak.
    centres : ndarray of int, shape ``(N, ndim)``
    half : int

    Returns
    -------
    ndarray, shape ``(N,) + (2 * half + 1,) * ndim``
    """
    spatial = np.array(heatmaps.shape[1:])
    ndim = len(spatial)
    index = centres[:, None, :] + _offsets(half, ndim)[None]
    inside = np.all((index >= 0) & (index < spatial), axis=-1)
    strides = np.r_[np.cumprod(spatial[::-1])[:-1][::-1], 1].astype(np.int64)
    flat = np.clip(index, 0, spatial - 1) @ strides
    values = heatmaps.reshape(len(heatmaps), -1)[owner[:, None], flat].astype(np.float64)
    values[~inside | ~np.isfinite(values)] = np.nan
    return values.reshape((len(centres),) + (2 * half + 1,) * ndim)


def _centre(w: np.ndarray) -> tuple:
    return (slice(None),) + tuple(s // 2 for s in w.shape[1:])


def _robust_std(values: np.ndarray) -> np.ndarray:
    """1.4826 * median absolute deviation per row, ignoring NaN."""
    import warnings

    with warnings.catch_warnings():  # a window entirely outside a tiny map has no ring: NaN, handled later
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(values, axis=1, keepdims=True)
        return 1.4826 * np.nanmedian(np.abs(values - med), axis=1)


def estimate_width(heatmaps: np.ndarray, owner: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, ...]:
    """Peak width from the area above half maximum, with background and noise, per peak.

    Returns
    -------
    sigma, background, amplitude, noise : ndarray of float64, shape ``(N,)``
        ``sigma`` from the half-maximum area within :data:`SIGMA_WINDOW` px (clamped to [0.5, 6]);
        background is the window's 10th percentile; noise the robust std of the window's outer ring.
    """
    ndim = centres.shape[1]
    half = SIGMA_WINDOW
    w = windows(heatmaps, owner, centres, half)
    flat = w.reshape(len(w), -1)
    with np.errstate(all="ignore"):
        background = np.nanpercentile(flat, 10, axis=1)
        peak = w[_centre(w)]
        amplitude = peak - background
        above = np.nansum(flat > (background + amplitude / 2)[:, None], axis=1).astype(np.float64)
        k = 2 * math.log(2)
        if ndim == 1:
            sigma = above / (2 * math.sqrt(k))
        elif ndim == 2:
            sigma = np.sqrt(above / (math.pi * k))
        else:
            sigma = np.cbrt(above / (4 / 3 * math.pi * k**1.5))
        ring = np.abs(_offsets(half, ndim)).max(axis=1) >= half - 2
        noise = _robust_std(flat[:, ring])
    sigma = np.clip(np.nan_to_num(sigma, nan=1.0), 0.5, half / 2)
    return sigma, background, amplitude, noise


# ----------------------------------------------------------------------------------------- methods


def _local(heatmaps, owner, centres, window, beta, normalize):
    """Soft-argmax over a ``(2 * window + 1)`` window around each peak, normalised within the window."""
    from .backends._numpy import _coefficient

    w = windows(heatmaps, owner, centres, window)
    flat = w.reshape(len(w), -1)
    with np.errstate(all="ignore"):
        hi = np.nanmax(flat, axis=1)
        scale = _coefficient(beta, normalize, hi, np.nanmin(flat, axis=1))
        weights = np.exp(scale[:, None] * (flat - hi[:, None]))
    weights = np.nan_to_num(weights, nan=0.0)
    offsets = _offsets(window, centres.shape[1])
    shift = weights @ offsets / weights.sum(axis=1, keepdims=True)
    return centres + shift, np.zeros(len(centres), bool)


def _quadratic(heatmaps, owner, centres):
    """Per axis, the vertex of the parabola through the logs of the three samples around the peak."""
    w = windows(heatmaps, owner, centres, 1)
    ndim = centres.shape[1]
    c = _centre(w)
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


def _gaussian_kernels(sigma: np.ndarray, radius: int) -> np.ndarray:
    t = np.arange(-radius, radius + 1)
    k = np.exp(-(t[None] ** 2) / (2 * sigma[:, None] ** 2))
    return k / k.sum(axis=1, keepdims=True)


def _blur_centre(w: np.ndarray, kernels: np.ndarray, keep: int) -> np.ndarray:
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


def _dark_step(heatmaps, owner, centres, sigma, radius):
    """One DARK Newton step at integer ``centres``: the shift and whether it is usable."""
    ndim = centres.shape[1]
    w = np.nan_to_num(windows(heatmaps, owner, centres, radius + 2), nan=0.0)
    with np.errstate(all="ignore"):
        logb = np.log(np.maximum(_blur_centre(w, _gaussian_kernels(sigma, radius), 5), 1e-10))

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


def _dark(heatmaps, owner, centres, sigma):
    """DARK (Zhang et al. 2020; MMPose's ``refine_keypoints_dark``): blur, log, Newton step.

    The blur is a Gaussian of the peak's sigma with zero padding outside the map, as MMPose pads; the
    gradient uses central differences and the Hessian MMPose's stencils (second differences over two
    pixels, mixed differences over the four diagonal neighbours). Where the step leaves the start pixel
    (a noisy or clipped argmax), the step is taken again from the pixel it points to, up to four times:
    MMPose takes one step whatever its length.
    """
    radius = int(math.ceil(3 * float(sigma.max())))
    spatial = np.array(heatmaps.shape[1:])
    current = centres.copy()
    result = centres.astype(np.float64)
    ok = np.ones(len(centres), bool)
    todo = np.arange(len(centres))
    for attempt in range(4):
        step, good = _dark_step(heatmaps, owner[todo], current[todo], sigma[todo], radius)
        result[todo] = current[todo] + step
        ok[todo] = good
        if attempt == 3:
            break
        # Re-centre only for a step clearly past the pixel: a half-pixel threshold would oscillate.
        moved = np.clip(np.rint(result[todo]).astype(np.int64), 0, spatial - 1)
        again = good & np.any(np.abs(step) > 0.75, axis=1) & np.any(moved != current[todo], axis=1)
        current[todo[again]] = moved[again]
        todo = todo[again]
        if not len(todo):
            break
    ok &= np.all(np.abs(result - centres) <= 4, axis=1)
    return np.where(ok[:, None], result, centres), ~ok


def _censoring(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per heatmap, the level above which values are clipped (saturated) and below which (floored), or NaN.

    Saturated: the dtype's maximum in an integer map, or a maximum shared by three or more pixels (a
    clipped plateau). Floored: a minimum of 0 shared by three or more pixels (noise clipped at zero,
    quantised background).
    """
    flat = heatmaps.reshape(len(heatmaps), -1)
    finite = np.where(np.isfinite(flat), flat, np.nan) if flat.dtype.kind == "f" else flat.astype(np.float64)
    hi = np.nanmax(finite, axis=1)
    lo = np.nanmin(finite, axis=1)
    count_hi = np.sum(finite == hi[:, None], axis=1)
    count_lo = np.sum(finite == lo[:, None], axis=1)
    saturated = count_hi >= 3
    if heatmaps.dtype.kind in "ui":
        saturated |= hi == np.iinfo(heatmaps.dtype).max
    upper = np.where(saturated & (lo < hi), hi, np.nan)
    lower = np.where((count_lo >= 3) & (lo == 0) & (lo < hi), lo, np.nan)
    return upper, lower


def _model(theta: np.ndarray, d_base: np.ndarray, ndim: int):
    """Gaussian with background: value and Jacobian at offsets ``d_base`` (from the window centre)."""
    mu = theta[:, :ndim]
    amp = theta[:, ndim]
    bg = theta[:, ndim + 1]
    pairs = [(k, m) for k in range(ndim) for m in range(k, ndim)]
    precision = np.zeros((len(theta), ndim, ndim))
    for j, (k, m) in enumerate(pairs):
        precision[:, k, m] = precision[:, m, k] = theta[:, ndim + 2 + j]
    d = d_base[None] - mu[:, None, :]
    pd = d @ precision
    q = np.sum(d * pd, axis=-1)
    e = np.exp(-0.5 * q)
    value = amp[:, None] * e + bg[:, None]
    jac = np.empty(value.shape + (theta.shape[1],))
    jac[..., :ndim] = (amp[:, None] * e)[..., None] * pd
    jac[..., ndim] = e
    jac[..., ndim + 1] = 1.0
    for j, (k, m) in enumerate(pairs):
        factor = -0.5 if k == m else -1.0
        jac[..., ndim + 2 + j] = factor * amp[:, None] * e * d[..., k] * d[..., m]
    return value, jac, precision


def _residuals(y, value, jac, upper, lower, valid):
    """Residuals and Jacobian with censored samples: a clipped sample only counts where the model disagrees."""
    r = y - value
    active = valid.copy()
    # Saturated sample: the truth is >= the clip level; only a model below it is wrong.
    sat = valid & (y >= upper[:, None])
    active &= ~(sat & (r < 0))
    # Floored sample: the truth is <= the floor; only a model above it is wrong.
    flo = valid & (y <= lower[:, None])
    active &= ~(flo & (r > 0))
    r = np.where(active, r, 0.0)
    return r, np.where(active[..., None], jac, 0.0)


def _positive_definite(precision: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.all(np.linalg.eigvalsh(precision) > 1e-6, axis=1)


def _fit_chunk(y, d_base, theta, upper, lower, valid, half):
    with np.errstate(all="ignore"):  # trial steps may leave the valid region; they are rejected below
        return _fit_steps(y, d_base, theta, upper, lower, valid, half)


def _fit_steps(y, d_base, theta, upper, lower, valid, half):
    ndim = d_base.shape[1]
    lam = np.full(len(theta), 1e-3)

    def cost_of(t):
        value, jac, precision = _model(t, d_base, ndim)
        r, jac = _residuals(y, value, jac, upper, lower, valid)
        return np.sum(r * r, axis=1), r, jac, precision

    cost, r, jac, _ = cost_of(theta)
    done = np.zeros(len(theta), bool)
    for _ in range(FIT_ITERATIONS):
        jtj = np.einsum("nmi,nmj->nij", jac, jac)
        jtr = np.einsum("nmi,nm->ni", jac, r)
        diag = np.einsum("nii->ni", jtj)
        damped = jtj + (lam[:, None] * diag + 1e-12)[:, :, None] * np.eye(theta.shape[1])[None]
        with np.errstate(all="ignore"):
            try:
                step = np.linalg.solve(damped, jtr[..., None])[..., 0]
            except np.linalg.LinAlgError:
                step = np.stack([np.linalg.lstsq(a, b, rcond=None)[0] for a, b in zip(damped, jtr)])
        step = np.nan_to_num(step)
        step[done] = 0
        trial = theta + step
        new_cost, new_r, new_jac, precision = cost_of(trial)
        better = (new_cost < cost) & _positive_definite(precision) & (trial[:, ndim] > 0)
        better &= np.all(np.abs(trial[:, :ndim]) <= half, axis=1)
        theta = np.where(better[:, None], trial, theta)
        r = np.where(better[:, None], new_r, r)
        jac = np.where(better[:, None, None], new_jac, jac)
        small = np.all(np.abs(step[:, :ndim]) < 1e-7, axis=1)
        done |= better & small
        cost = np.where(better, new_cost, cost)
        lam = np.where(better, lam * 0.3, lam * 10)
        done |= lam > 1e10
        if done.all():
            break
    return theta, cost


def _gaussian_fit(heatmaps, owner, centres, sigma, background, amplitude):
    """Least-squares Gaussian with background and full covariance, Levenberg-Marquardt, censored clips."""
    ndim = centres.shape[1]
    n = len(centres)
    upper_map, lower_map = _censoring(heatmaps)
    coords = np.array(centres, dtype=np.float64)
    fallback = np.ones(n, bool)
    sigma_out = sigma.copy()
    amp_out = amplitude.copy()
    noise_out = np.full(n, np.nan)
    start, _ = _quadratic(heatmaps, owner, centres)
    for lo_i in range(0, n, FIT_CHUNK):
        part = slice(lo_i, min(lo_i + FIT_CHUNK, n))
        half = int(np.clip(np.ceil(2.5 * np.median(sigma[part])), 3, FIT_MAX_HALF[ndim]))
        w = windows(heatmaps, owner[part], centres[part], half).reshape(part.stop - part.start, -1)
        valid = np.isfinite(w)
        y = np.nan_to_num(w)
        d_base = _offsets(half, ndim).astype(np.float64)
        s0 = np.clip(sigma[part], 0.5, half)
        a0 = np.where(amplitude[part] > 0, amplitude[part], 1.0)
        theta = np.concatenate(
            [
                start[part] - centres[part],
                a0[:, None],
                background[part][:, None],
                np.stack([np.where(k == m, 1 / s0**2, 0.0) for k in range(ndim) for m in range(k, ndim)], axis=1),
            ],
            axis=1,
        )
        upper = upper_map[owner[part]]
        lower = lower_map[owner[part]]
        theta, cost = _fit_chunk(
            y, d_base, theta, np.nan_to_num(upper, nan=np.inf), np.nan_to_num(lower, nan=-np.inf), valid, half
        )
        _, _, precision = _model(theta, d_base, ndim)
        mu = centres[part] + theta[:, :ndim]
        spatial = np.array(heatmaps.shape[1:])
        ok = _positive_definite(precision) & (theta[:, ndim] > 0) & np.all(np.isfinite(theta), axis=1)
        ok &= np.all((mu >= 0) & (mu <= spatial - 1), axis=1) & np.all(np.abs(theta[:, :ndim]) <= half - 0.5, axis=1)
        coords[part] = np.where(ok[:, None], mu, centres[part])
        fallback[part] = ~ok
        with np.errstate(all="ignore"):
            det = np.linalg.det(np.where(ok[:, None, None], precision, np.eye(ndim)))
            sigma_out[part] = np.where(ok, det ** (-0.5 / ndim), sigma[part])
            amp_out[part] = np.where(ok, theta[:, ndim], amplitude[part])
            dof = np.maximum(valid.sum(axis=1) - theta.shape[1], 1)
            noise_out[part] = np.sqrt(cost / dof)
    return coords, fallback, sigma_out, amp_out, noise_out


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
        ``local``: half-width of the window in pixels; default ``max(2, ceil(2 * sigma))``.
    sigma : float, optional
        Peak width in pixels for ``dark``'s blur; default: estimated per peak.
    beta, normalize
        ``local``: as for the soft-argmax, applied within the window.

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
        return Refined(np.empty((0, heatmaps.ndim - 1)), np.empty(0, bool), empty, empty, empty)
    width, background, amplitude, noise = estimate_width(heatmaps, owner, centres)
    if sigma is not None:
        width = np.full(n, float(sigma))
    snr = None
    if method == "local":
        half = int(window) if window is not None else int(max(2, math.ceil(2 * float(np.median(width)))))
        coords, fallback = _local(heatmaps, owner, centres, half, beta, normalize)
    elif method == "quadratic":
        coords, fallback = _quadratic(heatmaps, owner, centres)
    elif method == "dark":
        coords, fallback = _dark(heatmaps, owner, centres, width)
    else:
        coords, fallback, width, amplitude, fit_noise = _gaussian_fit(
            heatmaps, owner, centres, width, background, amplitude
        )
        with np.errstate(all="ignore"):
            snr = np.where(fallback, amplitude / noise, amplitude / fit_noise)
    if snr is None:
        with np.errstate(all="ignore"):
            snr = amplitude / noise
    spatial = np.array(heatmaps.shape[1:]) - 1
    coords = np.clip(np.where(np.isfinite(coords), coords, centres), 0, spatial)
    return Refined(coords, fallback, width, amplitude, np.nan_to_num(snr, nan=0.0, posinf=np.finfo(float).max))


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
        a Gaussian with background and full covariance, saturated samples censored.
    ndim : {1, 2, 3}
    window : int, optional
        ``local`` only: half-width in pixels (default from the peak width).
    sigma : float, optional
        Peak width in pixels for ``dark``'s blur (default: estimated per peak).
    beta, normalize
        ``local`` only: as for :func:`peakloc.soft_argmax`, within the window.
    full_output : bool
        Return a :class:`Refined` (coordinates, fallback flags, sigma, amplitude, snr) shaped like `peaks`
        without its last axis, instead of the coordinates alone.

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
    from .core import _validate_heatmap

    heatmap, ndim = _validate_heatmap(heatmap, ndim)
    x = np.asarray(heatmap.detach().cpu().numpy() if hasattr(heatmap, "detach") else heatmap)
    batch_shape = x.shape[: x.ndim - ndim]
    points = np.asarray(peaks)
    if points.dtype.kind not in "iu":
        if points.size and not np.all(points == np.round(points)):
            raise PeaklocValueError("`peaks` must be integer positions (local maxima), e.g. from find_peaks")
        points = points.astype(np.int64)
    if points.ndim < 2 or points.shape[-1] != ndim or points.shape[:-2] != batch_shape:
        raise PeaklocValueError(f"`peaks` must have shape {batch_shape + ('P', ndim)}. Got: {points.shape}")
    spatial = np.array(x.shape[x.ndim - ndim :])
    if points.size and (np.any(points < 0) or np.any(points >= spatial)):
        raise PeaklocValueError("`peaks` must lie inside the heatmap")
    flat = x.reshape((-1,) + tuple(spatial))
    count = points.shape[-2]
    owner = np.repeat(np.arange(len(flat)), count)
    result = refine_flat(
        flat, owner, points.reshape(-1, ndim), method, window=window, sigma=sigma, beta=beta, normalize=normalize
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
    )
