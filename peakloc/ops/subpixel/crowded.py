"""Crowded spots: one fit for the spots that share pixels, and the test that splits a merged peak in two.

One point-spread function made every spot of a neighbourhood, so a group's model is a sum of isotropic
Gaussians of one shared width, each with its own centre and amplitude, over one background::

    value(x) = background + sum_k A_k exp(-|x - mu_k|^2 / (2 s^2))

fitted by Levenberg-Marquardt over the union of the spots' windows (parameters, in order: the centres, the
amplitudes, the background, then ``1 / s^2``). Its uncertainty is :func:`.gaussian.uncertainty`'s.

Two equal spots closer than 2 sigma have one maximum between them; the local-maximum rule then sees one
peak. :func:`split_merged` fits the two-spot model to such a peak, started from the one-spot fit's long
axis, and compares it with the one-spot fit (anisotropic Gaussian): the drop in the sum of squared residuals over
the noise variance is a likelihood-ratio statistic, about chi-square with one degree of freedom for a
single spot; the peak splits when it exceeds ``threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..windows import PeakShape
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
    """Value ``(G, M)`` and Jacobian ``(G, M, P)`` of ``G`` groups' models at their samples ``(G, M, ndim)``."""
    n = len(theta)
    mu = theta[:, : k * ndim].reshape(n, k, ndim)
    amp = theta[:, k * ndim : k * ndim + k]
    background, precision = theta[:, -2], theta[:, -1]
    d = points[:, :, None, :] - mu[:, None, :, :]  # (G, M, K, ndim)
    q = np.sum(d * d, axis=-1)
    e = np.exp(-0.5 * precision[:, None, None] * q)  # (G, M, K)
    weighted = amp[:, None, :] * e
    value = background[:, None] + weighted.sum(axis=-1)
    jac = np.empty(value.shape + (theta.shape[1],))
    jac[..., : k * ndim] = (weighted[..., None] * precision[:, None, None, None] * d).reshape(n, points.shape[1], -1)
    jac[..., k * ndim : k * ndim + k] = e
    jac[..., -2] = 1.0
    jac[..., -1] = -0.5 * (weighted * q).sum(axis=-1)
    return value, jac


def fit_groups_of(
    values: np.ndarray,
    points: np.ndarray,
    centres: np.ndarray,
    amplitudes: np.ndarray,
    background: np.ndarray,
    sigma: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    reach: np.ndarray,
    anchor: np.ndarray,
) -> list[GroupFit]:
    """:func:`fit_group` for ``G`` groups of ``K`` spots at once, each group's fit its own.

    ``values`` ``(G, M)`` (NaN: no sample), ``points``
    ``(G, M, ndim)``, ``centres`` and ``anchor`` ``(G, K, ndim)``, ``amplitudes`` ``(G, K)``, the rest ``(G,)``.
    """
    g, k, ndim = centres.shape
    valid = np.isfinite(values)
    y = np.where(valid, values, 0.0)
    theta = np.concatenate(
        [centres.reshape(g, -1), amplitudes, background[:, None], (1 / np.maximum(sigma, 0.3) ** 2)[:, None]], axis=1
    ).astype(np.float64)
    big = (
        np.where(valid[..., None], points, np.inf).min(axis=1),
        np.where(valid[..., None], points, -np.inf).max(axis=1),
    )
    low, high = big
    eye = np.eye(theta.shape[1])[None]

    def evaluate(t, rows):
        value, jac = _model(t, points[rows], k, ndim)
        r, jac = gaussian._residuals(y[rows], value, jac, upper[rows], lower[rows], valid[rows])
        return np.sum(r * r, axis=1), r, jac, value

    def acceptable(t, rows):
        mu = t[:, : k * ndim].reshape(len(t), k, ndim)
        return (
            np.all(t[:, k * ndim : k * ndim + k] > 0, axis=1)
            & (t[:, -1] > 0)
            & np.all((mu >= low[rows][:, None]) & (mu <= high[rows][:, None]), axis=(1, 2))
            & np.all(np.abs(mu - anchor[rows]) <= reach[rows][:, None, None], axis=(1, 2))
        )

    everything = np.arange(g)
    with np.errstate(all="ignore"):
        cost, r, jac, value = evaluate(theta, everything)
        lam = np.full(g, 1e-3)
        done = np.zeros(g, bool)
        for _ in range(ITERATIONS):
            rows = np.flatnonzero(~done)
            if not len(rows):
                break
            active = jac[rows]
            transposed = active.transpose(0, 2, 1)
            jtj = transposed @ active  # batched BLAS: several times faster than einsum here
            jtr = (transposed @ r[rows][..., None])[..., 0]
            damped = jtj + (lam[rows, None] * np.einsum("nii->ni", jtj) + 1e-12)[:, :, None] * eye
            step = np.nan_to_num(gaussian._solve(damped, jtr))
            trial = theta[rows] + step
            new_cost, new_r, new_jac, new_value = evaluate(trial, rows)
            before = cost[rows]
            better = (new_cost < before) & acceptable(trial, rows)
            moved = rows[better]  # only accepted steps are written back
            theta[moved] = trial[better]
            cost[moved] = new_cost[better]
            r[moved] = new_r[better]
            jac[moved] = new_jac[better]
            value[moved] = new_value[better]
            lam[rows] = np.where(better, lam[rows] * 0.3, lam[rows] * 10)
            small = gaussian.settled(step[:, : k * ndim], before, new_cost)
            done[rows] |= (better & small) | (lam[rows] > 1e10)
        ok = acceptable(theta, everything) & np.all(np.isfinite(theta), axis=1)
        errors = gaussian.uncertainty(
            r, jac, y, value, theta[:, -2], lower, upper, ndim, background_column=k * ndim + k
        )
    used = np.count_nonzero(jac[..., -2], axis=1)
    return [
        GroupFit(
            theta[i, : k * ndim].reshape(k, ndim).copy(),
            theta[i, k * ndim : k * ndim + k].copy(),
            float(theta[i, -1] ** -0.5) if theta[i, -1] > 0 else float("nan"),
            float(theta[i, -2]),
            errors[i, : k * ndim].reshape(k, ndim),
            float(cost[i]),
            int(used[i]),
            bool(ok[i]),
        )
        for i in range(g)
    ]


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
    one = lambda v: np.array([v], dtype=np.float64)  # noqa: E731
    return fit_groups_of(
        np.asarray(values, np.float64)[None],
        np.asarray(points, np.float64)[None],
        np.asarray(centres, np.float64)[None],
        np.asarray(amplitudes, np.float64)[None],
        one(background),
        one(sigma),
        one(lower),
        one(upper),
        one(reach),
        np.asarray(anchor, np.float64)[None],
    )[0]


def box(shape: tuple[int, ...], centres: np.ndarray, half: int) -> tuple[tuple[slice, ...], np.ndarray]:
    """The union of the windows of ``half`` pixels around ``centres`` ``(K, ndim)``, clipped to the map.

    Returns its slices, and the pixel coordinates of its samples ``(M, ndim)`` in C order.
    """
    low = np.maximum(centres.min(axis=0) - half, 0)
    high = np.minimum(centres.max(axis=0) + half + 1, np.array(shape))
    slices = tuple(slice(int(a), int(b)) for a, b in zip(low, high))
    grids = np.meshgrid(*[np.arange(s.start, s.stop, dtype=np.float64) for s in slices], indexing="ij")
    return slices, np.stack(grids, axis=-1).reshape(-1, len(shape))


def _split_job(heatmaps, b: int, centre, mu, covariance, amplitude, background, half, lower, upper) -> _Job:
    """The two-spot fit of one peak: its window, and two starts along its own fit's long axis."""
    slices, points = box(heatmaps.shape[1:], centre[None], half)
    eigenvalues, vectors = np.linalg.eigh(covariance)
    long_axis = vectors[:, -1]
    short = max(float(eigenvalues[0]), 0.09)
    offset = np.sqrt(max(float(eigenvalues[-1]) - short, 0.25 * short))
    start = np.stack([mu + offset * long_axis, mu - offset * long_axis])
    return _Job(
        np.empty(0, np.int64),
        _read_box(heatmaps, b, slices),
        points,
        start,
        start,
        np.full(2, amplitude / 2),
        float(background),
        float(np.sqrt(short)),
        float(lower),
        float(upper),
        half - 0.5,
    )


def _statistic(fit: GroupFit, one_spot_rss: float, ndim: int) -> float:
    """``(one_spot_rss - rss_2) / (rss_2 / dof_2)``: the likelihood-ratio statistic of the two-spot fit."""
    if not fit.ok:
        return 0.0
    variance = fit.rss / max(fit.used - (2 * ndim + 4), 1)
    return float((one_spot_rss - fit.rss) / variance) if variance > 0 else 0.0


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


@dataclass(frozen=True)
class _Job:
    """One group's joint fit to run: its samples and starts (see :func:`fit_groups_of`)."""

    members: np.ndarray
    values: np.ndarray
    points: np.ndarray
    start: np.ndarray
    again: np.ndarray  # the second start, where the first fails
    amplitudes: np.ndarray
    background: float
    sigma: float
    lower: float
    upper: float
    reach: float


def _run(jobs: list[_Job], starts: list[np.ndarray]) -> list[GroupFit]:
    """Fit jobs of one group size from ``starts``, those with as many samples together, in job order.

    Never padded: a padded sample, even a left-out one, changes the blocking of the fit's sums, and a
    group's fit would then depend on the groups fitted beside it.
    """
    results: list[GroupFit | None] = [None] * len(jobs)
    sizes: dict[int, list[int]] = {}
    for i, job in enumerate(jobs):
        sizes.setdefault(len(job.values), []).append(i)
    batches = []
    for same in sizes.values():
        # Bounded batches: a group's Jacobian is samples x (K (ndim + 1) + 2) values.
        k, ndim = jobs[same[0]].start.shape
        step = max(1, gaussian.FIT_VALUES // (len(jobs[same[0]].values) * (k * (ndim + 1) + 2)))
        batches += [same[lo : lo + step] for lo in range(0, len(same), step)]
    for same in batches:
        part = [jobs[i] for i in same]
        fitted = fit_groups_of(
            np.stack([j.values for j in part]),
            np.stack([j.points for j in part]),
            np.stack([starts[i] for i in same]),
            np.stack([j.amplitudes for j in part]),
            *(
                np.array([getattr(j, name) for j in part], np.float64)
                for name in ("background", "sigma", "lower", "upper", "reach")
            ),
            np.stack([j.start for j in part]),
        )
        for i, fit in zip(same, fitted):
            results[i] = fit
    return results


def fit_groups(heatmaps, owner: np.ndarray, centres: np.ndarray, fits) -> None:
    """Fit jointly the peaks of one heatmap whose windows overlap, in place of their own fits.

    ``fits`` is :func:`.gaussian.fit_peaks`'s; a group whose joint fit fails (or of more than
    :data:`MAX_GROUP` peaks) keeps its peaks' own fits. Groups of one size and box size are fitted together,
    each fit its own (as :func:`fit_groups_of` runs them).
    """
    ndim = centres.shape[1]
    jobs: dict[int, list[_Job]] = {}
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
            # the joint fit removes. The own fits are the second start.
            start = centres[members].astype(np.float64)
            amplitudes = np.where(good & (fits.amplitude[members] > 0), fits.amplitude[members], 1.0)
            values = _read_box(heatmaps, b, slices)
            jobs.setdefault(len(members), []).append(
                _Job(
                    members,
                    values,
                    points,
                    start,
                    np.where(good[:, None], fits.coords[members], start),
                    np.where(np.isfinite(amplitudes), amplitudes, 1.0),
                    float(np.median(fits.background[members])),
                    float(np.median(fits.sigma[members])),
                    float(fits.lower[members[0]]),
                    float(fits.upper[members[0]]),
                    max(1.5, half - 0.5),
                )
            )
    for batch in jobs.values():
        results = _run(batch, [j.start for j in batch])
        # Failed, or a spot pressed against the edge of its reach (a local minimum): start again from the
        # peaks' own fits, and keep the better.
        redo = [
            i
            for i, (j, f) in enumerate(zip(batch, results))
            if not f.ok or np.any(np.abs(f.centres - j.start) > j.reach - 0.5)
        ]
        if redo:
            for i, again in zip(redo, _run([batch[i] for i in redo], [batch[i].again for i in redo])):
                if again.ok and (not results[i].ok or again.rss < results[i].rss):
                    results[i] = again
        for job, fit in zip(batch, results):
            if not fit.ok:
                continue
            members = job.members
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
    spot); a peak splits when :func:`_statistic` of its two-spot fit exceeds ``threshold`` and the two
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
    tested = np.flatnonzero(~fits.fallback & ~crowded & standing)
    jobs: dict[int, list[int]] = {}
    for i in tested:
        jobs.setdefault(int(fits.half[i]), []).append(int(i))
    ndim = centres.shape[1]
    for half, peaks in jobs.items():
        batch = [
            _split_job(
                heatmaps,
                int(owner[i]),
                centres[i],
                fits.coords[i],
                fits.covariance[i],
                float(fits.amplitude[i]),
                float(fits.background[i]),
                half,
                float(fits.lower[i]),
                float(fits.upper[i]),
            )
            for i in peaks
        ]
        for i, fit in zip(peaks, _run(batch, [j.start for j in batch])):
            if not _statistic(fit, float(fits.rss[i]), ndim) > threshold:
                continue
            pixels = np.rint(fit.centres).astype(np.int64)
            if not np.array_equal(pixels[0], pixels[1]):
                out[i] = fit.centres
    return out


def locate(
    heatmaps: np.ndarray,
    owner: np.ndarray,
    centres: np.ndarray,
    shape: PeakShape,
    *,
    clip_levels: tuple[np.ndarray, np.ndarray] | None = None,
    threads: int | None = None,
    known: tuple[np.ndarray, gaussian.Fits] | None = None,
    **_,
) -> tuple[np.ndarray, np.ndarray, PeakShape, np.ndarray]:
    """Coordinates ``(N, ndim)``, fallback flags, the fitted shape, and the uncertainty ``(N, ndim)``.

    The shape's sigma is the fit's geometric mean, its amplitude the fit's, and its noise the residual
    standard deviation (the estimate's where the fit failed). Peaks of one heatmap whose windows overlap are
    then fitted together (:func:`fit_groups`).
    """
    fits = gaussian.fit_peaks(heatmaps, owner, centres, shape, clip_levels, threads, known)
    fit_groups(heatmaps, owner, centres, fits)
    return fits.coords, fits.fallback, PeakShape(fits.sigma, shape.background, fits.amplitude, fits.noise), fits.error
