"""Crowded spots: one fit for the spots that share pixels, and the test that splits a merged peak in two.

One point-spread function made every spot of a neighbourhood, so a group's model is a sum of isotropic
Gaussians of one shared width, each with its own centre and amplitude, over one background::

    value(x) = background + sum_k A_k exp(-|x - mu_k|^2 / (2 s^2))

fitted by Levenberg-Marquardt over the union of the spots' windows (parameters, in order: the centres, the
amplitudes, the background, then ``1 / s^2``). Its uncertainty is :func:`.gaussian.uncertainty`'s.

Two equal spots closer than 2 sigma have one maximum between them; the local-maximum rule then sees one
peak. :func:`two_spots` fits the two-spot model to such a peak, started from the one-spot fit's long axis,
and compares it with the one-spot fit (anisotropic Gaussian): the drop in the sum of squared residuals over
the noise variance is a likelihood-ratio statistic, about chi-square with one degree of freedom for a
single spot; the peak splits when it exceeds ``threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import gaussian

#: Iterations of a group's fit.
ITERATIONS = 60


@dataclass(frozen=True)
class GroupFit:
    """A group's joint fit: ``K`` spots in ``ndim`` dimensions.

    Attributes
    ----------
    centres : ndarray, shape ``(K, ndim)``
        Pixel coordinates, array-axis order.
    amplitudes : ndarray, shape ``(K,)``
    sigma, background : float
    errors : ndarray, shape ``(K, ndim)``
        1-sigma uncertainty of each centre, pixels.
    rss : float
        Sum of squared residuals over the samples used.
    used : int
        Samples used.
    ok : bool
        Converged to a valid model: positive amplitudes and width, centres within the box.
    """

    centres: np.ndarray
    amplitudes: np.ndarray
    sigma: float
    background: float
    errors: np.ndarray
    rss: float
    used: int
    ok: bool


def _model(theta: np.ndarray, points: np.ndarray, k: int, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """Value ``(M,)`` and Jacobian ``(M, P)`` of the group model at sample positions ``points`` ``(M, ndim)``."""
    mu = theta[: k * ndim].reshape(k, ndim)
    amp = theta[k * ndim : k * ndim + k]
    background, precision = theta[-2], theta[-1]
    d = points[:, None, :] - mu[None]  # (M, K, ndim)
    q = np.sum(d * d, axis=-1)
    e = np.exp(-0.5 * precision * q)  # (M, K)
    value = background + e @ amp
    jac = np.empty((len(points), len(theta)))
    jac[:, : k * ndim] = ((amp * e)[..., None] * precision * d).reshape(len(points), -1)
    jac[:, k * ndim : k * ndim + k] = e
    jac[:, -2] = 1.0
    jac[:, -1] = -0.5 * (amp * e * q).sum(axis=1)
    return value, jac


def fit_group(
    values: np.ndarray,
    points: np.ndarray,
    centres: np.ndarray,
    amplitudes: np.ndarray,
    background: float,
    sigma: float,
    lower: float = -np.inf,
    upper: float = np.inf,
    reach: float = np.inf,
    anchor: np.ndarray | None = None,
) -> GroupFit:
    """Fit ``K`` spots of one width jointly to the samples ``values`` ``(M,)`` at ``points`` ``(M, ndim)``.

    ``centres``, ``amplitudes``, ``background`` and ``sigma`` start the fit; samples that are NaN are left
    out, and samples at the clip levels ``lower`` and ``upper`` count only where the model disagrees with the
    clip (as in :mod:`.gaussian`). No centre ends more than ``reach`` pixels (on any axis) from its
    ``anchor`` (default its start): a spot may not wander onto its neighbour or off into the background.
    """
    anchor = centres if anchor is None else anchor
    k, ndim = centres.shape
    valid = np.isfinite(values)
    y = np.where(valid, values, 0.0)
    theta = np.concatenate([centres.ravel(), amplitudes, [background, 1 / max(sigma, 0.3) ** 2]]).astype(np.float64)
    low, high = points.min(axis=0), points.max(axis=0)
    upper_a, lower_a = np.array([upper], float), np.array([lower], float)

    def cost_of(t):
        value, jac = _model(t, points, k, ndim)
        r, jac = gaussian._residuals(y[None], value[None], jac[None], upper_a, lower_a, valid[None])
        return float(np.sum(r * r)), r[0], jac[0], value

    def acceptable(t):
        mu = t[: k * ndim].reshape(k, ndim)
        return bool(
            np.all(t[k * ndim : k * ndim + k] > 0)
            and t[-1] > 0
            and np.all((mu >= low) & (mu <= high))
            and np.all(np.abs(mu - anchor) <= reach)
        )

    with np.errstate(all="ignore"):
        cost, r, jac, value = cost_of(theta)
        lam = 1e-3
        for _ in range(ITERATIONS):
            jtj = jac.T @ jac
            damped = jtj + (lam * np.diag(jtj) + 1e-12) * np.eye(len(theta))
            try:
                step = np.linalg.solve(damped, jac.T @ r)
            except np.linalg.LinAlgError:
                break
            trial = theta + np.nan_to_num(step)
            new_cost, new_r, new_jac, new_value = cost_of(trial)
            if new_cost < cost and acceptable(trial):
                theta, cost, r, jac, value = trial, new_cost, new_r, new_jac, new_value
                lam *= 0.3
                if np.all(np.abs(step[: k * ndim]) < 1e-7):
                    break
            else:
                lam *= 10
                if lam > 1e10:
                    break
        ok = acceptable(theta) and bool(np.all(np.isfinite(theta)))
        errors = gaussian.uncertainty(
            r[None],
            jac[None],
            y[None],
            value[None],
            theta[-2:-1],
            lower_a,
            upper_a,
            ndim,
            background_column=k * ndim + k,
        )[0]
    used = int(np.count_nonzero(jac[:, -2]))
    return GroupFit(
        theta[: k * ndim].reshape(k, ndim).copy(),
        theta[k * ndim : k * ndim + k].copy(),
        float(theta[-1] ** -0.5) if theta[-1] > 0 else float("nan"),
        float(theta[-2]),
        errors[: k * ndim].reshape(k, ndim),
        cost,
        used,
        ok,
    )


def box(shape: tuple[int, ...], centres: np.ndarray, half: int) -> tuple[tuple[slice, ...], np.ndarray]:
    """The union of the windows of ``half`` pixels around ``centres`` ``(K, ndim)``, clipped to the map.

    Returns its slices, and the pixel coordinates of its samples ``(M, ndim)`` in C order.
    """
    low = np.maximum(centres.min(axis=0) - half, 0)
    high = np.minimum(centres.max(axis=0) + half + 1, np.array(shape))
    slices = tuple(slice(int(a), int(b)) for a, b in zip(low, high))
    grids = np.meshgrid(*[np.arange(s.start, s.stop, dtype=np.float64) for s in slices], indexing="ij")
    return slices, np.stack(grids, axis=-1).reshape(-1, len(shape))


@dataclass(frozen=True)
class Split:
    """The outcome of :func:`two_spots` for one peak."""

    statistic: float
    fit: GroupFit | None


def two_spots(
    heatmaps,
    b: int,
    centre: np.ndarray,
    mu: np.ndarray,
    covariance: np.ndarray,
    amplitude: float,
    background: float,
    one_spot_rss: float,
    half: int,
    lower: float = -np.inf,
    upper: float = np.inf,
) -> Split:
    """The two-spot model fitted to one peak, and its likelihood-ratio statistic against the one-spot fit.

    The peak is in heatmap ``b`` of ``heatmaps`` (``(B, *spatial)``, or a stack read in pieces). ``mu``,
    ``covariance`` ``(ndim, ndim)``, ``amplitude`` and ``background`` are the one-spot fit's (its
    Gaussian's covariance in pixels^2); ``one_spot_rss`` its sum of squared residuals over the same window,
    ``half`` pixels around the integer ``centre``. The two spots start at ``mu`` plus and minus the long
    axis's excess over the short one; the statistic is ``(one_spot_rss - rss_2) / (rss_2 / dof_2)``.
    """
    ndim = len(centre)
    slices, points = box(heatmaps.shape[1:], centre[None], half)
    values = _read_box(heatmaps, b, slices)
    eigenvalues, vectors = np.linalg.eigh(covariance)
    long_axis = vectors[:, -1]
    short = max(float(eigenvalues[0]), 0.09)
    offset = np.sqrt(max(float(eigenvalues[-1]) - short, 0.25 * short))
    start = np.stack([mu + offset * long_axis, mu - offset * long_axis])
    fit = fit_group(
        values, points, start, np.full(2, amplitude / 2), background, np.sqrt(short), lower, upper, reach=half - 0.5
    )
    if not fit.ok:
        return Split(0.0, None)
    dof = max(fit.used - (2 * ndim + 4), 1)
    variance = fit.rss / dof
    statistic = (one_spot_rss - fit.rss) / variance if variance > 0 else 0.0
    return Split(float(statistic), fit)


#: Largest group fitted jointly; a larger crowd keeps each peak's own fit.
MAX_GROUP = 8


def _read_box(heatmaps, b: int, slices: tuple[slice, ...]) -> np.ndarray:
    """Samples of heatmap ``b`` in ``slices``, float64, NaN where not finite (a stack read in pieces too)."""
    if isinstance(heatmaps, np.ndarray):
        values = np.asarray(heatmaps[(int(b),) + slices], dtype=np.float64)
    else:
        values = np.asarray(heatmaps.read(int(b), slices), dtype=np.float64)
    values = values.copy()
    values[~np.isfinite(values)] = np.nan
    return values.reshape(-1)


def overlapping(centres: np.ndarray, half: np.ndarray) -> list[np.ndarray]:
    """Groups (index arrays) of peaks whose windows overlap, directly or through others; singles left out.

    Examples
    --------
    >>> [g.tolist() for g in overlapping(np.array([[0, 0], [5, 0], [9, 0], [40, 40]]), np.array([3, 3, 3, 3]))]
    [[0, 1, 2]]
    """
    n = len(centres)
    if n < 2:
        return []
    # Pairs within reach, found along the first axis after sorting (each peak against the next few).
    order = np.argsort(centres[:, 0], kind="stable")
    first, second = [], []
    for shift in range(1, n):
        a, b = order[:-shift], order[shift:]
        close = centres[b, 0] - centres[a, 0] <= half[a] + half[b]
        if not close.any():
            break
        near = close & (np.abs(centres[a] - centres[b]).max(axis=1) <= half[a] + half[b])
        first.append(a[near])
        second.append(b[near])
    if not first or not sum(len(f) for f in first):
        return []
    first, second = np.concatenate(first), np.concatenate(second)
    # Connected components: every peak takes the smallest label among its neighbours until none changes.
    label = np.arange(n)
    while True:
        smallest = np.minimum(label[first], label[second])
        new = label.copy()
        np.minimum.at(new, first, smallest)
        np.minimum.at(new, second, smallest)
        new = new[new]  # follow labels to their own labels: halves the rounds
        if np.array_equal(new, label):
            break
        label = new
    values, counts = np.unique(label, return_counts=True)
    members = np.argsort(label, kind="stable")
    groups = np.split(members, np.cumsum(counts)[:-1])
    return [g for g, c in zip(groups, counts) if c > 1]


def fit_groups(heatmaps, owner: np.ndarray, centres: np.ndarray, fits) -> None:
    """Fit jointly the peaks of one heatmap whose windows overlap, in place of their own fits.

    ``fits`` is :func:`.gaussian.fit_peaks`'s; a group whose joint fit fails (or of more than
    :data:`MAX_GROUP` peaks) keeps its peaks' own fits.
    """
    ndim = centres.shape[1]
    for b in np.unique(owner):
        mine = np.flatnonzero(owner == b)
        if len(mine) < 2:
            continue
        for group in overlapping(centres[mine], np.maximum(fits.half[mine], 1)):
            members = mine[group]
            if len(members) > MAX_GROUP:
                continue
            half = int(fits.half[members].max())
            slices, points = box(heatmaps.shape[1:], centres[members], half)
            good = ~fits.fallback[members]
            # From the local maxima: each peak's own fit is pulled towards its neighbours, the very bias
            # the joint fit removes.
            start = centres[members].astype(np.float64)
            amplitudes = np.where(good & (fits.amplitude[members] > 0), fits.amplitude[members], 1.0)
            amplitudes = np.where(np.isfinite(amplitudes), amplitudes, 1.0)
            sigma = float(np.median(fits.sigma[members]))
            values = _read_box(heatmaps, b, slices)
            reach = max(1.5, half - 0.5)

            rest = (
                amplitudes,
                float(np.median(fits.background[members])),
                sigma,
                float(fits.lower[members[0]]),
                float(fits.upper[members[0]]),
            )
            fit = fit_group(values, points, start, *rest, reach=reach, anchor=start)
            if not fit.ok or np.any(np.abs(fit.centres - start) > reach - 0.5):
                # Failed, or a spot pressed against the edge of its reach (a local minimum): start again
                # from the peaks' own fits and keep the better.
                own = np.where(good[:, None], fits.coords[members], start)
                again = fit_group(values, points, own, *rest, reach=reach, anchor=start)
                candidates = [c for c in (fit, again) if c.ok]
                if not candidates:
                    continue
                fit = min(candidates, key=lambda c: c.rss)
            fits.coords[members] = fit.centres
            fits.fallback[members] = False
            fits.sigma[members] = fit.sigma
            fits.amplitude[members] = fit.amplitudes
            fits.background[members] = fit.background
            fits.noise[members] = np.sqrt(fit.rss / max(fit.used - (len(members) * (ndim + 1) + 2), 1))
            fits.error[members] = fit.errors


#: ``--split-threshold``'s default: single noisy spots exceed it in well under 1% of maps, and equal pairs
#: 2 sigma apart (amplitude 1, noise 0.05, sigma 2) in all (make bench-accuracy).
SPLIT_THRESHOLD = 20.0
#: Only peaks at least this many noise levels high are tested for a second spot.
SPLIT_MIN_SNR = 5.0


def split_merged(heatmaps, owner: np.ndarray, centres: np.ndarray, fits, threshold: float) -> list[np.ndarray | None]:
    """Per peak, the two spots ``(2, ndim)`` it splits into, or None.

    Only peaks whose own fit worked, stands :data:`SPLIT_MIN_SNR` noise levels high, and whose window overlaps
    no other peak's are tested (a bump of noise has no two spots to find; a neighbour's tail is not a second
    spot); a peak splits when :func:`two_spots`'s statistic exceeds ``threshold`` and the two
    spots land on different pixels.
    """
    out: list[np.ndarray | None] = [None] * len(centres)
    crowded = np.zeros(len(centres), bool)
    for b in np.unique(owner):
        mine = np.flatnonzero(owner == b)
        for group in overlapping(centres[mine], np.maximum(fits.half[mine], 1)):
            crowded[mine[group]] = True
    with np.errstate(all="ignore"):
        standing = fits.amplitude >= SPLIT_MIN_SNR * fits.noise
    for i in np.flatnonzero(~fits.fallback & ~crowded & standing):
        found = two_spots(
            heatmaps,
            int(owner[i]),
            centres[i],
            fits.coords[i],
            fits.covariance[i],
            float(fits.amplitude[i]),
            float(fits.background[i]),
            float(fits.rss[i]),
            int(fits.half[i]),
            float(fits.lower[i]),
            float(fits.upper[i]),
        )
        if found.fit is None or not found.statistic > threshold:
            continue
        pixels = np.rint(found.fit.centres).astype(np.int64)
        if np.array_equal(pixels[0], pixels[1]):
            continue
        out[i] = found.fit.centres
    return out
