"""Crowded spots: one fit for the spots that share pixels, and the test that splits a merged peak in two.

One point-spread function made every spot of a neighbourhood, so a group's model is a sum of Gaussians of
one shared width per axis, each with its own centre and amplitude, over one background::

    value(x) = background + sum_k A_k prod_a exp(-(x_a - mu_ka)^2 / (2 s_a^2))

fitted by :func:`.gaussian.fit_spots` (a peak's own fit is its one-spot case) over the union of the spots'
windows, for spots chained within :data:`GROUP_LINK` widths. No centre ends more than
:data:`GROUP_REACH` widths from its own local maximum; a group whose fit fails keeps its spots' own
fits, flagged ``fallback``. Its uncertainty is :func:`.gaussian.pooled_errors`'.

Two equal spots closer than 2 sigma have one maximum between them; the local-maximum rule then sees one
peak. :func:`split_merged` fits the two-spot model to such a peak, started along the long axis of its
window's second moments, and compares it with the one-spot fit: the drop in the sum of squared residuals
over the noise variance is a likelihood-ratio statistic, small for a single spot; the peak splits when it
exceeds ``threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...backends import numpy_backend
from ..windows import PeakShape, groups, near_pair_blocks, offsets, peak_grid, take_rows, windows
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
    widths : ndarray, shape ``(ndim,)``
        The spots' shared sigma along each axis, pixels.
    sigma, background : float
        ``sigma`` is the widths' geometric mean.
    errors : ndarray, shape ``(K, ndim)``
        1-sigma uncertainty of each centre, pixels.
    rss : float
        Sum of squared residuals over the samples used.
    used : int
        Samples used.
    ok : bool
        Converged to a valid model: positive amplitudes and widths, centres within the box and their reach.
    spread0, spread1 : ndarray, shape ``(K, 2 ndim)``, and stats : ndarray, shape ``(5,)``
        The :class:`.gaussian.NoiseTerms` of each centre and of the shared precisions ``sigma^-2`` (for errors
        under a heatmap's pooled noise model), as :class:`.gaussian.Fits` keeps them.
    """

    centres: np.ndarray
    amplitudes: np.ndarray
    widths: np.ndarray
    sigma: float
    background: float
    errors: np.ndarray
    rss: float
    used: int
    ok: bool
    spread0: np.ndarray | None = None
    spread1: np.ndarray | None = None
    stats: np.ndarray | None = None


def fit_groups_of(
    values: np.ndarray,
    axes: list[np.ndarray],
    centres: np.ndarray,
    amplitudes: np.ndarray,
    background: np.ndarray,
    widths: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    reach: np.ndarray,
    anchor: np.ndarray,
    cost_tolerance: float = 0.0,
    weights: np.ndarray | None = None,
    errors: bool = True,
) -> list[GroupFit]:
    """:func:`fit_group` for ``G`` groups of ``K`` spots on boxes of one shape, each group's fit its own.

    ``values`` ``(G, *box)`` (NaN: no sample), ``axes`` ``ndim`` arrays ``(G, W_a)`` (each box's pixel
    coordinates along each axis), ``centres`` and ``anchor`` ``(G, K, ndim)``, ``amplitudes`` ``(G, K)``,
    ``widths`` ``(G, ndim)`` (sigma per axis, which also measure ``reach``), the rest ``(G,)``; ``cost_tolerance`` as
    :func:`.gaussian.fit_spots`' (a fit with one decides a test: it has no errors), and ``weights`` too (``rss``
    is then the weighted sum). Without ``errors`` (or with a ``cost_tolerance``), no errors: NaN, and no
    noise terms.
    """
    g, k, ndim = centres.shape
    scale = np.maximum(widths, 0.3)  # a reach is measured in the starting widths
    theta = np.concatenate(
        [centres.reshape(g, -1), amplitudes, background[:, None], 1 / np.maximum(widths, 0.3) ** 2], axis=1
    ).astype(np.float64)
    # The box a centre may not leave: its samples' extent, per axis.
    valid = np.isfinite(values)
    extent = [valid.any(axis=tuple(b + 1 for b in range(ndim) if b != a)) for a in range(ndim)]
    low = np.stack([np.where(e, c, np.inf).min(axis=1) for e, c in zip(extent, axes)], axis=1)
    high = np.stack([np.where(e, c, -np.inf).max(axis=1) for e, c in zip(extent, axes)], axis=1)

    bounded = np.isfinite(reach)  # a two-spot test's reach is its window alone: no distance to measure

    def acceptable(t, rows):
        mu = t[:, : k * ndim].reshape(len(t), k, ndim)
        inside = np.all((mu >= low[rows][:, None]) & (mu <= high[rows][:, None]), axis=(1, 2))
        if not bounded[rows].any():
            return inside  # a NaN centre is outside already
        return inside & np.all(
            np.linalg.norm((mu - anchor[rows]) / scale[rows][:, None], axis=2) <= reach[rows][:, None], axis=1
        )

    errors = errors and not cost_tolerance
    fitted = gaussian.fit_spots(
        values, axes, theta, lower, upper, k, acceptable, ITERATIONS, cost_tolerance, errors, weights
    )
    theta = fitted.theta
    with np.errstate(all="ignore"):
        ok = np.all(theta[:, k * ndim : k * ndim + k] > 0, axis=1) & np.all(theta[:, -ndim:] > 0, axis=1)
        ok &= acceptable(theta, np.arange(g)) & np.all(np.isfinite(theta), axis=1)
        sigma = np.where(ok[:, None], theta[:, -ndim:], np.nan) ** -0.5
        mean_sigma = np.exp(np.log(sigma).mean(axis=1))
    # Whole arrays first, then one row of each per group: a split test makes thousands of these.
    centres = theta[:, : k * ndim].reshape(g, k, ndim).copy()
    amplitudes = theta[:, k * ndim : k * ndim + k].copy()
    centre_errors = fitted.errors[:, : k * ndim].reshape(g, k, ndim)
    terms = fitted.terms
    # Per spot, as gaussian.Fits keeps them: its centre's terms, then the group's shared precisions'.
    spread0, spread1 = (
        (None, None)
        if terms is None
        else (gaussian.spot_terms(terms.spread0, k, ndim), gaussian.spot_terms(terms.spread1, k, ndim))
    )
    scalars = zip(
        mean_sigma.tolist(), theta[:, k * ndim + k].tolist(), fitted.rss.tolist(), fitted.used.tolist(), ok.tolist()
    )
    return [
        GroupFit(
            centres[i],
            amplitudes[i],
            sigma[i],
            mean,
            background,
            centre_errors[i],
            rss,
            int(used),
            good,
            *((None, None, None) if terms is None else (spread0[i], spread1[i], terms.stats[i])),
        )
        for i, (mean, background, rss, used, good) in enumerate(scalars)
    ]


def fit_group(
    values: np.ndarray,
    axes: list[np.ndarray],
    centres: np.ndarray,
    amplitudes: np.ndarray,
    background: float,
    sigma,
    lower: float = -np.inf,
    upper: float = np.inf,
    reach: float = np.inf,
    anchor: np.ndarray | None = None,
) -> GroupFit:
    """Fit ``K`` spots of one width per axis jointly to the samples ``values`` on a box.

    ``values`` has one axis per entry of ``axes``, the box's pixel coordinates along it (:func:`box`).
    ``centres`` ``(K, ndim)``, ``amplitudes``, ``background`` and ``sigma`` (one, or one per axis) start the
    fit; samples that are NaN are left out, and samples at the clip levels ``lower`` and ``upper`` count only
    where the model disagrees with the clip (as in :mod:`.gaussian`). No centre ends farther than ``reach``
    from its ``anchor`` (default its start), measured in the starting widths (``sqrt(sum_a (d_a / s_a)^2)``):
    a spot may not wander onto its neighbour or off into the background.
    """
    centres = np.asarray(centres, np.float64)
    anchor = centres if anchor is None else anchor
    one = lambda v: np.array([v], dtype=np.float64)  # noqa: E731
    return fit_groups_of(
        np.asarray(values, np.float64)[None],
        [np.asarray(a, np.float64)[None] for a in axes],
        centres[None],
        np.asarray(amplitudes, np.float64)[None],
        one(background),
        np.broadcast_to(np.asarray(sigma, np.float64), (1, centres.shape[1])),
        one(lower),
        one(upper),
        one(reach),
        np.asarray(anchor, np.float64)[None],
    )[0]


def box(shape: tuple[int, ...], centres: np.ndarray, half, step: int = 1) -> tuple[tuple[slice, ...], list[np.ndarray]]:
    """The union of the windows of ``half`` pixels (one, or one per axis) around ``centres`` ``(K, ndim)``.

    Clipped to the map, then grown to a multiple of ``step`` samples per axis where the map has them (up,
    then down): boxes of a few shapes fit in a few large batches, and a box of the map's own samples, none
    left out, takes :func:`.gaussian.fit_spots`' fast route. Returns its slices, and its pixel coordinates
    along each axis.
    """
    size = np.array(shape)
    low = np.maximum(centres.min(axis=0) - half, 0)
    high = np.minimum(centres.max(axis=0) + half + 1, size)
    want = -(-(high - low) // step) * step
    high = np.minimum(low + want, size)
    low = np.maximum(high - want, 0)
    slices = tuple(slice(int(a), int(b)) for a, b in zip(low, high))
    return slices, [np.arange(s.start, s.stop, dtype=np.float64) for s in slices]


#: Largest group fitted jointly; a larger crowd keeps each peak's own fit.
MAX_GROUP = 8
#: Spots are fitted together where they lie at most this many widths apart (``sqrt(sum_a (d_a / s_a)^2)``),
#: directly or through others. Farther apart, each spot's own fit (which leaves out the samples nearer to
#: its neighbour) is as good; chained by window overlap instead, the spots of a crowded 3-D field join
#: into groups too large to fit (5000 spots in 48x512x512: 98% of them).
GROUP_LINK = 4.0
#: Farthest a spot of a group may end from its own local maximum, in its starting widths
#: (``sqrt(sum_a (d_a / s_a)^2)``): no further than the spot's own width, so that it cannot take a neighbour
#: that is no member, yet two equal spots 2 sigma apart (one flat top, whose local maxima lie anywhere on it)
#: are found.
GROUP_REACH = 1.0


def _read_box(heatmaps, b: int, slices: tuple[slice, ...]) -> np.ndarray:
    """Samples of heatmap ``b`` in ``slices``, float64, NaN where not finite (a stack read in pieces too)."""
    if isinstance(heatmaps, np.ndarray):
        values = np.array(heatmaps[(int(b),) + slices], dtype=np.float64)
    else:
        values = np.array(heatmaps.read(int(b), slices), dtype=np.float64)
    values[~np.isfinite(values)] = np.nan
    return values


#: Group boxes grow to a multiple of this per axis (with the map's samples, or left-out ones past its
#: edge): boxes of a few shapes are fitted in a few large batches, not one small batch per shape.
BOX_STEP = 4


def _padded(values: np.ndarray, axes: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """A box's samples and coordinates padded to a multiple of :data:`BOX_STEP` per axis (NaN samples).

    The padding depends on the box alone, so a group's fit never depends on the groups beside it.
    """
    shape = tuple(-(-s // BOX_STEP) * BOX_STEP for s in values.shape)
    out = np.full(shape, np.nan)
    out[tuple(slice(0, s) for s in values.shape)] = values
    return out, [a[0] + np.arange(s, dtype=np.float64) for a, s in zip(axes, shape)]


def overlapped(owner: np.ndarray, centres: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Which peaks ``(N,)`` have a window that overlaps another peak's window of the same heatmap.

    ``owner`` ``(N,)`` each peak's heatmap, ``centres`` ``(N, ndim)``, ``half`` ``(N, ndim)`` the windows'
    half-widths per axis.

    Examples
    --------
    >>> overlapped(np.zeros(4, int), np.array([[0, 0], [5, 0], [9, 0], [40, 40]]), np.full((4, 2), 3)).tolist()
    [True, True, True, False]
    """
    out = np.zeros(len(centres), bool)
    for first, _, _ in _overlapping_pairs(owner, centres, half):
        out[first] = True
    return out


def _overlapping_pairs(owner: np.ndarray, centres: np.ndarray, half: np.ndarray):
    """The pairs ``(i, j)`` whose windows overlap, and their offsets ``centres[i] - centres[j]``, a block at a time.

    Windows of half-widths ``half`` ``(N, ndim)``; blocks of :func:`~peakloc.ops.windows.near_pair_blocks`.
    """
    for first, second in near_pair_blocks(peak_grid(owner, centres, 2 * half.max(axis=1, initial=0))):
        d = centres[first] - centres[second]
        keep = np.all(np.abs(d) <= half[first] + half[second], axis=1)
        yield first[keep], second[keep], d[keep]


def close_groups(
    owner: np.ndarray, centres: np.ndarray, widths: np.ndarray, half: np.ndarray, link: float
) -> list[np.ndarray]:
    """Groups (index arrays) of peaks of one heatmap chained by pairs whose spots overlap; singles left out.

    A pair overlaps where its windows (half-widths ``half`` ``(N, ndim)``) do, and its distance in widths,
    ``sqrt(sum_a (d_a / s_a)^2)`` with ``s_a`` the mean of the two spots' sigmas along axis ``a`` (``widths``
    ``(N, ndim)``), is at most ``link``.
    """
    linked = []
    for first, second, d in _overlapping_pairs(owner, centres, half):
        close = np.sum((d / ((widths[first] + widths[second]) / 2)) ** 2, axis=1) <= link**2
        linked.append((first[close], second[close]))
    if not linked:
        return []
    return _components(len(centres), np.concatenate([f for f, _ in linked]), np.concatenate([s for _, s in linked]))


#: Most links whose components come from SciPy's union-find (``DisjointSet``: Python, 12 ms to import); more
#: from its compiled graph module, whose import takes 0.17 s in every process (SciPy's array-API layer, which
#: imports ``numpy.f2py`` and ``numpy.testing``). A group of 500 frames of the SMLM movie has 434 links, the
#: dense 3-D volume 1 610; 32 Ki links take the union-find 73 ms.
FEW_LINKS = 1 << 15


def _components(n: int, first: np.ndarray, second: np.ndarray) -> list[np.ndarray]:
    """The connected components of ``n`` peaks linked by pairs ``(first, second)``.

    Singles are left out; components come in order of their first member, each in ascending order.
    """
    if not len(first):
        return []
    if len(first) <= FEW_LINKS:
        return _few_components(first, second)
    from scipy.sparse import coo_array
    from scipy.sparse.csgraph import connected_components

    graph = coo_array((np.ones(len(first), bool), (first, second)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    sizes = np.bincount(label)
    # Only the components of two or more: split into one array per single peak, thousands cost 12 ms.
    members = np.argsort(label, kind="stable")
    members = members[sizes[label[members]] > 1]
    groups = np.split(members, np.cumsum(sizes[sizes > 1])[:-1]) if len(members) else []
    return sorted(groups, key=lambda g: g[0])


def _few_components(first: np.ndarray, second: np.ndarray) -> list[np.ndarray]:
    """:func:`_components` of a few links, by SciPy's union-find."""
    try:  # from its own module: scipy.cluster.hierarchy, which exports it, imports far more
        from scipy._lib._disjoint_set import DisjointSet
    except ImportError:
        from scipy.cluster.hierarchy import DisjointSet

    linked = DisjointSet(np.unique(np.concatenate([first, second])).tolist())
    for a, b in zip(first.tolist(), second.tolist()):
        linked.merge(a, b)
    groups = [np.array(sorted(members), np.int64) for members in linked.subsets()]  # every one holds a link
    return sorted(groups, key=lambda g: g[0])


@dataclass(frozen=True)
class _Jobs:
    """Joint fits to run, ``G`` of them, of ``K`` spots on boxes of one shape (see :func:`fit_groups_of`)."""

    values: np.ndarray
    axes: list[np.ndarray]
    start: np.ndarray
    amplitudes: np.ndarray
    background: np.ndarray
    widths: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    reach: np.ndarray
    weights: np.ndarray | None = None

    def rows(self, index) -> _Jobs:
        """The jobs ``index``, a new :class:`_Jobs`."""
        return take_rows(self, index)


#: :class:`_Jobs`' fields of one array each.
_PER_JOB = ("start", "amplitudes", "background", "widths", "lower", "upper", "reach")


def _stack(jobs: list[dict]) -> _Jobs:
    """One :class:`_Jobs` of jobs given as dicts of its fields, one job each."""
    return _Jobs(
        np.stack([j["values"] for j in jobs]),
        [np.stack([j["axes"][a] for j in jobs]) for a in range(len(jobs[0]["axes"]))],
        *(np.stack([np.asarray(j[f], np.float64) for j in jobs]) for f in _PER_JOB),
    )


def _run(
    jobs: _Jobs,
    starts: np.ndarray,
    threads: int | None = None,
    cost_tolerance: float = 0.0,
    shared: bool = False,
    errors: bool = True,
) -> list[GroupFit]:
    """Fit ``jobs`` from ``starts`` ``(G, K, ndim)``, in chunks on ``threads`` threads, in job order.

    ``shared``: the chunks go to the run's helper processes too, where it has them
    (:func:`~peakloc.backends.numpy_backend.map_shared`); not from inside work already shared. ``errors``:
    as :func:`fit_groups_of`'s.
    """
    g, k, ndim = jobs.start.shape
    size = gaussian.chunk(int(np.prod(jobs.values.shape[1:])), ndim, k)
    chunks = [np.arange(lo, min(lo + size, g)) for lo in range(0, g, size)]
    threads = numpy_backend.DEFAULT_THREADS if threads is None else max(1, int(threads))

    def job(rows: np.ndarray) -> tuple:
        return jobs.rows(rows), starts[rows], cost_tolerance, errors

    if shared:
        fitted = numpy_backend.map_shared(_fit_chunk, chunks, threads, job, on_threads=True)
    else:
        # Chunks are independent and NumPy releases the GIL in their loops: threads share them out.
        fitted = numpy_backend.map_in_threads(lambda rows: _fit_chunk(job(rows)), chunks, threads)
    return [f for part in fitted for f in part]


def _fit_chunk(job: tuple, threads: int | None = None) -> list[GroupFit]:
    """:func:`fit_groups_of` of ``job`` ``(jobs, starts, cost_tolerance, errors)``: a pure function of its arrays."""
    part, starts, cost_tolerance, errors = job
    return fit_groups_of(
        part.values, part.axes, starts, part.amplitudes, part.background, part.widths, part.lower,
        part.upper, part.reach, part.start, cost_tolerance, part.weights, errors,
    )  # fmt: skip


def _fit_batch(job: tuple[list[dict], bool], threads: int | None = None) -> list[GroupFit]:
    """Joint fits of a batch of groups of one size and box shape (:func:`fit_groups`' jobs), in job order.

    ``job`` is ``(batch, errors)``. Failed, or a spot pressed against the edge of its reach (a local
    minimum): the fit starts again from the peaks' own fits, and the better one stays.
    """
    batch, errors = job
    jobs = _stack(batch)
    results = _run(jobs, jobs.start, threads, errors=errors)
    redo = [
        i
        for i, f in enumerate(results)
        if not f.ok
        or np.any(np.linalg.norm((f.centres - jobs.start[i]) / jobs.widths[i], axis=1) > 0.75 * jobs.reach[i])
    ]
    if redo:
        again = np.stack([batch[i]["again"] for i in redo])
        for i, other in zip(redo, _run(jobs.rows(np.array(redo)), again, threads, errors=errors)):
            if other.ok and (not results[i].ok or other.rss < results[i].rss):
                results[i] = other
    return results


def fit_groups(
    heatmaps, owner: np.ndarray, centres: np.ndarray, fits, threads: int | None = None, errors: bool = True
) -> None:
    """Fit jointly the peaks of one heatmap chained within :data:`GROUP_LINK` widths, in place of own fits.

    ``fits`` is :func:`.gaussian.fit_peaks`'s; a group whose joint fit fails (or of more than
    :data:`MAX_GROUP` peaks) keeps its peaks' own fits, flagged ``fallback``. Groups of one size and box
    shape are fitted together, each fit its own (as :func:`fit_groups_of` runs them).
    """
    ndim = centres.shape[1]
    batches: dict[tuple, list[dict]] = {}
    spread = np.where(fits.fallback[:, None], fits.sigma[:, None], fits.widths)
    for members in close_groups(owner, centres, spread, fits.half, GROUP_LINK):
        b = owner[members[0]]
        if fits.capped[members].any():
            continue  # a spot no window holds shows only its top: nothing for a joint fit to tell apart
        if len(members) > MAX_GROUP:
            fits.fallback[members] = True  # too crowded for a joint fit: each keeps its own
            continue
        half = fits.half[members].max(axis=0)
        slices, axes = box(heatmaps.shape[1:], centres[members], half, BOX_STEP)
        good = ~fits.fallback[members]
        # From the local maxima: each peak's own fit is pulled towards its neighbours, the very bias
        # the joint fit removes. The own fits are the second start.
        start = centres[members].astype(np.float64)
        amplitudes = np.where(good & (fits.amplitude[members] > 0), fits.amplitude[members], 1.0)
        widths = fits.widths[members][good] if good.any() else fits.sigma[members][:, None]
        values, axes = _padded(_read_box(heatmaps, b, slices), axes)
        batches.setdefault((len(members), values.shape), []).append(
            dict(
                members=members,
                values=values,
                axes=axes,
                start=start,
                again=np.where(good[:, None], fits.coords[members], start),
                amplitudes=np.where(np.isfinite(amplitudes), amplitudes, 1.0),
                background=float(np.median(fits.background[members])),
                widths=np.broadcast_to(np.median(widths, axis=0), (ndim,)),
                lower=float(fits.lower[members[0]]),
                upper=float(fits.upper[members[0]]),
                reach=GROUP_REACH,
            )
        )
    # Batches are independent: on helper processes where the run has them (each with one thread), else here.
    jobs = [(batch, errors) for batch in batches.values()]
    for batch, results in zip(batches.values(), numpy_backend.map_shared(_fit_batch, jobs, threads)):
        for job, fit in zip(batch, results):
            if not fit.ok:  # abandoned: each spot keeps its own fit, flagged
                fits.fallback[job["members"]] = True
                continue
            members = job["members"]
            fits.coords[members] = fit.centres
            fits.fallback[members] = False
            fits.far[members] = False
            fits.sigma[members] = fit.sigma
            fits.widths[members] = fit.widths
            fits.amplitude[members] = fit.amplitudes
            fits.background[members] = fit.background
            fits.noise[members] = np.sqrt(fit.rss / max(fit.used - gaussian.parameters(len(members), ndim), 1))
            if fit.stats is not None:  # computed (errors asked for)
                fits.spread0[members], fits.spread1[members] = fit.spread0, fit.spread1
                fits.stats[members] = fit.stats / len(members)  # its sums, once over the group's spots


#: ``--split-threshold``'s default: single noisy spots exceed it in well under 1% of maps, and equal pairs
#: 2 sigma apart (amplitude 1, noise 0.05, sigma 2) in all (make bench-accuracy).
SPLIT_THRESHOLD = 40.0
#: A two-spot fit ends where a step lowers its cost by less than this share: the statistic then moves by
#: less than 3e-4 times the window's samples a step (0.02 for a 9x9 window, 0.3 for 11x9x9), far below the
#: threshold. A two-spot fit of one spot creeps (its second spot has nowhere to go): from 1e-5, 0.25 s
#: less of the SMLM movie's 4 s, the same table byte for byte (1e-3 changed one split in 15 000).
SPLIT_TOLERANCE = 3e-4
#: Only peaks at least this many noise levels high are tested for a second spot.
SPLIT_MIN_SNR = 5.0
#: Fewest tested peaks of a heatmap whose pooled noise model (:func:`.gaussian.pooled_noise`) is trusted
#: to screen the test: there, a peak whose one-spot fit leaves a weighted sum of squared residuals at most
#: its degrees of freedom (reduced chi-square <= 1) is not tested: it passes a threshold of 40 only where
#: its two-spot fit leaves a reduced chi-square near 0.5 (0.54 on a 7x7 window, 0.66 on 9x9), 2 standard
#: deviations below its mean, even were a second spot there. On the SMLM movie of make bench it leaves 47%
#: of the peaks to test and keeps all 278 splits. With fewer peaks the noise model is little more than the
#: peaks' own residuals, a merged pair's misfit included.
SCREEN_SPOTS = 5


def split_merged(
    heatmaps, owner: np.ndarray, centres: np.ndarray, fits, threshold: float, threads: int | None = None
) -> list[np.ndarray | None]:
    """Per peak, the two spots ``(2, ndim)`` it splits into, or None.

    Only peaks whose own fit worked and stands :data:`SPLIT_MIN_SNR` noise levels high, and whose window
    overlaps no other such peak's, are tested (a bump of noise has no two spots to find; a neighbour's tail
    is not a second spot); a peak splits when :func:`_statistic` of its two-spot fit exceeds ``threshold`` and the two
    spots land on different pixels. In a heatmap of :data:`SCREEN_SPOTS` such peaks or more, a peak whose own
    fit already explains its window (see :data:`SCREEN_SPOTS`) is not tested.
    """
    out: list[np.ndarray | None] = [None] * len(centres)
    with np.errstate(all="ignore"):
        standing = ~fits.fallback & (fits.amplitude >= SPLIT_MIN_SNR * fits.noise)
    # A fit narrower than half a pixel along an axis is one sample standing out: noise, not a blurred spot.
    # A spot no window holds (``capped``: a broad blob) shows only its top: no second spot to tell apart.
    standing &= np.all(fits.widths >= 0.5, axis=1) & ~fits.capped
    # Only a neighbour that stands out of the noise crowds a peak: a bump of noise on the flank of a merged
    # pair (a local maximum too, where no threshold is given) must not keep the pair from being split.
    crowded = np.zeros(len(centres), bool)
    spots = np.flatnonzero(standing)
    crowded[spots] = overlapped(owner[spots], centres[spots], fits.half[spots])
    tested = np.flatnonzero(standing & ~crowded)
    ndim = centres.shape[1]
    boxes, which = np.unique(gaussian.fit_box(fits.half[tested].reshape(-1, ndim)), axis=0, return_inverse=True)
    a, b = gaussian.pooled_noise(fits.stats, owner)
    maps, index = np.unique(owner, return_inverse=True)
    index = index.reshape(-1)
    populous = (np.bincount(index, standing, len(maps)) >= SCREEN_SPOTS)[index]
    for key, members in groups(which.reshape(-1)):
        peaks = tested[members]
        jobs, one_spot, explained = _split_jobs(
            heatmaps, owner[peaks], centres[peaks], fits.rows(peaks), boxes[key], a[peaks], b[peaks]
        )
        keep = np.flatnonzero(~(explained & populous[peaks]))
        peaks, jobs, one_spot = peaks[keep], jobs.rows(keep), one_spot[keep]
        if not len(peaks):
            continue
        fitted = _run(jobs, jobs.start, threads, SPLIT_TOLERANCE, shared=True)
        split = _statistic(fitted, one_spot, ndim) > threshold
        for i, fit in zip(peaks[split], [f for f, s in zip(fitted, split) if s]):
            spots = fit.centres
            pixels = np.rint(spots).astype(np.int64)
            if not np.array_equal(pixels[0], pixels[1]):
                out[i] = centres[i] + spots
    return out


def _split_jobs(
    heatmaps, owner: np.ndarray, centres: np.ndarray, fits, box: np.ndarray, a: np.ndarray, b: np.ndarray
) -> tuple[_Jobs, np.ndarray, np.ndarray]:
    """The two-spot fits of peaks fitted in boxes of ``box`` ``(ndim,)``: two starts along each window's long axis.

    Each peak's samples are those of its own fit's window (``fits.half``, within ``box``:
    :func:`.gaussian.fit_box`); the rest of the box is left out.

    Also the one-spot fit's sum of squared residuals on the same windows ``(N,)``, and whether it explains
    its window ``(N,)``: that sum at most its degrees of freedom (see :data:`SCREEN_SPOTS`). Both sums weigh each
    sample by the inverse of its noise variance ``a + b x`` (``x`` the one-spot model's height above its
    background; the heatmap's pooled noise model, :func:`.gaussian.pooled_noise`): under shot noise the
    brightest samples of a spot are the noisiest, and unweighted they would split bright single spots.

    The long axis is that of the window's second moments above the one-spot fit's background (the one-spot
    fit's widths lie along the array axes); the starts lie ``+-d`` along it, ``d^2`` the excess of the long
    variance over the short, as for two spots ``2 d`` apart; the starting widths are the one-spot fit's less
    that spread.
    """
    n, ndim = centres.shape
    values = windows(heatmaps, owner, centres, box)
    beyond = gaussian.beyond_window(box, fits.half)
    if beyond is not None:
        flat = values.reshape(n, -1)
        flat[beyond] = np.nan
        values = flat.reshape(values.shape)
    mu = fits.coords - centres
    d = offsets(box, ndim)[None] - mu[:, None, :]
    weight = np.nan_to_num(np.clip(values.reshape(n, -1) - fits.background[:, None], 0, None))
    moments = (d * weight[..., None]).transpose(0, 2, 1) @ d / np.maximum(weight.sum(axis=1), 1e-300)[:, None, None]
    eigenvalues, vectors = np.linalg.eigh(moments)
    long_axis = vectors[..., -1]
    spread = np.maximum(eigenvalues[:, -1] - eigenvalues[:, 0], 0.25 * np.maximum(eigenvalues[:, 0], 0.09))
    offset = np.sqrt(spread)[:, None] * long_axis
    start = np.stack([mu + offset, mu - offset], axis=1)
    variance = fits.widths**2
    widths = np.sqrt(np.maximum(variance - spread[:, None] * long_axis**2, 0.25 * variance))
    axes = [np.broadcast_to(np.arange(-h, h + 1, dtype=np.float64), (n, 2 * h + 1)) for h in box]
    theta = np.concatenate([mu, fits.amplitude[:, None], fits.background[:, None], fits.widths**-2], axis=1)
    model, r, active = gaussian.model_and_residuals(
        values, axes, theta, 1, fits.lower.astype(np.float64), fits.upper.astype(np.float64)
    )
    shape = (n,) + (1,) * ndim
    variance = a.reshape(shape) + b.reshape(shape) * (model - fits.background.reshape(shape))
    weights = np.where(variance > 0, 1 / np.where(variance > 0, variance, 1), 1.0)
    one_spot = (weights * r * r).reshape(n, -1).sum(axis=1)
    explained = one_spot <= active.reshape(n, -1).sum(axis=1) - gaussian.parameters(1, ndim)
    jobs = _Jobs(
        values,
        axes,
        start,
        np.repeat(fits.amplitude[:, None] / 2, 2, axis=1),
        fits.background.astype(np.float64),
        widths,
        fits.lower.astype(np.float64),
        fits.upper.astype(np.float64),
        np.full(n, np.inf),  # the window's box keeps both spots in it
        weights,
    )
    return jobs, one_spot, explained


def _statistic(fitted: list[GroupFit], rss_1: np.ndarray, ndim: int) -> np.ndarray:
    """``(rss_1 - rss_2) / (rss_2 / dof_2)`` of each two-spot fit ``(N,)``: 0 where that fit failed.

    ``rss_1`` ``(N,)`` the one-spot fit's (weighted) sum of squared residuals on the same samples.
    """
    rss = np.array([f.rss for f in fitted])
    dof = np.maximum(np.array([f.used for f in fitted]) - gaussian.parameters(2, ndim), 1)
    ok = np.array([f.ok for f in fitted], bool) & (rss > 0)
    with np.errstate(all="ignore"):
        return np.where(ok, (rss_1 - rss) / (rss / dof), 0.0)


def locate(
    heatmaps: np.ndarray,
    owner: np.ndarray,
    centres: np.ndarray,
    shape: PeakShape,
    *,
    clip_levels: tuple[np.ndarray, np.ndarray] | None = None,
    threads: int | None = None,
    known: tuple[np.ndarray, gaussian.Fits] | None = None,
    uncertainty: bool = True,
    **_,
) -> tuple[np.ndarray, np.ndarray, PeakShape, np.ndarray]:
    """Coordinates ``(N, ndim)``, fallback flags, the fitted shape, and the uncertainty ``(N, ndim)``.

    The shape's sigma is the fit's geometric mean, its amplitude the fit's, and its noise the residual
    standard deviation (the estimate's where the fit failed). Peaks of one heatmap whose windows overlap are
    then fitted together (:func:`fit_groups`). Without ``uncertainty`` it is NaN, and the fits compute none
    of its terms; nothing else changes.
    """
    fits = gaussian.fit_peaks(heatmaps, owner, centres, shape, clip_levels, threads, known, uncertainty)
    fit_groups(heatmaps, owner, centres, fits, threads, uncertainty)
    fits.settle(centres)
    fitted = PeakShape(fits.sigma, shape.background, fits.amplitude, fits.noise, fits.widths)
    if not uncertainty:
        return fits.coords, fits.fallback, fitted, np.full(fits.coords.shape, np.nan)
    return fits.coords, fits.fallback, fitted, gaussian.pooled_errors(fits, owner)
