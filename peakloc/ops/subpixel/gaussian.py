"""``gaussian``: least-squares Gaussian with background and a width per axis, Levenberg-Marquardt.

Each peak's window is ``ceil(2.5 sigma)`` pixels each side along each axis, from its own width along that
axis (:func:`~peakloc.ops.windows.line_widths`; 3 to :data:`FIT_MAX_HALF`); peaks that share a window shape
are fitted together, in chunks of :data:`FIT_CHUNK`,
every peak's fit independent of the others. Saturated and floored samples are censored: a clipped sample
only counts where the model disagrees with the clip.

The model's widths lie along the array axes (a microscope's point-spread function, a pose model's target),
so it is separable: each spot is the outer product of one profile per axis. :func:`fit_spots`, which fits
one spot or several of one width (:mod:`.crowded`), builds its normal equations from those profiles, never
from a Jacobian over the whole window, wherever every sample of a job's box counts.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np

from ...backends import numpy_backend
from ..windows import (
    SIGMA_WINDOW,
    PeakGrid,
    PeakShape,
    groups,
    near_pairs,
    nearer_to_others,
    offsets,
    peak_grid,
    take_rows,
    windows,
)
from .quadratic import vertex

#: Largest half-width of the Gaussian fit's window (3-D windows grow as its cube).
FIT_MAX_HALF = {1: 16, 2: 10, 3: 6}
#: A fit also stops where its centres move less than this (px) for a cost that drops by less than
#: COST_TOLERANCE of itself: Levenberg-Marquardt's steps shrink about tenfold each near the optimum, so the
#: rest of the way is about a tenth of the last step, well below every error bar (a sparse 3-D volume's are
#: 0.01-0.03 px). From 10^-4 px and 10^-9: one step fewer, 10% of the SMLM movie's and the dense volume's
#: time; 99.9% of their rows moved less than 10^-3 px (the rest up to 0.004 px, and one split more in the
#: movie's 15 000), as accurate (Jaccard 0.9844, RMSE 0.069 px; 98.15% within 1.5 px, RMSE 0.12 px).
STEP_TOLERANCE = 1e-3
COST_TOLERANCE = 1e-6
#: Farthest a fit may take a peak from its own local maximum where it left samples to a neighbour, in the
#: fit's own widths (``sqrt(sum_a (d_a / s_a)^2)``): beyond, the fit has taken in the neighbour, and the
#: peak keeps its integer position (``fallback``). In widths, not pixels: the one maximum of two merged
#: spots 2 sigma apart lies anywhere on its flat top, and a spot is wider in z than in y and x.
CROWDED_PULL = 1.0
#: ... and no more than this many pixels (Euclidean) in the end, unless a joint fit of the spots took it
#: further (:attr:`Fits.far`): in a crowded 3-D field, where a width in z is 2 px, own fits pulled 1.5-2 px
#: towards a neighbour sat between two spots, 1.5 px and more from both (1 row in 50 of 5000 spots). Not
#: at once: such a fit still decides whether the peak is two spots (:func:`.crowded.split_merged`).
CROWDED_PULL_PX = 1.5
#: Peaks fitted together: bounds the fit's Jacobian to a few tens of MB.
FIT_CHUNK = 4096
#: Most Jacobian values of a chunk (8 MiB of float64; a step holds several such arrays, on each thread).
#: Twice 2^19: the dense 3-D volume of make bench (73 peaks of 11x9x9 samples a chunk before) 6.1 -> 5.7 s,
#: 184 -> 230 MiB; twice that again gained 0.05 s more for 30 MiB more.
FIT_VALUES = 1 << 20


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


#: Iterations of one Levenberg-Marquardt fit (a peak's own, a group's, a two-spot test's).
FIT_ITERATIONS = 40


def parameters(k: int, ndim: int) -> int:
    """Parameters of ``k`` spots in ``ndim`` dimensions: centres, amplitudes, background, per-axis precisions."""
    return k * ndim + k + 1 + ndim


@dataclass(frozen=True)
class _Edges:
    """The pixels' edges of ``G`` jobs' boxes, every axis's side by side, and where each pixel's two lie.

    ``values`` ``(G, E)``; ``axis`` ``(E,)`` each edge's axis. A pixel slot ``j`` spans edges ``lower[j]``
    and ``upper[j]`` (both slices of the columns: no copy); axis ``a``'s pixels are slots
    ``bounds[a][0]:bounds[a][1]``. A box's coordinates are consecutive: neighbouring pixels share an edge,
    and the slot between two axes' edges is no pixel (never read). Other coordinates get two edges each.
    """

    values: np.ndarray
    axis: np.ndarray
    lower: slice
    upper: slice
    bounds: tuple[tuple[int, int], ...]

    def rows(self, index) -> _Edges:
        """The edges of jobs ``index``."""
        return _Edges(self.values[index], self.axis, self.lower, self.upper, self.bounds)

    def slots(self, pixels: list[np.ndarray]) -> np.ndarray:
        """Per-axis pixel values ``(G, W_a)`` laid out in pixel slots ``(G, S)`` (0 in the slots between axes)."""
        out = np.zeros((len(pixels[0]), self.bounds[-1][1]))
        for (a, b), values in zip(self.bounds, pixels):
            out[:, a:b] = values
        return out


def _edges(axes: list[np.ndarray]) -> _Edges:
    """:class:`_Edges` of the sample coordinates ``axes`` (``ndim`` arrays ``(G, W_a)``)."""
    boxes = all(np.all(c[:, 1:] - c[:, :-1] == 1) for c in axes)
    values, axis, bounds, first = [], [], [], 0
    for a, coordinate in enumerate(axes):
        width = coordinate.shape[1]
        if boxes:
            values.append(np.concatenate([coordinate - 0.5, coordinate[:, -1:] + 0.5], axis=1))
        else:
            values.append(np.stack([coordinate - 0.5, coordinate + 0.5], axis=-1).reshape(len(coordinate), -1))
        axis.append(np.full(values[-1].shape[1], a))
        bounds.append((first, first + width))
        first += width + 1 if boxes else width  # a box's slot between two axes' edges is no pixel
    lower, upper = (slice(None, -1), slice(1, None)) if boxes else (slice(0, None, 2), slice(1, None, 2))
    return _Edges(np.concatenate(values, axis=1), np.concatenate(axis), lower, upper, tuple(bounds))


@dataclass(frozen=True)
class _Profiles:
    """Each spot's profile ``e`` along every axis and its derivatives by the centre and the precision.

    ``e``, ``de``, ``dp`` ``(G, K, S)``, pixel slots of every axis side by side (:class:`_Edges`' ``bounds``);
    a spot is the outer product of its profiles (see :func:`fit_spots`). ``inside`` ``(G, 1, S)``, where
    given: 1 on each job's own box, 0 outside, where all three are 0 too (see :func:`fit_spots`).
    """

    e: np.ndarray
    de: np.ndarray
    dp: np.ndarray
    bounds: tuple[tuple[int, int], ...]
    inside: np.ndarray | None = None

    @property
    def sides(self) -> tuple[int, ...]:
        """The boxes' pixels along each axis."""
        return tuple(b - a for a, b in self.bounds)

    def axis(self, a: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Axis ``a``'s ``e``, ``de``, ``dp`` ``(G, K, W_a)``."""
        part = slice(*self.bounds[a])
        return self.e[..., part], self.de[..., part], self.dp[..., part]

    def rows(self, index) -> _Profiles:
        """The profiles of jobs ``index``."""
        inside = None if self.inside is None else self.inside[index]
        return _Profiles(self.e[index], self.de[index], self.dp[index], self.bounds, inside)


def _profiles(theta: np.ndarray, axes, k: int, inside: np.ndarray | None = None) -> _Profiles:
    """Each spot's :class:`_Profiles` at ``theta`` on the boxes of ``axes`` (coordinates, or their :class:`_Edges`).

    A profile is the Gaussian integrated over each pixel, as a camera's pixel collects light:
    ``e(x) = s sqrt(pi / 2) (erf((x + 1/2 - mu) / (sqrt(2) s)) - erf((x - 1/2 - mu) / (sqrt(2) s)))``,
    ``s = p^-1/2``; it is 1 at the centre of a wide spot, so the amplitude stays the spot's height. Where both
    ends lie on one side of the centre, the difference is taken of ``erfc`` (no cancellation in the tails),
    from :func:`erfc_abs`. Every axis at once: one pass of each NumPy call, which a fit's last steps, over a
    few jobs, spend mostly on the calls' own cost. With ``inside`` ``(G, 1, S)`` (1 or 0 per pixel slot), each
    job's profiles are zero outside its own box.
    """
    edges = axes if isinstance(axes, _Edges) else _edges(axes)
    ndim = len(edges.bounds)
    g = len(theta)
    mu = theta[:, : k * ndim].reshape(g, k, ndim)
    p = theta[:, -ndim:][:, None, edges.axis]  # (G, 1, E): each edge's axis's precision
    scale = np.sqrt(0.5 * p)  # 1 / (sqrt(2) s)
    d = edges.values[:, None, :] - mu[:, :, edges.axis]
    x = d * scale
    gauss = np.exp(-x * x)
    c = erfc_abs(x, gauss)
    low, high = edges.lower, edges.upper
    # erf(high) - erf(low), with erf(x) = sign(x) (1 - erfc|x|): a difference of two erfc where both
    # ends lie on one side of the centre (no cancellation in the tails).
    spread = np.where(
        x[..., low] >= 0,
        c[..., low] - c[..., high],
        np.where(x[..., high] <= 0, c[..., high] - c[..., low], 2 - c[..., high] - c[..., low]),
    )
    e = (_SQRT_PI / 2) / scale[..., low] * spread
    dp = (d[..., high] * gauss[..., high] - d[..., low] * gauss[..., low] - e) / (2 * p[..., low])
    de = gauss[..., low] - gauss[..., high]
    if inside is not None:
        e, de, dp = e * inside, de * inside, dp * inside
    return _Profiles(e, de, dp, edges.bounds, inside)


def erfc_abs(x: np.ndarray, gauss: np.ndarray) -> np.ndarray:
    """``erfc(|x|)`` elementwise, given ``gauss = exp(-x^2)``; relative error below 1.2e-7 everywhere.

    The Chebyshev fit of Press et al., *Numerical Recipes* (3rd ed., section 6.2, ``erfcc``). Not
    ``scipy.special.erfc``: importing ``scipy.special`` takes 0.14 s per process (it loads SciPy's
    array-API layer), half the time of a default run over 300 small PNGs, and the fit needs nothing else
    from it. 1.2e-7 of a pixel's share of a spot is far below any photon count's noise.
    """
    t = 1.0 / (1.0 + 0.5 * np.abs(x))
    poly = np.full_like(t, _ERFCC[-1])
    for c in _ERFCC[-2::-1]:  # Horner
        poly *= t
        poly += c
    return t * gauss * np.exp(poly)


_SQRT_PI = float(np.sqrt(np.pi))
#: erfc(z) = t exp(-z^2 + sum_i c_i t^i), t = 1 / (1 + z / 2): the coefficients c_0 .. c_9 of :func:`erfc_abs`.
_ERFCC = (
    -1.26551223,
    1.00002368,
    0.37409196,
    0.09678418,
    -0.18628806,
    0.27886807,
    -1.13520398,
    1.48851587,
    -0.82215223,
    0.17087277,
)


def _value(theta: np.ndarray, profiles: _Profiles, k: int) -> np.ndarray:
    """The model on each job's box ``(G, W_0, ..., W_last)``: background plus every spot's outer product."""
    ndim = len(profiles.bounds)
    g = len(theta)
    sides = profiles.sides
    lead = theta[:, k * ndim : k * ndim + k]  # amplitudes (G, K), then (G, W_0, ..., W_a, K)
    for a in range(ndim - 1):
        e = profiles.axis(a)[0].transpose(0, 2, 1)  # (G, W_a, K)
        lead = lead[..., None, :] * e.reshape((g,) + (1,) * a + e.shape[1:])
    last = profiles.axis(ndim - 1)[0]  # (G, K, W_last)
    value = (lead.reshape(g, -1, k) @ last).reshape((g,) + sides)
    return value + theta[:, k * ndim + k].reshape((g,) + (1,) * ndim)


def _atoms(profiles: _Profiles, k: int) -> list[np.ndarray]:
    """Per axis, the factors ``(G, A, W_a)`` of the rank-one terms every Jacobian column is made of.

    Terms, in order: each spot's profile ``E_k``; its centre derivatives ``M_kb`` (the profile with axis
    ``b``'s factor replaced by its derivative); its precision derivatives ``H_kb`` (likewise); then the
    constant. See :func:`_combination` for the columns. Built for every axis at once (see :func:`_profiles`).
    """
    ndim = len(profiles.bounds)
    e = profiles.e
    g, _, width = e.shape
    u = np.empty((g, k * (1 + 2 * ndim) + 1, width))
    u[:, : k * (1 + 2 * ndim)] = e[:, _term_spots(k, ndim)]  # E_k, and every term's other axes
    for b in range(ndim):
        part = slice(*profiles.bounds[b])
        u[:, k + b : k + k * ndim : ndim, part] = profiles.de[..., part]
        u[:, k + k * ndim + b : k + 2 * k * ndim : ndim, part] = profiles.dp[..., part]
    u[:, -1] = 1.0 if profiles.inside is None else profiles.inside[:, 0]
    return [u[..., slice(*part)] for part in profiles.bounds]


def _combination(theta: np.ndarray, k: int, ndim: int) -> np.ndarray:
    """``C`` ``(G, P, A)``: the Jacobian's columns as combinations of :func:`_atoms`' terms."""
    rows, columns, amplitude, ones = _combination_index(k, ndim)
    c = np.zeros((len(theta), parameters(k, ndim), k * (1 + 2 * ndim) + 1))
    c[:, rows, columns] = theta[:, amplitude]
    c[:, ones[0], ones[1]] = 1.0
    return c


@functools.cache
def _term_spots(k: int, ndim: int) -> np.ndarray:
    """The spot of each of :func:`_atoms`' terms but the constant: ``E_k``, then ``M_kb`` and ``H_kb``."""
    spots = np.arange(k)
    return np.concatenate([spots, np.repeat(spots, ndim), np.repeat(spots, ndim)])


@functools.cache
def _combination_index(k: int, ndim: int) -> tuple[np.ndarray, ...]:
    """Where :func:`_combination` puts the amplitudes (rows, columns, and which of ``theta``'s), and the ones."""
    rows, columns, amplitude = [], [], []
    for s in range(k):
        for b in range(ndim):
            rows += [s * ndim + b, k * ndim + k + 1 + b]  # centre: amplitude x M_kb; precision: amplitude x H_kb
            columns += [k + s * ndim + b, k + k * ndim + s * ndim + b]
            amplitude += [k * ndim + s] * 2
    ones = (
        np.array([k * ndim + s for s in range(k)] + [k * ndim + k]),
        np.array(list(range(k)) + [k * (1 + 2 * ndim)]),
    )
    return np.array(rows), np.array(columns), np.array(amplitude), ones  # amplitude: E_k; background: the constant


def _expand(atoms: list[np.ndarray]) -> np.ndarray:
    """The terms on the whole box ``(G, A, M)``, from their factors per axis."""
    out = atoms[0]
    for u in atoms[1:]:
        out = out[..., None] * u.reshape(u.shape[:2] + (1,) * (out.ndim - 2) + u.shape[2:])
    return out.reshape(out.shape[0], out.shape[1], -1)


def _normal(theta: np.ndarray, profiles: _Profiles, r: np.ndarray, whole: np.ndarray, active: np.ndarray, k: int):
    """``J^T J`` ``(G, P, P)`` and ``J^T r`` ``(G, P)`` of jobs at ``theta``, residuals ``r`` ``(G, *box)``.

    Where every sample of a job's own box counts (``whole``; its profiles are zero outside that box, see
    :func:`fit_spots`), from the terms' factors alone: the Gram matrix of rank-one terms is the product of
    their Gram matrices per axis, and ``J^T r`` contracts ``r`` one axis at a time. Elsewhere from the
    terms on the whole box, weighted by ``active``.
    """
    ndim = len(profiles.bounds)
    atoms = _atoms(profiles, k)
    g, n = len(theta), atoms[0].shape[1]
    gram = np.empty((g, n, n))
    t = np.empty((g, n))
    if whole.any():
        rows = np.flatnonzero(whole) if not whole.all() else slice(None)
        parts = [u[rows] for u in atoms]
        product = parts[0] @ parts[0].transpose(0, 2, 1)
        for u in parts[1:]:
            product *= u @ u.transpose(0, 2, 1)
        gram[rows] = product
        last = parts[-1]
        contracted = (r[rows].reshape(len(last), -1, last.shape[2]) @ last.transpose(0, 2, 1)).reshape(
            r[rows].shape[:-1] + (n,)
        )
        for u in parts[-2::-1]:  # (G, W_0..W_a, A) with the axis a's factors: sum over W_a
            factor = u.transpose(0, 2, 1)
            contracted = (contracted * factor.reshape((len(u),) + (1,) * (contracted.ndim - 3) + factor.shape[1:])).sum(
                axis=-2
            )
        t[rows] = contracted
    if not whole.all():
        rows = np.flatnonzero(~whole)
        full = _expand([u[rows] for u in atoms])
        weighted = full * active[rows].reshape(len(rows), 1, -1)
        gram[rows] = weighted @ full.transpose(0, 2, 1)
        t[rows] = (full @ r[rows].reshape(len(rows), -1, 1))[..., 0]
    c = _combination(theta, k, ndim)
    return c @ gram @ c.transpose(0, 2, 1), (c @ t[..., None])[..., 0]


def model_and_residuals(values, axes, theta, k: int, lower, upper) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The model of ``k`` spots at ``theta`` on each job's box, the residuals, and the samples that count.

    ``values`` ``(G, *box)`` (NaN: no sample), ``axes`` and ``theta`` as :func:`fit_spots` takes them; all
    three ``(G, *box)``. A sample does not count (its residual is 0) where it is missing, or clipped
    (``lower``, ``upper`` ``(G,)``) and the model agrees.
    """
    value = _value(theta, _profiles(theta, axes, k), k)
    valid = np.isfinite(values)
    y = np.where(valid, values, 0.0)
    r, active = _censored(y, value, valid, *_clipped(y, valid, upper, lower))
    return value, r, active


def _clipped(y, valid, upper, lower):
    """The samples ``(G, *box)`` at or above their job's ``upper`` clip level, and at or below ``lower``.

    None for either where no sample is (most maps have no clip level).
    """
    shape = (len(y),) + (1,) * (y.ndim - 1)
    high, low = valid & (y >= upper.reshape(shape)), valid & (y <= lower.reshape(shape))
    return (high if high.any() else None), (low if low.any() else None)


def _censored(y, value, valid, high, low):
    """Residuals ``(G, *box)`` and the samples that count: a clipped sample only where the model disagrees.

    ``high``, ``low``: the clipped samples (:func:`_clipped`).
    """
    r = y - value
    if high is None and low is None:
        return (r if valid.all() else np.where(valid, r, 0.0)), valid
    active = valid
    if high is not None:
        active = active & ~(high & (r < 0))
    if low is not None:
        active = active & ~(low & (r > 0))
    return np.where(active, r, 0.0), active


@dataclass
class SpotFits:
    """:func:`fit_spots`' results for ``G`` jobs of ``P`` parameters.

    ``theta`` ``(G, P)`` the parameters, ``errors`` ``(G, P)`` their standard errors under each job's own noise
    model (:func:`noise_terms`), ``rss`` ``(G,)`` the sum of squared residuals over ``used`` ``(G,)`` samples;
    ``terms`` the :class:`NoiseTerms` that give the errors under any noise model (:func:`pooled_errors`).
    """

    theta: np.ndarray
    errors: np.ndarray
    rss: np.ndarray
    used: np.ndarray
    terms: NoiseTerms | None = None


def fit_spots(
    values,
    axes,
    theta,
    lower,
    upper,
    k: int,
    acceptable,
    iterations: int = FIT_ITERATIONS,
    cost_tolerance: float = 0.0,
    errors: bool = True,
    weights: np.ndarray | None = None,
) -> SpotFits:
    """Levenberg-Marquardt fits of ``k`` Gaussian spots of shared per-axis widths, one job each.

    The model of a job is ``background + sum_k A_k prod_a exp(-p_a (x_a - mu_ka)^2 / 2)``: spots made by one
    point-spread function, whose width ``p_a^-1/2`` may differ between axes (a microscope blurs more in z).
    A peak's own fit is the case ``k = 1``.

    Parameters
    ----------
    values : ndarray, shape ``(G, W_0, ..., W_last)``
        Each job's samples on a box of the map; NaN marks a sample left out.
    axes : list of ndarray, ``ndim`` of shape ``(G, W_a)``
        Each job's sample coordinates along each axis (pixels, in any frame the job's ``theta`` uses).
    theta : ndarray, shape ``(G, P)``
        Starts: centres ``(k, ndim)`` flattened, amplitudes ``(k,)``, background, precisions ``(ndim,)``.
    lower, upper : ndarray, shape ``(G,)``
        Clip levels (``-inf``, ``inf``: none): a clipped sample counts only where the model disagrees.
    acceptable : callable
        ``acceptable(theta, rows) -> bool (len(rows),)``: the constraints a step must keep besides positive
        amplitudes and precisions (a centre's box or reach).
    cost_tolerance : float
        A fit also ends where an accepted step lowers its cost by less than this share of it, wherever its
        centres went (a fit that only decides a test needs its cost, not its centres to 1e-4 px).
    errors : bool
        Whether to compute the standard errors (NaN without).
    weights : ndarray, shape ``(G, W_0, ..., W_last)``, optional
        With them, the ``rss`` reported is the weighted sum ``sum w r^2`` (each sample over its noise
        variance: a chi-square), though the fit itself is unweighted.

    Each job's fit is its own: the steps of a job depend on its samples and start alone. A sample outside
    the model's ``acceptable`` region is never the answer; a job whose start is already best keeps it.
    """
    ndim = len(axes)
    g = len(values)
    valid = np.isfinite(values)
    y = np.where(valid, values, 0.0)
    theta = np.array(theta, np.float64)

    high, low = _clipped(y, valid, upper, lower)  # once: the samples do not change
    edges = _edges(axes)  # once: the boxes do not change
    # Each job's own box: the extent of its samples along each axis, within the box the jobs share (a window
    # cut by the map's edge, a group's box padded with missing samples: crowded.BOX_STEP). Its profiles are
    # zero outside it, so that where every sample of that box counts, the normal equations come from the
    # profiles alone (see _normal), as for a job that fills the shared box.
    extent = [valid.any(axis=tuple(b + 1 for b in range(ndim) if b != a)) for a in range(ndim)]
    box = np.prod([e.sum(axis=1) for e in extent], axis=0)
    inside = None if all(e.all() for e in extent) else edges.slots(extent)[:, None, :]

    def evaluate(t, rows):
        profiles = _profiles(t, edges.rows(rows), k, None if inside is None else inside[rows])
        cut = [None if c is None else c[rows] for c in (high, low)]
        r, active = _censored(y[rows], _value(t, profiles, k), valid[rows], *cut)
        return (r * r).reshape(len(rows), -1).sum(axis=1), r, active, profiles

    def normal(t, rows, profiles, r, active):
        # Where every sample of a job's own box counts, the fast normal equations (see _normal).
        active = active.reshape(len(rows), -1)
        return _normal(t, profiles, r, active.sum(axis=1) == box[rows], active, k)

    def allowed(t, rows):
        amp, precision = t[:, k * ndim : k * ndim + k], t[:, -ndim:]
        return np.all(amp > 0, axis=1) & np.all(precision > 0, axis=1) & acceptable(t, rows)

    everything = np.arange(g)
    with np.errstate(all="ignore"):  # trial steps may leave the valid region; they are rejected
        cost, r, active, profiles = evaluate(theta, everything)
        jtj, jtr = normal(theta, everything, profiles, r, active)
        lam = np.full(g, 1e-3)
        done = np.zeros(g, bool)
        eye = np.eye(theta.shape[1])[None]
        for _ in range(iterations):
            rows = np.flatnonzero(~done)
            if not len(rows):
                break
            a = jtj[rows]
            damped = a + (lam[rows, None] * np.einsum("nii->ni", a) + 1e-12)[:, :, None] * eye
            step = _solve(damped, jtr[rows])
            if not np.isfinite(step).all():  # nan_to_num only where needed: its own cost is 6-30 us a call
                step = np.nan_to_num(step)
            trial = theta[rows] + step
            new_cost, new_r, new_active, new_profiles = evaluate(trial, rows)
            before = cost[rows]
            better = (new_cost < before) & allowed(trial, rows)
            if better.any():
                moved = rows[better]
                kept = np.flatnonzero(better)
                theta[moved] = trial[better]
                cost[moved] = new_cost[better]
                jtj[moved], jtr[moved] = normal(
                    trial[better],
                    moved,
                    new_profiles.rows(kept),
                    new_r[better],
                    new_active[better],
                )
            lam[rows] = np.where(better, lam[rows] * 0.3, lam[rows] * 10)
            small = settled(step[:, : k * ndim], before, new_cost) | (before - new_cost <= cost_tolerance * before)
            done[rows] |= (better & small) | (lam[rows] > 1e10)
        cost, r, active, profiles = evaluate(theta, everything)
        used = active.reshape(g, -1).sum(axis=1)
        if weights is not None:
            cost = (np.nan_to_num(weights) * r * r).reshape(g, -1).sum(axis=1)
        if not errors:
            return SpotFits(theta, np.full(theta.shape, np.nan), cost, used)
        full = _expand(_atoms(profiles, k))
        jac = (_combination(theta, k, ndim) @ full).transpose(0, 2, 1) * active.reshape(g, -1, 1)
        model = _value(theta, profiles, k).reshape(g, -1)
        terms = noise_terms(
            r.reshape(g, -1), jac, y.reshape(g, -1), model, theta[:, k * ndim + k], lower, upper,
            k * ndim + k,
        )  # fmt: skip
    return SpotFits(theta, terms.errors(*noise_line(terms.stats)), cost, used, terms)


@dataclass
class NoiseTerms:
    """What the standard errors of ``N`` fits need beside the noise model ``variance = a + b x``.

    ``x`` is a sample's fitted height above the background. A parameter's variance is
    ``a * spread0 + b * spread1`` (``(N, P)`` each: the diagonals of ``H^-1 J^T J H^-1`` and
    ``H^-1 J^T diag(x) J H^-1`` over the samples kept, ``H = J^T J``); ``stats`` ``(N, 5)`` are each fit's
    sums for fitting ``a`` and ``b`` to its squared residuals (:func:`noise_line`): count, ``sum x``,
    ``sum x^2``, ``sum y``, ``sum x y``, ``y`` a squared residual over ``1 - h`` (``h`` its leverage).
    """

    spread0: np.ndarray
    spread1: np.ndarray
    stats: np.ndarray

    def errors(self, a, b) -> np.ndarray:
        """Standard errors ``(N, P)`` under the noise model ``a``, ``b`` (one, or one per fit)."""
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        variance = a.reshape(-1, 1) * self.spread0 + b.reshape(-1, 1) * self.spread1
        return np.sqrt(np.clip(variance, 0, None))


def noise_line(stats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a, b >= 0`` of the variance ``a + b x`` from sums ``stats`` ``(N, 5)`` (:class:`NoiseTerms`).

    Least squares of ``y`` on ``(1, x)``, then the constraints: ``b < 0`` becomes ``b = 0``, ``a < 0`` a line
    through zero.
    """
    m, s1, s2, t0, t1 = np.moveaxis(np.asarray(stats, np.float64).reshape(-1, 5), 1, 0)
    det = m * s2 - s1 * s1
    b = np.where(det > 0, (m * t1 - s1 * t0) / np.where(det > 0, det, 1), 0.0)
    a = (t0 - b * s1) / np.maximum(m, 1)
    flat = b <= 0
    a, b = np.where(flat, t0 / np.maximum(m, 1), a), np.where(flat, 0.0, b)
    through_zero = a < 0
    return np.where(through_zero, 0.0, a), np.where(through_zero, t1 / np.where(s2 > 0, s2, 1), b)


def pooled_noise(stats: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each fit's noise model ``a, b`` ``(N,)`` fitted to the squared residuals of every fit of its heatmap.

    One camera (one network) made every spot of a map, so one line ``a + b x`` holds its noise: fitted to a
    few samples of one spot, ``b`` (the shot noise) swings from spot to spot, and error bars with it (1.1-1.2x
    too small on an SMLM movie's isolated spots); pooled over the map's spots, 1.00-1.05. The line is fitted
    twice: to every fit, then to the fits whose residuals agree with it (:data:`NOISE_CUT`).
    """
    heatmaps, index = np.unique(owner, return_inverse=True)
    index = index.reshape(-1)
    stats = np.nan_to_num(stats)
    a, b = noise_line(_sums_by(index, stats, len(heatmaps)))
    # Again from the fits that agree with that line: a crowded spot with a neighbour's tail in its window
    # has residuals beyond its noise, and would raise the line for every spot (isolated spots of a dense
    # 3-D volume had a spread of 0.81 instead of 1).
    m, s1, t0 = stats[:, 0], stats[:, 1], stats[:, 3]
    with np.errstate(all="ignore"):
        excess = t0 / (a[index] * m + b[index] * s1)
    agree = excess <= 1 + NOISE_CUT * np.sqrt(2 / np.maximum(m, 1))
    sums = _sums_by(index, np.where(agree[:, None], stats, 0.0), len(heatmaps))
    again = noise_line(sums)
    some = sums[:, 0] > 0
    a, b = np.where(some, again[0], a), np.where(some, again[1], b)
    return a[index], b[index]


#: A fit agrees with its heatmap's noise line where its squared residuals over the line's variances lie
#: within this many standard deviations of a chi-square of their count (:func:`pooled_noise`).
NOISE_CUT = 3.0


def _sums_by(index: np.ndarray, stats: np.ndarray, groups: int) -> np.ndarray:
    """``stats`` ``(N, 5)`` summed over the rows of each group ``index`` ``(N,)``: ``(groups, 5)``."""
    sums = np.zeros((groups, stats.shape[1]))
    np.add.at(sums, index, stats)
    return sums


#: Samples whose value or fit lies within this many noise levels of a clip level count as clipped for the
#: uncertainty (measured best of 0, 1, 1.5 and 2 on zero-clipped maps in make bench-accuracy).
NEAR_CLIP = 1.5


def noise_terms(
    r: np.ndarray,
    jac: np.ndarray,
    y: np.ndarray,
    value: np.ndarray,
    background: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    background_column: int,
) -> NoiseTerms:
    """The :class:`NoiseTerms` of ``N`` converged fits: their standard errors under any noise model.

    Parameters
    ----------
    r, jac : ndarray, shapes ``(N, M)`` and ``(N, M, P)``
        Residuals and Jacobian at the converged fit, zero on the samples the fit left out.
    y, value : ndarray, shape ``(N, M)``
        The samples and the fitted model; ``background`` ``(N,)`` the model's background (parameter
        ``background_column``).
    lower, upper : ndarray, shape ``(N,)``
        Each fit's clip levels (``-inf``, ``inf`` where none).

    The noise's variance is modelled as ``a + b * (value - background)``, ``a, b >= 0``: white noise
    (``b = 0``) and shot noise (a variance that grows with the signal) alike, whatever the camera's offset
    and gain. It is fitted to the squared residuals divided by ``1 - h``, ``h`` each sample's leverage (the
    share of its noise the fit absorbed). Samples at a clip level, or whose value or fit lies within
    :data:`NEAR_CLIP` noise levels of one (under the fit's own noise model), are left out: the clip cuts
    their noise off. The least-squares fit's covariance is then the sandwich ``H^-1 J^T V J H^-1``,
    ``H = J^T J``, ``V`` the modelled variances. Calibrated in ``make bench-accuracy``.
    """
    used = jac[..., background_column] != 0  # the background's derivative is 1 on every sample the fit used
    x = value - background[:, None]
    kept = used & (y > lower[:, None]) & (y < upper[:, None])
    first = _noise_stats(r, jac, x, kept)
    a, b = noise_line(first[0])
    near = NEAR_CLIP * np.sqrt(np.maximum(a[:, None] + b[:, None] * x, 0))
    closer = kept & (np.minimum(y, value) > lower[:, None] + near) & (np.maximum(y, value) < upper[:, None] - near)
    # Only the fits that lost samples near a clip level are summed again (most maps have none: no clip level).
    again = np.flatnonzero(np.any(closer != kept, axis=1))
    kept = closer
    if len(again):
        first = list(first)
        if first[1] is jac:  # every sample was kept: _noise_stats passed the caller's Jacobian through
            first[1] = jac.copy()
        for whole, part in zip(first, _noise_stats(r[again], jac[again], x[again], kept[again])):
            whole[again] = part  # first's arrays are its own
    stats, jac, inverse = first
    x = np.where(kept, x, 0.0)
    # The white-noise part, H^-1 J^T J H^-1 over the kept samples, is H^-1 itself: jac is zero off them, and
    # H^-1 is the pseudo-inverse of that very J^T J (A+ A A+ = A+). Only the shot-noise part needs its sum.
    spread1 = np.einsum("nii->ni", inverse @ (jac.transpose(0, 2, 1) @ (x[..., None] * jac)) @ inverse)
    return NoiseTerms(np.einsum("nii->ni", inverse).copy(), spread1, stats)


def _pinv(a: np.ndarray) -> np.ndarray:
    """Pseudo-inverses of ``a`` ``(N, P, P)`` (symmetric, positive semi-definite); NaN where not finite or no SVD.

    Damaged data can give such a matrix: one of them never fails the others. A matrix well away from
    singular (:data:`REGULAR`, read from its own values: whatever else is in the batch) is inverted by LU
    instead of the SVD, 9 times faster and the same to 1e-14.
    """
    finite = np.all(np.isfinite(a), axis=(1, 2))
    safe = np.where(finite[:, None, None], a, np.eye(a.shape[-1]))
    diagonal = np.einsum("nii->ni", safe)
    sign, logdet = np.linalg.slogdet(safe)
    with np.errstate(divide="ignore", invalid="ignore"):
        # The determinant of its correlation matrix: 1 for orthogonal columns, 0 for dependent ones.
        regular = (sign > 0) & np.all(diagonal > 0, axis=1) & (logdet - np.log(diagonal).sum(axis=1) > np.log(REGULAR))
    out = np.empty_like(safe)
    if regular.any():
        out[regular] = np.linalg.inv(safe[regular])
    rest = np.flatnonzero(~regular)
    if len(rest):
        try:
            out[rest] = np.linalg.pinv(safe[rest])
        except np.linalg.LinAlgError:
            for n in rest:
                try:
                    out[n] = np.linalg.pinv(safe[n])
                except np.linalg.LinAlgError:
                    out[n] = np.nan
    out[~finite] = np.nan
    return out


#: A matrix :func:`_pinv` inverts by LU: its correlation matrix's determinant above this (a condition
#: number of at most about 1e11 for the 5 to 11 parameters of a fit, far from where the SVD would cut).
REGULAR = 1e-10


def _noise_stats(r: np.ndarray, jac: np.ndarray, x: np.ndarray, kept: np.ndarray):
    """The sums :func:`noise_line` takes ``(N, 5)`` over the ``kept`` samples.

    Also the Jacobian restricted to them and the pseudo-inverse of its ``J^T J``, which the covariance reuses.
    """
    m = kept.sum(axis=1).astype(np.float64)
    every = kept.all()  # most fits keep every sample: then no masked copies
    x = x if every else np.where(kept, x, 0.0)
    jac = jac if every else np.where(kept[..., None], jac, 0.0)
    inverse = _pinv(jac.transpose(0, 2, 1) @ jac)
    leverage = np.einsum("gmp,gmp->gm", jac @ inverse, jac)  # not np.sum over the short last axis: 4x slower
    y = r * r / np.clip(1 - leverage, 0.05, None)
    y = y if every else np.where(kept, y, 0.0)
    stats = np.stack([m, x.sum(axis=1), (x * x).sum(axis=1), y.sum(axis=1), (x * y).sum(axis=1)], axis=1)
    return stats, jac, inverse


def chunk(samples: int, ndim: int, k: int = 1) -> int:
    """Jobs of ``k`` spots on boxes of ``samples`` fitted together: :data:`FIT_CHUNK`, or fewer.

    Fewer where the terms of their Jacobian on the whole box would pass :data:`FIT_VALUES` (3-D windows:
    2197 samples by 7 terms a peak).
    """
    per_job = samples * (k * (1 + 2 * ndim) + 1)
    return max(1, min(FIT_CHUNK, FIT_VALUES // per_job))


def fit_window(widths: np.ndarray) -> np.ndarray:
    """Half-widths of each peak's fit window ``(N, ndim)`` from its own widths ``(N, ndim)``.

    Per axis ``ceil(2.5 sigma)``, 3 to FIT_MAX_HALF.
    """
    return np.clip(np.ceil(2.5 * widths), 3, FIT_MAX_HALF[widths.shape[1]]).astype(np.int64)


def fit_box(halves: np.ndarray) -> np.ndarray:
    """Half-widths ``(N, ndim)`` of the box each peak is fitted in, from its window's ``halves`` ``(N, ndim)``.

    Its own window where no half-width passes :data:`FIT_BOX_EXACT`; else, along every axis, its largest
    rounded up to even (at most :data:`FIT_MAX_HALF`), the window's own samples inside and the rest left out
    (NaN). Wide windows come in many shapes, a few peaks each (a movie group's 7 700 own fits had 32 shapes,
    25 of them under 30 peaks), and each shape is a batch of its own whose steps cost the NumPy calls'
    own time whatever its size: in a few square boxes they are fitted in a few batches. The box depends on
    the peak's own window alone, so its fit never depends on the peaks beside it.
    """
    ndim = halves.shape[1]
    largest = halves.max(axis=1, keepdims=True)
    square = np.minimum(-(-largest // 2) * 2, FIT_MAX_HALF[ndim])
    return np.where(largest > FIT_BOX_EXACT[ndim], square, halves)


def beyond_window(box: np.ndarray, halves: np.ndarray) -> np.ndarray | None:
    """Which samples ``(N, M)`` of a box of half-widths ``box`` ``(ndim,)`` lie past each peak's own window.

    ``halves`` ``(N, ndim)``: the windows' half-widths, within ``box`` (:func:`fit_box`); ``M`` the box's
    samples in C order. None where every window fills the box.
    """
    if np.all(halves == box):
        return None
    return np.any(np.abs(offsets(box, halves.shape[1]))[None] > halves[:, None, :], axis=2)


def spot_terms(spread: np.ndarray, k: int, ndim: int) -> np.ndarray:
    """A fit of ``k`` spots' :class:`NoiseTerms` column ``(G, P)``, per spot as :class:`Fits` keeps it.

    ``(G, k, 2 ndim)``: each spot's centre, then the shared precisions ``sigma^-2``.
    """
    g = len(spread)
    centres = spread[:, : k * ndim].reshape(g, k, ndim)
    return np.concatenate([centres, np.broadcast_to(spread[:, None, -ndim:], (g, k, ndim))], axis=2)


#: A window with no half-width past this is fitted in its own box (:func:`fit_box`). 3-D windows always
#: are: their half-widths are 3 to 6, and a cube of 6 would double the work of the common 13x9x9 window of
#: a spot twice as wide in z.
FIT_BOX_EXACT = {1: 5, 2: 5, 3: 6}


def neighbour_grid(owner: np.ndarray, centres: np.ndarray) -> PeakGrid:
    """The peaks on a grid whose :func:`~peakloc.ops.windows.near_pairs` may share samples of fit windows."""
    return peak_grid(owner, centres, 2 * FIT_MAX_HALF[centres.shape[1]])


def _fit(job: tuple, threads: int | None = None) -> Fits:
    """Fit peaks that share a box of half-widths ``box`` ``(ndim,)``: coordinates, fallback, sigma, amplitude.

    ``job`` is ``(w, spatial, centres, start, shape, upper, lower, box, half, near, errors)``: the peaks'
    boxes ``w`` ``(n, *(2 * box + 1))`` (:func:`~peakloc.ops.windows.windows`), their map's shape, their
    integer peaks and starts ``(n, ndim)``, shape estimates, clip levels ``(n,)``, their own windows'
    half-widths ``(n, ndim)`` (within ``box``: :func:`fit_box`; the samples past them are left out), and
    whether to compute the :class:`NoiseTerms` (see :func:`fit_peaks`). A pure function of its arrays, it
    runs on the run's helper processes as well as here (``threads`` is unused: one chunk is one thread's work).

    ``near`` ``(rows, offsets)``: each neighbouring peak's window row and its offset from that window's
    peak. A window's samples nearer to a neighbour than to its own peak are left out: they hold the
    neighbour's spot, which would pull a single Gaussian towards it (in crowded 3-D fields, one spot in four),
    and a fit that left samples to a neighbour may not move its peak more than :data:`CROWDED_PULL` widths.
    """
    w, spatial, centres, start, shape, upper, lower, box, half, near, errors = job
    n, ndim = centres.shape
    sigma, amplitude = shape.sigma, shape.amplitude
    w = w.reshape(n, -1)
    beyond = beyond_window(box, half)
    if beyond is not None:
        w[beyond] = np.nan
    crowded = np.zeros(n, bool)
    if near is not None:
        d_base = offsets(box, ndim).astype(np.float64)
        theirs = nearer_to_others(d_base, near[0], near[1].astype(np.float64), n)
        if beyond is not None:
            theirs &= ~beyond
        w[theirs] = np.nan
        crowded = theirs.any(axis=1)  # a neighbour beyond the window cannot be taken in
    s0 = np.clip(shape.per_axis(ndim), 0.5, half)
    a0 = np.where(amplitude > 0, amplitude, 1.0)
    theta = np.concatenate([start - centres, a0[:, None], shape.background[:, None], 1 / s0**2], axis=1)
    axes = [np.broadcast_to(np.arange(-h, h + 1, dtype=np.float64), (n, 2 * h + 1)) for h in box]
    inside = lambda t, rows: np.all(np.abs(t[:, :ndim]) <= half[rows], axis=1)  # noqa: E731
    fitted = fit_spots(w.reshape((n,) + tuple(2 * box + 1)), axes, theta, lower, upper, 1, inside, errors=errors)
    terms = fitted.terms or NoiseTerms(np.full(theta.shape, np.nan), np.full(theta.shape, np.nan), np.zeros((n, 5)))
    theta = fitted.theta
    mu = centres + theta[:, :ndim]
    precision = theta[:, -ndim:]
    spatial = np.array(spatial)
    ok = np.all(precision > 0, axis=1) & (theta[:, ndim] > 0) & np.all(np.isfinite(theta), axis=1)
    ok &= np.all((mu >= 0) & (mu <= spatial - 1), axis=1) & np.all(np.abs(theta[:, :ndim]) <= half - 0.5, axis=1)
    # Beside a neighbour, a centre far from its own local maximum has fitted two spots as one (or the other).
    with np.errstate(all="ignore"):
        pull = np.linalg.norm(theta[:, :ndim] * np.sqrt(np.abs(precision)), axis=1)  # in the fit's own widths
    ok &= ~crowded | (pull <= CROWDED_PULL)
    far = ok & crowded & (np.linalg.norm(theta[:, :ndim], axis=1) > CROWDED_PULL_PX)
    with np.errstate(all="ignore"):
        widths = np.where(ok[:, None], precision, 1.0) ** -0.5
        dof = np.maximum(fitted.used - theta.shape[1], 1)
        return Fits(
            np.where(ok[:, None], mu, centres),
            ~ok,
            np.where(ok, np.exp(np.log(widths).mean(axis=1)), sigma),
            np.where(ok, theta[:, ndim], amplitude),
            np.where(ok, theta[:, ndim + 1], shape.background),
            np.sqrt(fitted.rss / dof),
            widths,
            fitted.rss,
            half.copy(),
            lower,
            upper,
            spot_terms(terms.spread0, 1, ndim)[:, 0],
            spot_terms(terms.spread1, 1, ndim)[:, 0],
            np.where(ok[:, None], terms.stats, 0.0),
            _capped(shape.per_axis(ndim)),
            far,
        )


def _capped(widths: np.ndarray) -> np.ndarray:
    """Spots ``(N,)`` of estimated ``widths`` ``(N, ndim)`` that no window holds.

    Wider than :data:`FIT_MAX_HALF` allows (2.5 widths) along every axis, and past what the shape estimate
    measures (its clamp, ``SIGMA_WINDOW / 2``: sigma 6 px in 2-D, 4 in 3-D) along one. Wide along one axis alone, a
    spot may be two in a row, which the two-spot test is for.
    """
    ndim = widths.shape[1]
    return np.all(2.5 * widths > FIT_MAX_HALF[ndim], axis=1) & np.any(widths >= SIGMA_WINDOW[ndim] / 2, axis=1)


@dataclass
class Fits:
    """Each peak's own fit, ``N`` peaks: what :func:`locate` reports, and what the two-spot test needs.

    ``coords`` ``(N, ndim)``; ``fallback``, ``sigma``, ``amplitude``, ``background``, ``noise`` (residual
    standard deviation), ``rss`` (sum of squared residuals), ``lower`` and
    ``upper`` (clip levels) ``(N,)``; ``widths`` ``(N, ndim)`` the fitted Gaussian's
    sigma along each axis, pixels (1 where the fit failed); ``half`` ``(N, ndim)`` the window's half-widths;
    ``spread0``, ``spread1`` ``(N, 2 ndim)`` and ``stats`` ``(N, 5)``: the :class:`NoiseTerms` of the centre
    (columns ``:ndim``) and of the precisions ``sigma^-2`` (``ndim:``; a joint fit's shared ones on each of its
    spots, with its share of its ``stats``), from which :func:`pooled_errors` gives the errors;
    ``capped`` ``(N,)``: the spot is wider than its window can hold (:func:`_capped`), which shows only its top;
    ``far`` ``(N,)``: the fit left samples to a neighbour and went more than :data:`CROWDED_PULL_PX` from its
    peak, so that the peak keeps its integer position unless a joint fit places it (:meth:`settle`).
    """

    coords: np.ndarray
    fallback: np.ndarray
    sigma: np.ndarray
    amplitude: np.ndarray
    background: np.ndarray
    noise: np.ndarray
    widths: np.ndarray
    rss: np.ndarray
    half: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    spread0: np.ndarray
    spread1: np.ndarray
    stats: np.ndarray
    capped: np.ndarray
    far: np.ndarray

    def take(self, part, other: Fits) -> None:
        """Set peaks ``part`` from ``other`` (the fits of those peaks alone), in place."""
        for name in self.__dataclass_fields__:
            getattr(self, name)[part] = getattr(other, name)

    def rows(self, index) -> Fits:
        """The fits of peaks ``index``, a new :class:`Fits`."""
        return take_rows(self, index)

    def settle(self, centres: np.ndarray) -> None:
        """The final positions: a fit still :attr:`far` from its peak ``centres`` ``(N, ndim)`` falls back."""
        self.coords[self.far] = centres[self.far]
        self.fallback |= self.far
        self.far[:] = False


def pooled_errors(fits: Fits, owner: np.ndarray) -> np.ndarray:
    """Each peak's centre errors ``(N, ndim)`` under its heatmap's noise model (:func:`pooled_noise`).

    NaN where the fit fell back.
    """
    a, b = pooled_noise(fits.stats, owner)
    ndim = fits.coords.shape[1]
    both = NoiseTerms(fits.spread0, fits.spread1, fits.stats).errors(a, b)
    error, precision_error = both[:, :ndim], both[:, ndim:]
    # A fit whose residuals exceed its heatmap's noise (two spots fitted as one, a spot held at its reach)
    # is no better than its residuals say: its errors grow by the square root of the excess.
    m, s1, t0 = fits.stats[:, 0], fits.stats[:, 1], fits.stats[:, 3]
    with np.errstate(all="ignore"):
        excess = t0 / (a * m + b * s1)
    error = error * np.sqrt(np.where(np.isfinite(excess), np.maximum(excess, 1.0), 1.0))[:, None]
    error = np.sqrt(error**2 + unresolved_spread(fits, owner, width_errors(fits.widths, precision_error)))
    return np.where(fits.fallback[:, None], np.nan, error)


#: A spot wider along an axis than its heatmap's typical spot by more than this many of its own width's
#: standard errors is taken for unresolved spots (:func:`unresolved_spread`). Measured (SD of error over error
#: bar, per axis) on make bench's SMLM movie and its 5000- and 500-spot volumes, with each generator's own
#: seed and two or three fresh ones: 2 gives 1.00-1.01, 0.90-0.99 (y 0.898 on one seed) and 0.91-1.02; 2.5
#: gives 1.02-1.05, 0.92-1.09 and 0.93-1.03; 2.75 1.03-1.04, up to 1.10 (z) on the first volume; 3 1.05,
#: 1.13 (z) on it. The gate it replaced, 2.5 robust standard deviations of the heatmap's widths, read
#: 1.13-1.29 on the 5000-spot volumes.
WIDTH_GATE = 2.5
#: Fewest spots of a heatmap (not fallen back, held by their window) for its typical width.
WIDTH_SPOTS = 5
#: Share of the typical width by which a heatmap's widths may vary from spot to spot, beyond what their own
#: errors explain, and still be one point-spread function's (:func:`unresolved_spread`). Measured (the
#: widths' robust SD less their median error, in quadrature): make bench's volumes 0-1.3% (hidden
#: neighbours), its movie's frames 0% in the median and under 4.4% in 90% of them (15 spots a frame); movies
#: of spots out of focus (sigma 1.2-2.2) 17%, and of astigmatic ones (sigma x and y 1.3 x (1 -+ 0.35 z)) 22%.
WIDTH_VARIATION = 0.05


def width_errors(widths: np.ndarray, precision_errors: np.ndarray) -> np.ndarray:
    """Standard errors ``(N, ndim)`` of fitted widths ``(N, ndim)`` (sigma, px) from those of their precisions.

    The fit's parameter is the precision ``p = sigma^-2``; to first order ``d sigma = sigma^3 d p / 2``.
    """
    return 0.5 * widths**3 * precision_errors


def unresolved_spread(fits: Fits, owner: np.ndarray, errors: np.ndarray) -> np.ndarray:
    """Variance ``(N, ndim)``, px^2, to add to each centre's for the spots it may hold unresolved.

    Two spots closer than about 1.5 widths give one peak, a little wider than one spot, and a fit that sits
    between them: half their distance from each, far beyond a noise-sized error bar (one such spot in a
    thousand made the 3-D volumes' spread 1.5 instead of 1.0). Where a spot is wider than its heatmap's
    typical spot (the median, over the heatmap's spots, of the fitted width) along some axis by more than
    :data:`WIDTH_GATE` of its own width's standard errors ``errors`` ``(N, ndim)`` (:func:`width_errors`),
    the two would lie ``sqrt(w^2 - w_typical^2)`` from the fit along each axis it is wider on: that is added
    in quadrature, on every such axis.

    - Each spot's own error, not the spread of the heatmap's widths: a bright spot's width is measured to a
      percent, and a pair 0.6 to 0.85 widths apart widens it by only 4-9%, which that spread (set by the many
      dim spots) hides, while the pair puts the fit 0.3-0.4 widths from each spot, 10 or more of its error
      bars. A dim spot's width is too noisy to tell, and so is its centre, whose error bar is wider.
    - Every axis it is wider on: two spots lie along the line between them, seldom along an array axis, and
      widen each axis by their distance's share along it. The gate may see one axis and the fit's error lie
      mostly along another.
    - Where the point-spread function itself varies from spot to spot (spots out of focus, astigmatic
      ones), the widths spread by more than their errors explain: by more than :data:`WIDTH_VARIATION` of the
      typical width, that variation (the widths' robust standard deviation, 1.4826 x their median absolute
      deviation, less their median error, in quadrature) joins each spot's error in the gate. There a spot
      a little wider than typical is just another spot: gated on its error alone, more than half of an
      astigmatic movie's spots took the excess, and the typical error bar read 1.7x too large.

    It needs :data:`WIDTH_SPOTS` spots, and leaves a heatmap of fewer alone.
    """
    usable = ~fits.fallback & ~fits.capped
    widths = np.where(usable[:, None], fits.widths, np.nan)
    typical, count = grouped_median(widths, owner)
    with np.errstate(invalid="ignore"):
        spread = 1.4826 * grouped_median(np.abs(widths - typical), owner)[0]
        measured = grouped_median(np.where(np.isfinite(widths), errors, np.nan) ** 2, owner)[0]
        varied = np.maximum(spread**2 - measured - (WIDTH_VARIATION * typical) ** 2, 0.0)
        wide = (widths - typical > WIDTH_GATE * np.sqrt(errors**2 + varied)) & (count >= WIDTH_SPOTS)[:, None]
        excess = np.where(widths > typical, widths**2 - typical**2, 0.0)
    return np.where(wide.any(axis=1, keepdims=True), excess, 0.0)


def grouped_median(values: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each owner's median ``(N, D)`` of the finite ``values`` ``(N, D)`` of its rows, per column, given to each row.

    Also how many finite values of column 0 it had ``(N,)``. NaN where an owner has none.
    """
    _, index = np.unique(owner, return_inverse=True)
    index = index.reshape(-1)
    rows = np.bincount(index)
    start = np.concatenate([[0], np.cumsum(rows)[:-1]])
    out = np.empty(values.shape)
    for c in range(values.shape[1]):
        v = values[:, c]
        finite = np.bincount(index, weights=np.isfinite(v), minlength=len(rows)).astype(np.int64)
        ordered = v[np.lexsort((v, index))]  # by owner, NaN last within each
        middle = ordered[start + np.maximum(finite - 1, 0) // 2] + ordered[start + finite // 2]
        out[:, c] = np.where(finite > 0, 0.5 * middle, np.nan)[index]
        if c == 0:
            counts = finite[index]
    return out, counts


def fit_peaks(
    heatmaps: np.ndarray,
    owner: np.ndarray,
    centres: np.ndarray,
    shape: PeakShape,
    clip_levels: tuple[np.ndarray, np.ndarray] | None = None,
    threads: int | None = None,
    known: tuple[np.ndarray, Fits] | None = None,
    errors: bool = True,
) -> Fits:
    """Each peak's own fit (see the module), in windows of its own size.

    Chunks of peaks run on ``threads`` threads (default: one per core, at most 8). ``known`` is
    ``(rows, fits)``: peak ``i`` with ``rows[i] >= 0`` takes row ``rows[i]`` of ``fits``, an earlier call's
    fits of the same peaks with the same shape estimates, clip levels and neighbours (:func:`neighbour_grid`;
    a fit depends on nothing else), instead of being fitted again. Without ``errors``, no :class:`NoiseTerms`
    are computed (``spread0``, ``spread1`` NaN, ``stats`` 0): nothing else depends on them, and they are a
    third of a small batch's fit.
    """
    n, ndim = centres.shape
    fits = Fits(
        centres.astype(np.float64),
        np.ones(n, bool),
        shape.sigma.copy(),
        shape.amplitude.copy(),
        shape.background.copy(),
        shape.noise.copy(),
        np.ones((n, ndim)),
        np.full(n, np.nan),
        np.zeros((n, ndim), np.int64),
        np.full(n, -np.inf),
        np.full(n, np.inf),
        np.full((n, 2 * ndim), np.nan),
        np.full((n, 2 * ndim), np.nan),
        np.zeros((n, 5)),
        np.zeros(n, bool),
        np.zeros(n, bool),
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
    halves = np.zeros((n, ndim), np.int64)
    halves[todo] = fit_window(shape.per_axis(ndim)[todo])
    boxes, which = np.unique(fit_box(halves[todo]), axis=0, return_inverse=True)
    chunks = [
        (boxes[key], todo[members[lo : lo + size]])
        for key, members in groups(which.reshape(-1))
        for size in [chunk(int(np.prod(2 * boxes[key] + 1)), ndim)]
        for lo in range(0, len(members), size)
    ]

    grid = neighbour_grid(owner, centres)
    upper, lower = np.nan_to_num(bounds[0][owner], nan=np.inf), np.nan_to_num(bounds[1][owner], nan=-np.inf)

    def job(chunk: tuple[np.ndarray, np.ndarray]) -> tuple:
        """A chunk's :func:`_fit` job: its windows gathered here, when its turn comes (memory: a chunk each)."""
        box, part = chunk
        row = np.full(n, -1)
        row[part] = np.arange(len(part))
        first, second = near_pairs(grid, part)  # the chunk's pairs alone: memory a chunk's worth
        near = (row[first], centres[second] - centres[first])
        w = windows(heatmaps, owner[part], centres[part], box)
        return (
            w, heatmaps.shape[1:], centres[part], start[part], shape.rows(part), upper[part], lower[part], box,
            halves[part], near, errors,
        )  # fmt: skip

    # The chunks are independent: on the run's helper processes and here, else on threads (NumPy releases
    # the GIL in their loops).
    threads = numpy_backend.DEFAULT_THREADS if threads is None else max(1, int(threads))
    if isinstance(heatmaps, np.ndarray):
        found = numpy_backend.map_shared(_fit, chunks, threads, job, on_threads=True)
    else:  # a stack read in pieces: its boxes come from one file handle, one chunk after another
        found = [_fit(job(c)) for c in chunks]
    for (_, part), fitted in zip(chunks, found):
        fitted.noise = np.where(fitted.fallback, shape.noise[part], fitted.noise)
        fits.take(part, fitted)
    return fits
