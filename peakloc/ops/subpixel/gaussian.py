"""``gaussian``: least-squares Gaussian with background and full covariance, Levenberg-Marquardt.

Each peak's window is ``ceil(2.5 sigma)`` pixels each side of its own sigma estimate (3 to
:data:`FIT_MAX_HALF`); peaks that share a window size are fitted together, in chunks of :data:`FIT_CHUNK`,
every peak's fit independent of the others. Saturated and floored samples are censored: a clipped sample
only counts where the model disagrees with the clip.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ...backends import numpy_backend
from ..windows import PeakShape, groups, near_pairs, nearer_to_others, offsets, windows
from .quadratic import vertex

#: Largest half-width of the Gaussian fit's window (3-D windows grow as its cube).
FIT_MAX_HALF = {1: 16, 2: 10, 3: 6}
FIT_ITERATIONS = 40
#: A fit also stops where its centres move less than this (px) for a cost that drops by less than
#: COST_TOLERANCE of itself: the rest of the way is well below every error bar (10^-4 px and less).
STEP_TOLERANCE = 1e-4
COST_TOLERANCE = 1e-9
#: Farthest (pixels) a fit may take a peak from its own local maximum where another peak is near: "about a
#: pixel" (a spot's centre lies within 0.87 px of its local maximum without noise, in 3-D); beyond, the fit
#: has taken in a neighbour, and the peak keeps its integer position (``fallback``).
CROWDED_PULL = 1.25
#: Peaks fitted together: bounds the fit's Jacobian to a few tens of MB.
FIT_CHUNK = 256
#: Most Jacobian values of a chunk (16 MiB of float64; a step holds several such arrays, on each thread).
FIT_VALUES = 1 << 19


def clip_levels(hi, lo, count_hi, count_lo, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Per heatmap, the level above which values are clipped (saturated) and below which (floored), or NaN.

    Saturated: the dtype's maximum in an integer map, or a maximum shared by three or more pixels (a
    clipped plateau). Floored: a minimum of 0 shared by three or more pixels (noise clipped at zero,
    quantised background). Takes each map's finite extremes and how many values equal each.
    """
    hi, lo = np.asarray(hi, np.float64), np.asarray(lo, np.float64)
    saturated = np.asarray(count_hi) >= 3
    if np.dtype(dtype).kind in "ui":
        saturated |= hi == np.iinfo(dtype).max
    upper = np.where(saturated & (lo < hi), hi, np.nan)
    lower = np.where((np.asarray(count_lo) >= 3) & (lo == 0) & (lo < hi), lo, np.nan)
    return upper, lower


def clip_levels_of(stats, dtype) -> tuple[np.ndarray, np.ndarray]:
    """:func:`clip_levels` of maps read in pieces, from each one's extremes and counts (no pass over the data).

    ``stats``: one object per map with ``hi``, ``lo``, ``count_hi`` and ``count_lo``
    (:class:`peakloc.ops.streaming.MapStats`).
    """
    columns = [[getattr(s, name) for s in stats] for name in ("hi", "lo", "count_hi", "count_lo")]
    return clip_levels(*columns, dtype)


def censoring(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`clip_levels` of in-memory heatmaps ``(B, *spatial)``.

    In the maps' own dtype (extremes and equalities are exact in any), a few maps at a time: no float64 copy
    of the stack (128 MiB for a 1000-frame movie of 128x128).
    """
    flat = heatmaps.reshape(len(heatmaps), -1)
    columns = np.empty((4, len(flat)))
    step = max(1, CENSOR_VALUES // max(1, flat.shape[1]))
    for k in range(0, len(flat), step):
        part = flat[k : k + step]
        if part.dtype.kind == "f":
            part = np.where(np.isfinite(part), part, np.nan)
        with warnings.catch_warnings():  # a map of NaN only: NaN extremes, as before
            warnings.simplefilter("ignore", RuntimeWarning)
            hi = np.nanmax(part, axis=1) if part.dtype.kind == "f" else part.max(axis=1)
            lo = np.nanmin(part, axis=1) if part.dtype.kind == "f" else part.min(axis=1)
        columns[:, k : k + step] = hi, lo, np.sum(part == hi[:, None], axis=1), np.sum(part == lo[:, None], axis=1)
    return clip_levels(*columns, heatmaps.dtype)


#: Values :func:`censoring` compares at once.
CENSOR_VALUES = 1 << 22


def model(theta: np.ndarray, d_base: np.ndarray, ndim: int):
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
    jac[~active] = 0.0  # in place: the Jacobian is the caller's fresh array, and it is the largest
    return r, jac


def _positive_definite(precision: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.all(np.linalg.eigvalsh(precision) > 1e-6, axis=1)


def _solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a[n] @ x[n] = b[n]`` for every ``n``; a singular system gets its least-squares answer.

    A singular system makes the batched solve fail as a whole; each system is then solved alone, so that
    no peak's step depends on whether another peak's system was singular.
    """
    try:
        return np.linalg.solve(a, b[..., None])[..., 0]
    except np.linalg.LinAlgError:
        out = np.empty(b.shape)
        for n in range(len(a)):
            try:
                out[n] = np.linalg.solve(a[n], b[n])
            except np.linalg.LinAlgError:
                out[n] = np.linalg.lstsq(a[n], b[n], rcond=None)[0]
        return out


def settled(step: np.ndarray, cost: np.ndarray, new_cost: np.ndarray) -> np.ndarray:
    """Whether a Levenberg-Marquardt step, where accepted, ends its fit.

    It does where the centres moved less than 1e-7 px, or less than :data:`STEP_TOLERANCE` px for a relative
    drop of the cost below :data:`COST_TOLERANCE`. ``step`` ``(N, ...)``: the centres' part of each step;
    ``cost``, ``new_cost`` ``(N,)``: before and after.
    """
    moved = np.abs(step).reshape(len(step), -1).max(axis=1, initial=0)
    return (moved < 1e-7) | ((moved < STEP_TOLERANCE) & (cost - new_cost <= COST_TOLERANCE * cost))


def _fit_chunk(y, d_base, theta, upper, lower, valid, half):
    with np.errstate(all="ignore"):  # trial steps may leave the valid region; they are rejected below
        return _fit_steps(y, d_base, theta, upper, lower, valid, half)


def _fit_steps(y, d_base, theta, upper, lower, valid, half):
    """Levenberg-Marquardt steps, each on the peaks still moving only: a peak's fit is its own alone."""
    ndim = d_base.shape[1]
    theta = theta.copy()
    lam = np.full(len(theta), 1e-3)
    eye = np.eye(theta.shape[1])[None]

    def cost_of(t, rows):
        value, jac, precision = model(t, d_base, ndim)
        r, jac = _residuals(y[rows], value, jac, upper[rows], lower[rows], valid[rows])
        return np.sum(r * r, axis=1), r, jac, precision

    cost, r, jac, _ = cost_of(theta, slice(None))
    done = np.zeros(len(theta), bool)
    for _ in range(FIT_ITERATIONS):
        rows = np.flatnonzero(~done)
        if not len(rows):
            break
        jac_a, r_a, lam_a, theta_a = jac[rows], r[rows], lam[rows], theta[rows]
        jtj = np.einsum("nmi,nmj->nij", jac_a, jac_a)
        jtr = np.einsum("nmi,nm->ni", jac_a, r_a)
        diag = np.einsum("nii->ni", jtj)
        damped = jtj + (lam_a[:, None] * diag + 1e-12)[:, :, None] * eye
        with np.errstate(all="ignore"):
            step = _solve(damped, jtr)
        step = np.nan_to_num(step)
        trial = theta_a + step
        new_cost, new_r, new_jac, precision = cost_of(trial, rows)
        better = (new_cost < cost[rows]) & _positive_definite(precision) & (trial[:, ndim] > 0)
        better &= np.all(np.abs(trial[:, :ndim]) <= half, axis=1)
        # Only the accepted steps are written back: a whole Jacobian's copy per iteration was the loop's
        # largest memory traffic.
        moved = rows[better]
        theta[moved] = trial[better]
        r[moved] = new_r[better]
        jac[moved] = new_jac[better]
        small = settled(step[:, :ndim], cost[rows], new_cost)
        cost[rows] = np.where(better, new_cost, cost[rows])
        lam[rows] = np.where(better, lam_a * 0.3, lam_a * 10)
        done[rows] |= (better & small) | (lam[rows] > 1e10)
    return theta, cost


#: Samples whose value or fit lies within this many noise levels of a clip level count as clipped for the
#: uncertainty (measured best of 0, 1, 1.5 and 2 on zero-clipped maps in make bench-accuracy).
NEAR_CLIP = 1.5


def uncertainty(
    r: np.ndarray,
    jac: np.ndarray,
    y: np.ndarray,
    value: np.ndarray,
    background: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    ndim: int,
    background_column: int | None = None,
) -> np.ndarray:
    """1-sigma standard errors of the fitted centres ``(N, ndim)``, pixels: the fit's covariance.

    Parameters
    ----------
    r, jac : ndarray, shapes ``(N, M)`` and ``(N, M, P)``
        Residuals and Jacobian at the converged fit, zero on the samples the fit left out
        (:func:`_residuals`).
    y, value : ndarray, shape ``(N, M)``
        The samples and the fitted model; ``background`` ``(N,)`` the model's background.
    lower, upper : ndarray, shape ``(N,)``
        Each peak's clip levels (``-inf``, ``inf`` where none).
    background_column : int, optional
        The background's parameter (default ``ndim + 1``, :func:`model`'s). With it given, the standard
        errors of every parameter ``(N, P)`` come back, not the centre's alone.

    The noise's variance is modelled per peak as ``a + b * (value - background)``, ``a, b >= 0``: white noise
    (``b = 0``) and shot noise (a variance that grows with the signal) alike. It is fitted to the squared
    residuals divided by ``1 - h``, ``h`` each sample's leverage (the share of its noise the fit absorbed:
    peak samples have the most). Samples at a clip level, or whose value or fit lies within
    :data:`NEAR_CLIP` noise levels of one, are left out: the clip cuts their noise off, and they pull the fit
    without the information of exact samples. The least-squares fit's covariance is then the sandwich
    ``H^-1 J^T V J H^-1``, ``H = J^T J``, ``V`` the modelled variances. Calibrated in ``make bench-accuracy``.
    """
    column = ndim + 1 if background_column is None else background_column
    used = jac[..., column] != 0  # the background's derivative is 1 on every sample the fit used
    x = value - background[:, None]
    kept = used & (y > lower[:, None]) & (y < upper[:, None])
    a, b, _, _ = _noise_model(r, jac, x, kept)
    near = NEAR_CLIP * np.sqrt(np.maximum(a[:, None] + b[:, None] * x, 0))
    kept &= (np.minimum(y, value) > lower[:, None] + near) & (np.maximum(y, value) < upper[:, None] - near)
    a, b, jac, inverse = _noise_model(r, jac, x, kept)
    variance = (a[:, None] + b[:, None] * x) * kept
    cov = inverse @ (jac.transpose(0, 2, 1) @ (variance[..., None] * jac)) @ inverse
    errors = np.sqrt(np.clip(np.einsum("nii->ni", cov), 0, None))
    return errors[:, :ndim] if background_column is None else errors


def _pinv(a: np.ndarray) -> np.ndarray:
    """Pseudo-inverses of ``a`` ``(N, P, P)``; NaN for a matrix that is not finite or has no SVD.

    Damaged data can give such a matrix: one of them never fails the others.
    """
    finite = np.all(np.isfinite(a), axis=(1, 2))
    safe = np.where(finite[:, None, None], a, np.eye(a.shape[-1]))
    try:
        out = np.linalg.pinv(safe)
    except np.linalg.LinAlgError:
        out = np.empty_like(safe)
        for n in range(len(safe)):
            try:
                out[n] = np.linalg.pinv(safe[n])
            except np.linalg.LinAlgError:
                out[n] = np.nan
    out[~finite] = np.nan
    return out


def _noise_model(r: np.ndarray, jac: np.ndarray, x: np.ndarray, kept: np.ndarray):
    """``a, b >= 0`` per peak of the variance ``a + b * x`` of the ``kept`` samples, from their residuals.

    Also returns the Jacobian restricted to the kept samples and the pseudo-inverse of its ``J^T J``, which
    the covariance reuses.
    """
    m = kept.sum(axis=1).astype(np.float64)
    x = np.where(kept, x, 0.0)
    jac = np.where(kept[..., None], jac, 0.0)
    inverse = _pinv(jac.transpose(0, 2, 1) @ jac)
    leverage = np.sum((jac @ inverse) * jac, axis=-1)
    y = np.where(kept, r * r / np.clip(1 - leverage, 0.05, None), 0.0)
    s1, s2, t0, t1 = x.sum(axis=1), (x * x).sum(axis=1), y.sum(axis=1), (x * y).sum(axis=1)
    # Least squares of y on (1, x), then the constraints: b < 0 becomes b = 0, a < 0 a line through zero.
    det = m * s2 - s1 * s1
    b = np.where(det > 0, (m * t1 - s1 * t0) / np.where(det > 0, det, 1), 0.0)
    a = (t0 - b * s1) / np.maximum(m, 1)
    flat = b <= 0
    a, b = np.where(flat, t0 / np.maximum(m, 1), a), np.where(flat, 0.0, b)
    through_zero = a < 0
    a, b = np.where(through_zero, 0.0, a), np.where(through_zero, t1 / np.where(s2 > 0, s2, 1), b)
    return a, b, jac, inverse


def _chunk(half: int, ndim: int) -> int:
    """Peaks fitted together in windows of ``half``: :data:`FIT_CHUNK`, or fewer.

    Fewer where their Jacobian would pass :data:`FIT_VALUES` (3-D windows: 2197 samples by 11 parameters a peak).
    """
    per_peak = (2 * half + 1) ** ndim * (2 + ndim + ndim * (ndim + 1) // 2)
    return max(1, min(FIT_CHUNK, FIT_VALUES // per_peak))


def fit_window(sigma: np.ndarray, ndim: int) -> np.ndarray:
    """Half-width of each peak's fit window from its own sigma: ``ceil(2.5 sigma)``, 3 to FIT_MAX_HALF."""
    return np.clip(np.ceil(2.5 * sigma), 3, FIT_MAX_HALF[ndim]).astype(np.int64)


def neighbours(owner: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(i, j)`` of peaks of one heatmap near enough to share samples of a fit window."""
    return near_pairs(owner, centres, 2 * FIT_MAX_HALF[centres.shape[1]])


def _fit(heatmaps, owner, centres, start, shape: PeakShape, bounds, half: int, near=None):
    """Fit peaks that share a window half-width: coordinates, fallback, sigma, amplitude, residual noise.

    ``near`` ``(rows, offsets)``: each neighbouring peak's window row and its offset from that window's
    peak. A window's samples nearer to a neighbour than to its own peak are left out: they hold the
    neighbour's spot, which would pull a single Gaussian towards it (in crowded 3-D fields, one spot in four),
    and a fit beside a neighbour may not move its peak more than :data:`CROWDED_PULL`.
    """
    n, ndim = centres.shape
    sigma, amplitude = shape.sigma, shape.amplitude
    w = windows(heatmaps, owner, centres, half).reshape(n, -1)
    valid = np.isfinite(w)
    y = np.nan_to_num(w)
    d_base = offsets(half, ndim).astype(np.float64)
    crowded = np.zeros(n, bool)
    if near is not None:
        valid &= ~nearer_to_others(d_base, near[0], near[1].astype(np.float64), n)
        crowded[near[0]] = True
    s0 = np.clip(sigma, 0.5, half)
    a0 = np.where(amplitude > 0, amplitude, 1.0)
    theta = np.concatenate(
        [
            start - centres,
            a0[:, None],
            shape.background[:, None],
            np.stack([np.where(k == m, 1 / s0**2, 0.0) for k in range(ndim) for m in range(k, ndim)], axis=1),
        ],
        axis=1,
    )
    upper, lower = np.nan_to_num(bounds[0][owner], nan=np.inf), np.nan_to_num(bounds[1][owner], nan=-np.inf)
    theta, cost = _fit_chunk(y, d_base, theta, upper, lower, valid, half)
    value, jac, precision = model(theta, d_base, ndim)
    with np.errstate(all="ignore"):
        r, used = _residuals(y, value, jac, upper, lower, valid)
        error = uncertainty(r, used, y, value, theta[:, ndim + 1], lower, upper, ndim)
    mu = centres + theta[:, :ndim]
    spatial = np.array(heatmaps.shape[1:])
    ok = _positive_definite(precision) & (theta[:, ndim] > 0) & np.all(np.isfinite(theta), axis=1)
    ok &= np.all((mu >= 0) & (mu <= spatial - 1), axis=1) & np.all(np.abs(theta[:, :ndim]) <= half - 0.5, axis=1)
    # Beside a neighbour, a centre far from its own local maximum has fitted two spots as one (or the other).
    ok &= ~crowded | (np.linalg.norm(theta[:, :ndim], axis=1) <= CROWDED_PULL)
    with np.errstate(all="ignore"):
        det = np.linalg.det(np.where(ok[:, None, None], precision, np.eye(ndim)))
        dof = np.maximum(valid.sum(axis=1) - theta.shape[1], 1)
        covariance = np.linalg.inv(np.where(ok[:, None, None], precision, np.eye(ndim)))
        return Fits(
            np.where(ok[:, None], mu, centres),
            ~ok,
            np.where(ok, det ** (-0.5 / ndim), sigma),
            np.where(ok, theta[:, ndim], amplitude),
            np.where(ok, theta[:, ndim + 1], shape.background),
            np.sqrt(cost / dof),
            np.where(ok[:, None], error, np.nan),
            covariance,
            cost,
            np.full(n, half),
            lower,
            upper,
        )


@dataclass
class Fits:
    """Each peak's own fit, ``N`` peaks: what :func:`locate` reports, and what the two-spot test needs.

    ``coords`` ``(N, ndim)``; ``fallback``, ``sigma``, ``amplitude``, ``background``, ``noise`` (residual
    standard deviation), ``rss`` (sum of squared residuals), ``half`` (window half-width), ``lower`` and
    ``upper`` (clip levels) ``(N,)``; ``error`` ``(N, ndim)``; ``covariance`` ``(N, ndim, ndim)`` the fitted
    Gaussian's, pixels^2.
    """

    coords: np.ndarray
    fallback: np.ndarray
    sigma: np.ndarray
    amplitude: np.ndarray
    background: np.ndarray
    noise: np.ndarray
    error: np.ndarray
    covariance: np.ndarray
    rss: np.ndarray
    half: np.ndarray
    lower: np.ndarray
    upper: np.ndarray

    def take(self, part, other: Fits) -> None:
        """Set peaks ``part`` from ``other`` (the fits of those peaks alone), in place."""
        for name in self.__dataclass_fields__:
            getattr(self, name)[part] = getattr(other, name)

    def rows(self, index) -> Fits:
        """The fits of peaks ``index``, a new :class:`Fits`."""
        return Fits(**{name: getattr(self, name)[index] for name in self.__dataclass_fields__})


def fit_peaks(
    heatmaps: np.ndarray,
    owner: np.ndarray,
    centres: np.ndarray,
    shape: PeakShape,
    clip_levels: tuple[np.ndarray, np.ndarray] | None = None,
    threads: int | None = None,
    known: tuple[np.ndarray, Fits] | None = None,
) -> Fits:
    """Each peak's own fit (see the module), in windows of its own size.

    Chunks of peaks run on ``threads`` threads (default: one per core, at most 8). ``known`` is
    ``(rows, fits)``: peak ``i`` with ``rows[i] >= 0`` takes row ``rows[i]`` of ``fits``, an earlier call's
    fits of the same peaks with the same shape estimates, clip levels and :func:`neighbours` (a fit depends
    on nothing else), instead of being fitted again.
    """
    n, ndim = centres.shape
    fits = Fits(
        centres.astype(np.float64),
        np.ones(n, bool),
        shape.sigma.copy(),
        shape.amplitude.copy(),
        shape.background.copy(),
        shape.noise.copy(),
        np.full((n, ndim), np.nan),
        np.tile(np.eye(ndim), (n, 1, 1)),
        np.full(n, np.nan),
        np.zeros(n, np.int64),
        np.full(n, -np.inf),
        np.full(n, np.inf),
    )
    todo = np.arange(n)
    if known is not None:
        rows, earlier = known
        have = rows >= 0
        fits.take(np.flatnonzero(have), earlier.rows(rows[have]))
        todo = np.flatnonzero(~have)
        if not len(todo):
            return fits
    start, _ = vertex(heatmaps, owner, centres)
    bounds = clip_levels if clip_levels is not None else censoring(heatmaps)
    chunks = [
        (half, todo[members[lo : lo + size]])
        for half, members in groups(fit_window(shape.sigma[todo], ndim))
        for size in [_chunk(half, ndim)]
        for lo in range(0, len(members), size)
    ]

    first, second = neighbours(owner, centres)

    def fit(chunk: tuple[int, np.ndarray]) -> Fits:
        half, part = chunk
        peak_shape = PeakShape(shape.sigma[part], shape.background[part], shape.amplitude[part], shape.noise[part])
        row = np.full(n, -1)
        row[part] = np.arange(len(part))
        mine = row[first] >= 0
        near = (row[first[mine]], centres[second[mine]] - centres[first[mine]])
        fitted = _fit(heatmaps, owner[part], centres[part], start[part], peak_shape, bounds, half, near)
        fitted.noise = np.where(fitted.fallback, shape.noise[part], fitted.noise)
        return fitted

    # The chunks are independent and NumPy releases the GIL in their loops: threads share them out.
    threads = numpy_backend.DEFAULT_THREADS if threads is None else max(1, int(threads))
    for (_, part), fitted in zip(chunks, numpy_backend.map_in_threads(fit, chunks, threads)):
        fits.take(part, fitted)
    return fits
