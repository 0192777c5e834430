"""Several peaks per heatmap: local maxima, thresholded, spaced, ordered by height.

The rule is scikit-image's ``peak_local_max(..., exclude_border=False)``: a peak is a value equal to the
maximum of the ``(2 * min_distance + 1)`` window around it (Chebyshev), strictly above the threshold;
candidates are taken highest first, ties in C order, and one closer than ``min_distance`` (Chebyshev) to an
accepted peak is dropped. Without a threshold, peaks must be strictly above the map's minimum (flat
background is no peak), as in scikit-image. Unlike scikit-image, a constant map has one peak, its first
position, so that ``num_peaks=1`` is always the argmax; and by default a plateau (a connected region of
equal values, such as the flat top of a peak in an 8-bit map) is one peak, at its first pixel in C order,
however wide it is (``merge_plateaus=False`` gives scikit-image's one peak per ``min_distance``).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from ..errors import NoFiniteValueError, PeaklocValueError
from . import regions
from .filters import lowest, maxima_mask


def parse_threshold(text: str | float | None) -> tuple[float | None, float | None, float | None]:
    """A threshold as ``(absolute, relative, noise)``, one of them set.

    ``"0.5"`` -> absolute 0.5; ``"50%"`` -> 0.5 of the maximum; ``"5sd"`` -> 5 noise standard deviations above
    the background (:func:`noise_floor`); None -> no threshold.

    Examples
    --------
    >>> parse_threshold("50%"), parse_threshold(3), parse_threshold("5sd"), parse_threshold(None)
    ((None, 0.5, None), (3.0, None, None), (None, None, 5.0), (None, None, None))
    """
    if text is None:
        return None, None, None
    stripped = text.strip().lower() if isinstance(text, str) else None
    for suffix, slot, scale in (("%", 1, 100.0), ("sd", 2, 1.0)):
        if stripped is not None and stripped.endswith(suffix):
            value = float(stripped[: -len(suffix)]) / scale
            if not np.isfinite(value):
                raise PeaklocValueError(f"`threshold` must be finite. Got: {text}")
            out: list[float | None] = [None, None, None]
            out[slot] = value
            return out[0], out[1], out[2]
    value = float(text)
    if not np.isfinite(value):
        raise PeaklocValueError(f"`threshold` must be finite. Got: {text}")
    return value, None, None


#: Values of a map that :func:`noise_floor` looks at: every value of a map up to this size, else evenly spaced
#: rows (along the first axis) that hold about as many.
NOISE_SAMPLES = 1 << 20


def noise_rows(shape: tuple[int, ...]) -> int:
    """The step between the rows of a map of ``shape`` that :func:`noise_floor` samples (1: every row)."""
    size = int(np.prod(shape))
    return max(1, -(-size // NOISE_SAMPLES))


def noise_floor(values: np.ndarray) -> tuple[float, float]:
    """A map's background and noise standard deviation, robustly, from its sampled values (:func:`noise_rows`).

    The background is the median of the finite values; the noise is 1.4826 times the median of their
    deviations above it: the upper half of the noise, which a background clipped at zero (by a camera's
    offset removed, a network's ReLU) leaves whole, and which peaks, covering few pixels, barely move. For
    noise symmetric about the background it is the median absolute deviation. Where under a quarter of the
    values lie above the median (a background flat to the last bit: a map without noise), or that median is
    0, the plain standard deviation.
    """
    finite = np.asarray(values, np.float64).ravel()
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return np.nan, np.nan
    median = float(np.median(finite))
    above = finite[finite > median] - median
    sd = 1.4826 * float(np.median(above)) if 4 * above.size >= finite.size else 0.0
    return median, sd if sd > 0 else float(np.std(finite))


def peak_bar(hi, lo, threshold_abs=None, threshold_rel=None, noise=None):
    """What the options ask of a peak, and what it must lie strictly above: ``(asked, threshold)``.

    ``asked`` is the highest of ``threshold_abs``, ``threshold_rel`` times the map's maximum ``hi`` and, with
    ``noise`` ``(background, sd, n)`` (:func:`noise_floor`'s, and ``n`` of ``--threshold Nsd``), ``n`` noise
    deviations above the background; ``threshold`` is ``asked``, and at least the map's minimum ``lo`` where
    neither an absolute nor a noise threshold is given. Floats, or arrays of one per map. A noise floor that
    could not be read (NaN: no finite value sampled) asks nothing.
    """
    absolute = threshold_abs
    if noise is not None:
        background, sd, n = noise
        absolute = np.fmax(-np.inf if absolute is None else absolute, background + n * sd)
    asked = -np.inf if absolute is None else absolute
    if threshold_rel is not None:
        asked = np.fmax(asked, threshold_rel * hi)
    return asked, (asked if absolute is not None else np.fmax(asked, lo))


class _Kept:
    """Kept peaks on a grid of ``min_distance`` cells.

    At most one per cell (two in a cell would be closer), so a candidate's conflicts lie in the 3^ndim
    cells around its own. The cells are an array (index of the kept peak, -1 for none) up to
    :data:`GRID_CELLS` cells, else a dict, whose memory grows with the peaks kept instead of the map.
    """

    def __init__(self, shape: tuple[int, ...], min_distance: int) -> None:
        self.step = min_distance
        cells = tuple(-(-n // min_distance) + 2 for n in shape)  # a ring of empty cells: no bounds checks
        self.grid = np.full(cells, -1, np.int32) if np.prod(cells, dtype=np.float64) <= GRID_CELLS else None
        self.cells: dict[tuple[int, ...], int] = {}
        self.around = list(np.ndindex(*(3,) * len(shape)))
        self.points: list[tuple[int, ...]] = []

    def near(self, point: tuple[int, ...]) -> bool:
        """Whether a kept peak is closer than ``min_distance`` (Chebyshev) to ``point``."""
        if self.grid is not None:
            found = self.grid[tuple(slice(p // self.step, p // self.step + 3) for p in point)].ravel().tolist()
        else:
            cell = [p // self.step for p in point]
            found = [self.cells.get(tuple(c + s for c, s in zip(cell, shift)), -1) for shift in self.around]
        for k in found:
            if k >= 0 and max(abs(a - b) for a, b in zip(self.points[k], point)) < self.step:
                return True
        return False

    def add(self, point: tuple[int, ...]) -> None:
        cell = tuple(p // self.step + 1 for p in point)
        if self.grid is not None:
            self.grid[cell] = len(self.points)
        else:
            self.cells[cell] = len(self.points)
        self.points.append(point)


#: Most cells of a spacing grid held as an array (16 MiB of int32).
GRID_CELLS = 1 << 22


def _points(candidates: np.ndarray, batch: int = 4096):
    """The candidates as tuples of ints, a batch at a time: the loop often stops long before the last."""
    for start in range(0, len(candidates), batch):
        yield from map(tuple, candidates[start : start + batch].tolist())


def band_keys(x: np.ndarray, coords: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shoulders and region keys of the candidates of an integer map (tolerance one level).

    A candidate at level ``l`` belongs to the region of pixels joined to it by pixels ``>= l - 1``. Its
    region reaches a higher pixel (it is a shoulder) exactly when the band ``{l - 1, l}`` around it borders
    one, that is when its plateau of :func:`~peakloc.ops.regions.half_levels` ``(x, l % 2)`` is no regional
    maximum; otherwise that plateau is its whole region. So two labellings (one per parity of ``l``) decide
    every candidate.

    Parameters
    ----------
    x : ndarray of int, shape ``spatial``
    coords : ndarray of int64, ``(k, ndim)``
        Candidates: no neighbour of theirs is higher than they are.
    values : ndarray, ``(k,)``
        ``x`` at ``coords`` (any dtype holding them exactly).

    Returns
    -------
    shoulder : ndarray of bool ``(k,)``
        Candidates joined to a higher pixel: no peak.
    keys : ndarray of int64 ``(k,)``
        Candidates with the same key (which share their value) share their region.
    """
    return keyed_by_band(coords, values, partial(_band_parts, x), few_isolated(x, coords, values))


def keyed_by_band(
    coords: np.ndarray, values: np.ndarray, parts, alone: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`band_keys` from ``parts(points, parity, floor)``, one labelling per parity of the values.

    ``parts`` labels the band tops of :func:`~peakloc.ops.regions.half_levels` ``(x, parity)`` at or above
    ``floor`` and gives each point's component ``(j,)`` and, per component, whether it is flagged (no regional
    maximum): in memory (:func:`_band_parts`) or slab by slab (``peakloc.ops.streaming``). Candidates
    ``alone`` ``(k,)`` (:func:`isolated`) are their own regions, none a shoulder: they are not labelled.
    """
    shoulder = np.zeros(len(coords), bool)
    keys = np.zeros(len(coords), np.int64)
    parity = np.asarray(values).astype(np.int64) & 1
    if alone is not None:
        keys[alone] = -1 - np.flatnonzero(alone)  # negative: no labelled region's key
        parity[alone] = -1
    for p in (0, 1):
        # Positions, not a boolean mask, pick the rows: a mask indexing (k, ndim) rows is 6x slower.
        chosen = np.flatnonzero(parity == p)
        if chosen.size:
            # A candidate's band lies at or above its value less one: nothing lower needs a label.
            found, flagged = parts(coords.take(chosen, axis=0), p, int(np.asarray(values).take(chosen).min()) - 1)
            shoulder[chosen] = flagged[found]
            keys[chosen] = found * 2 + p
    return shoulder, keys


def isolated(x: np.ndarray, coords: np.ndarray, values: np.ndarray, ndim: int | None = None) -> np.ndarray:
    """Candidates ``(k,)`` whose every neighbour lies at least two levels below them, in an integer map ``x``.

    Such a candidate's band ``{l - 1, l}`` (:func:`band_keys`) is itself alone: its half level is above every
    neighbour's in either parity, so it is a regional maximum of one pixel, which no other candidate shares.
    Most spots of a camera's frames are (their top pixel stands out by tens of counts), and then no map
    needs labelling. ``coords`` ``(k, x.ndim)``; only the last ``ndim`` axes (default: all) are spatial, the
    others index maps of a stack. A neighbour outside the map is no neighbour.
    """
    ndim = x.ndim if ndim is None else ndim
    lead = x.ndim - ndim
    size = np.array(x.shape[lead:])
    shifts = np.array([s for s in np.ndindex(*(3,) * ndim) if any(a != 1 for a in s)]) - 1  # (3^ndim - 1, ndim)
    point = np.repeat(np.asarray(coords)[:, None, :], len(shifts), axis=1)  # (k, neighbours, x.ndim)
    point[..., lead:] += shifts
    inside = np.all((point[..., lead:] >= 0) & (point[..., lead:] < size), axis=-1)
    point[~inside] = 0
    neighbour = x[tuple(np.moveaxis(point, -1, 0))].astype(np.int64)
    below = np.asarray(values).astype(np.int64)[:, None] - 2
    return np.all(~inside | (neighbour <= below), axis=1)


def few_isolated(x: np.ndarray, coords: np.ndarray, values: np.ndarray, ndim: int | None = None):
    """:func:`isolated`, where candidates are few (at most one pixel in :data:`ISOLATED_SHARE`); else None.

    Many candidates are a quantised map's plateaus, which are never isolated and are labelled whatever: the
    256x256 broad 8-bit peaks of make bench hold a candidate in every few pixels, whose neighbours took 0.5
    ms a map to read for nothing. Either way the same keys.
    """
    return isolated(x, coords, values, ndim) if len(coords) * ISOLATED_SHARE <= x.size else None


#: Candidates :func:`few_isolated` tells apart: at most one pixel in this many (an SMLM frame: one in 800).
ISOLATED_SHARE = 64


def gathered(above: int, size: int, floor: int, dtype) -> bool:
    """Whether band tops are gathered pixel by pixel: ``above`` of ``size`` pixels at or above ``floor``.

    Only where few are (:data:`SPARSE_SHARE`) in a map of at least :data:`SPARSE_SIZE` pixels, and where
    ``floor`` lies above the dtype's lowest value (which :func:`~peakloc.ops.regions.sparse_band` pads the
    map with).
    """
    return floor > np.iinfo(dtype).min and above * SPARSE_SHARE <= size and size >= SPARSE_SIZE


def _band_parts(x: np.ndarray, points: np.ndarray, parity: int, floor: int) -> tuple[np.ndarray, np.ndarray]:
    """Components of ``points`` among the band tops of ``x`` at or above ``floor``, and their flags."""
    if gathered(int(np.count_nonzero(x >= floor)), x.size, floor, x.dtype):
        where, component, flagged = regions.sparse_band(x, parity, floor)
        return component[regions.find_rows(where, points)], flagged
    top, edge = regions.band_tops(regions.half_levels(x, parity))
    labels, count = regions.label(top)
    return labels[tuple(points.T)].astype(np.int64), regions.flag_labels(labels, count, edge)


#: Band tops are gathered pixel by pixel (:func:`~peakloc.ops.regions.sparse_band`) where at most one
#: pixel in this many lies at or above the lowest candidate's band; else the whole map is labelled.
SPARSE_SHARE = 64
#: Smaller maps are labelled whole: two labellings of a 256x256 map cost no more than gathering (1.3 ms
#: against 1.5 ms, uint16 frames of an SMLM movie; 6.6 ms against 3.3 ms at 512x512).
SPARSE_SIZE = 1 << 17


def level_keys(x: np.ndarray, level: float, coords: np.ndarray) -> np.ndarray:
    """Region keys at ``level``: equal where ``coords`` are joined by pixels ``>= level`` (a float map's rule)."""
    labels, _ = regions.label(x >= level)
    return labels[tuple(coords.T)].astype(np.int64)


def choose(
    coords: np.ndarray,
    values: np.ndarray,
    min_distance: int,
    num_peaks: int,
    shape: tuple[int, ...],
    shoulder: np.ndarray | None = None,
    keys: np.ndarray | None = None,
    joined=None,
) -> np.ndarray:
    """Greedy: keep candidates (best first) not closer than ``min_distance`` to a kept one, ``num_peaks`` at most.

    Plateau merging, when asked: a candidate in ``shoulder`` is no peak, and one that shares its region with
    a kept candidate of the same value is part of that peak. Regions are told by ``keys`` (computed for all
    candidates beforehand), or by ``joined(value, points)``, which gives keys of the candidates ``points``
    ``(j, ndim)`` (all those of that value, asked once per value, and only where two of them both pass the
    spacing test).

    Parameters
    ----------
    coords : ndarray of int64, ``(k, ndim)``
        Candidates, highest first, ties in C order: maxima of the box of radius ``min_distance`` around
        them (:func:`~peakloc.ops.filters.maxima_mask`), so that only candidates of one value can be closer.
    values : ndarray ``(k,)``
        Their values.
    shape : tuple of int
        The map's.

    Returns
    -------
    ndarray of int64, ``(n, ndim)``, ``n <= num_peaks``
    """
    if shoulder is not None:
        alive = np.flatnonzero(~shoulder)
        coords, values, keys = coords[alive], values[alive], keys[alive] if keys is not None else None
    ndim = coords.shape[1]
    if min_distance <= 1 and joined is None:
        # Nothing is near another: the first candidate of each region is its peak (every one without merging).
        first = np.unique(keys, return_index=True)[1] if keys is not None else np.arange(len(coords))
        return coords[np.sort(first)[:num_peaks]]
    # Only candidates of one value can be closer than min_distance, or share a region (a region's candidates
    # share their value): a candidate whose value no other holds is a peak, and the greedy loop needs only
    # the others, each value's among themselves (its order over them is the order over all).
    tied = np.zeros(len(values), bool)
    same_value = values[1:] == values[:-1]
    tied[1:] |= same_value
    tied[:-1] |= same_value
    keep = ~tied
    if not tied.any():  # the usual case in a camera's frame: every candidate is a peak
        return coords[:num_peaks].astype(np.int64, copy=False).reshape(-1, ndim)
    alone_before = np.cumsum(keep) - keep
    kept = _Kept(shape, min_distance) if min_distance > 1 else None
    chosen = 0
    taken: set = set()
    by_value: dict[float, list[int]] = {}
    runs: dict[float, tuple[int, np.ndarray]] = {}
    descending = -np.asarray(values, np.float64)  # ascending: where each value's run starts and ends
    ties = np.flatnonzero(tied)
    for k, point in zip(ties.tolist(), _points(coords[ties])):
        if alone_before[k] + chosen >= num_peaks:
            break
        if kept is not None and kept.near(point):
            continue
        if keys is not None:
            if int(keys[k]) in taken:
                continue
            taken.add(int(keys[k]))
        elif joined is not None:
            value = float(values[k])
            same = by_value.setdefault(value, [])
            if same:
                if value not in runs:
                    # Candidates of one value are consecutive: their regions come from one labelling.
                    lo, hi = np.searchsorted(descending, -value, "left"), np.searchsorted(descending, -value, "right")
                    runs[value] = (lo, joined(value, coords[lo:hi]))
                lo, keys_here = runs[value]
                if keys_here[k - lo] in {keys_here[j - lo] for j in same}:
                    continue
            same.append(k)
        if kept is not None:
            kept.add(point)
        keep[k] = True
        chosen += 1
    return coords[keep][:num_peaks].astype(np.int64, copy=False).reshape(-1, ndim)


def local_maxima(
    heatmap: np.ndarray,
    num_peaks: int = 1,
    min_distance: int = 1,
    threshold_abs: float | None = None,
    threshold_rel: float | None = None,
    candidates: np.ndarray | None = None,
    merge_plateaus: bool = True,
    threshold_sd: float | None = None,
) -> np.ndarray:
    """Peaks of one heatmap.

    Parameters
    ----------
    heatmap : ndarray, shape ``spatial`` (1-D to 3-D)
        NaN and inf are ignored.
    num_peaks : int
        At most this many.
    min_distance : int
        Minimum Chebyshev distance between peaks, in pixels (>= 1).
    threshold_abs, threshold_rel, threshold_sd : float, optional
        Peaks must be strictly above ``threshold_abs`` (default: the map's minimum), above ``threshold_rel``
        times the maximum, and ``threshold_sd`` noise standard deviations above the background
        (:func:`noise_floor`).
    candidates : ndarray of bool, optional
        ``x == maximum_filter(x, min_distance)``, already computed (by the GPU's max pooling).
    merge_plateaus : bool
        One peak per plateau of equal values (default), or scikit-image's rule (False). In integer maps
        a candidate joined to a higher pixel by a ridge at most one level lower is also dropped, and
        candidates so joined to a kept peak merge with it: rounding makes such bumps, not the data.

    Returns
    -------
    ndarray of int64, shape ``(n, ndim)``, ``0 <= n <= num_peaks``
        Array-axis order, highest first, ties in C order; ``np.empty((0, ndim), int)`` when none.
    """
    x = np.asarray(heatmap)
    noise = None if threshold_sd is None else (*noise_floor(x[:: noise_rows(x.shape)]), threshold_sd)
    x = comparable(x)
    # Compared and filtered in its own dtype (exact); values leave it as float64, never compared in float32.
    finite = None
    if x.dtype.kind == "f":
        finite = np.isfinite(x)
        if not finite.any():
            raise NoFiniteValueError("the heatmap has no finite value")
        if not finite.all():
            x = np.where(finite, x, -np.inf).astype(x.dtype)
    hi = float(x.max())
    lo = float(x.min() if finite is None else np.where(finite, x, np.inf).min())
    asked, threshold = map(float, peak_bar(hi, lo, threshold_abs, threshold_rel, noise))
    if lo == hi:  # constant map: its argmax, the first position, is its only peak
        first = np.array(np.unravel_index(int(np.argmax(x)), x.shape), dtype=np.int64)[None]
        return first if hi > asked else np.empty((0, x.ndim), np.int64)
    if candidates is None:
        mask = maxima_mask(x, min_distance, above=threshold)
    else:
        mask = candidates & (x > np.float64(threshold))
    flat = np.flatnonzero(mask)
    values = x.reshape(-1)[flat]
    order = highest_first(values)
    flat, values = flat[order], values[order]
    coords = unravel(flat, x.shape)
    return pick(x, coords, values, min_distance, num_peaks, merge_plateaus, np.asarray(heatmap).dtype.kind in "iu")


#: Maps of fewer values are found together by :func:`stack_local_maxima`. Larger ones gain nothing: their own
#: labelling outweighs a call's overhead (256x256 8-bit maps of broad blobs: 0.71x to 1.07x the speed of one
#: map at a time; 181x181: 1.08x to 1.32x; 64x48: 3.8x to 4.6x).
STACK_MAP_VALUES = 1 << 15


def stacks_at_once(stack: np.ndarray) -> bool:
    """Whether :func:`stack_local_maxima` takes ``stack`` ``(B, *spatial)``: several small maps.

    Integer maps of up to 4 bytes (their values exact in float64) or float32 and float64 maps, each of fewer
    than :data:`STACK_MAP_VALUES` values (one map alone is then labelled whole, as the stack is:
    :data:`SPARSE_SIZE`).
    """
    return (
        isinstance(stack, np.ndarray)
        and len(stack) > 1
        and ((stack.dtype.kind in "iu" and stack.dtype.itemsize <= 4) or stack.dtype in (np.float32, np.float64))
        and 0 < stack[0].size < min(STACK_MAP_VALUES, SPARSE_SIZE)
    )


#: Values of the maps :func:`stack_local_maxima` takes at once: a few copies of them (the maps laid end to end,
#: their half levels, masks and int32 labels) stay in cache and small beside the stack, whatever its length.
STACK_VALUES = 1 << 20


def stack_local_maxima(
    stack: np.ndarray,
    num_peaks: int = 1,
    min_distance: int = 1,
    threshold_abs: float | None = None,
    threshold_rel: float | None = None,
    merge_plateaus: bool = True,
    threshold_sd: float | None = None,
) -> list[np.ndarray]:
    """``[local_maxima(m, ...) for m in stack]``, the same arrays, for a stack where :func:`stacks_at_once`.

    Raises :class:`~peakloc.errors.NoFiniteValueError` where a map has no finite value, without saying which:
    callers then go map by map, whose error names it.

    The maps lie end to end along their first axis, :data:`STACK_VALUES` values at a time, apart by rows of
    the dtype's lowest value, which no window crosses: the maximum filter, and an integer map's plateau
    labelling by parity (:func:`band_keys`), run once over many maps instead of once per map (1000 SMLM
    frames of 128x128: 0.35 s against 0.49 s; 1088 float32 pose maps of 64x48: 36 ms against 114 ms). Only
    the greedy spacing (:func:`choose`, with a float map's own :func:`level_keys`) goes map by map.
    """
    step = max(1, STACK_VALUES // stack[0].size)
    out: list[np.ndarray] = []
    for start in range(0, len(stack), step):
        out += _stack_local_maxima(
            stack[start : start + step],
            num_peaks,
            min_distance,
            threshold_abs,
            threshold_rel,
            merge_plateaus,
            threshold_sd,
        )
    return out


def _stack_local_maxima(
    stack, num_peaks, min_distance, threshold_abs, threshold_rel, merge_plateaus, threshold_sd
) -> list[np.ndarray]:
    """:func:`stack_local_maxima` of a few maps at once."""
    b, spatial = len(stack), stack.shape[1:]
    noise = None
    if threshold_sd is not None:  # from the maps as they are, as local_maxima takes it
        floors = np.array([noise_floor(m[:: noise_rows(spatial)]) for m in stack])
        noise = (floors[:, 0], floors[:, 1], threshold_sd)
    integer, given = stack.dtype.kind in "iu", stack
    finite = None if integer else np.isfinite(stack)
    if finite is not None and not finite.all():
        if not finite.reshape(b, -1).any(axis=1).all():
            raise NoFiniteValueError("a heatmap has no finite value")
        stack = np.where(finite, stack, -np.inf).astype(stack.dtype)  # as local_maxima: never a peak
    flat = stack.reshape(b, -1)
    hi = flat.max(axis=1).astype(np.float64)
    lo = (flat if finite is None else np.where(finite.reshape(b, -1), flat, np.inf)).min(axis=1).astype(np.float64)
    threshold = np.broadcast_to(peak_bar(hi, lo, threshold_abs, threshold_rel, noise)[1], (b,))
    guard = max(1, int(min_distance))
    canvas = _laid_end_to_end(stack, guard, lowest(stack.dtype))
    mask = maxima_mask(canvas, min_distance, above=float(threshold.min()))
    # Positions in the whole canvas (contiguous: 3x faster than nonzero of the maps' rows), less any in the
    # guard rows.
    owner, *position = unravel(np.flatnonzero(mask), (b, spatial[0] + guard, *spatial[1:])).T
    inside = position[0] < spatial[0]
    if not inside.all():
        owner, position = owner[inside], [p[inside] for p in position]
    values = stack[(owner, *position)]
    keep = values.astype(np.float64) > threshold[owner]  # exact: float64 holds every value of these dtypes
    owner, position, values = owner[keep], [p[keep] for p in position], values[keep]
    # Each map's candidates highest first, ties in C order: nonzero listed them by map, in C order.
    order = np.lexsort((np.arange(len(values)), -values.astype(np.float64), owner))
    owner, values = owner[order], values[order]
    coords = np.stack([p[order] for p in position], axis=1).astype(np.int64).reshape(len(order), len(spatial))
    shoulder = keys = None
    if merge_plateaus and integer:
        # The labelling's maps lie one row apart: a band is joined by neighbours only.
        points = coords.copy()
        points[:, 0] += owner * (spatial[0] + 1)
        alone = few_isolated(stack, np.concatenate([owner[:, None], coords], axis=1), values, len(spatial))
        shoulder, keys = keyed_by_band(points, values, partial(_stack_band_parts, stack), alone)
    starts = np.searchsorted(owner, np.arange(b + 1))
    out = []
    for m in range(b):
        if lo[m] == hi[m]:  # a constant map: local_maxima's own answer, its first position or none
            out.append(local_maxima(given[m], num_peaks, min_distance, threshold_abs, threshold_rel, None,
                                    merge_plateaus, threshold_sd))  # fmt: skip
            continue
        part = slice(starts[m], starts[m + 1])
        joined = partial(level_keys, stack[m]) if merge_plateaus and not integer else None
        out.append(
            choose(
                coords[part],
                values[part],
                min_distance,
                num_peaks,
                spatial,
                None if shoulder is None else shoulder[part],
                None if keys is None else keys[part],
                joined,
            )
        )
    return out


def _laid_end_to_end(stack: np.ndarray, guard: int, fill) -> np.ndarray:
    """``stack`` ``(B, n0, ...)`` end to end, ``(B * (n0 + guard), ...)``: ``guard`` rows of ``fill`` after each map."""
    b, spatial = len(stack), stack.shape[1:]
    canvas = np.empty((b, spatial[0] + guard, *spatial[1:]), stack.dtype)
    canvas[:, : spatial[0]] = stack
    canvas[:, spatial[0] :] = fill
    return canvas.reshape(b * (spatial[0] + guard), *spatial[1:])


def _stack_band_parts(stack: np.ndarray, points: np.ndarray, parity: int, floor: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_band_parts` of the maps of ``stack`` that hold ``points`` (in the maps laid end to end, one row apart).

    Those maps are labelled together, laid end to end again; the rows between them hold the dtype's lowest
    value in the half levels, which :func:`~peakloc.ops.regions.band_tops` reads as absent: no band crosses
    them, as none crosses a map's edge. A map with no point of this parity is not labelled (as one map alone
    would not be). ``floor`` is not needed: every map is labelled whole.
    """
    rows = stack.shape[1] + 1
    owner, row = np.divmod(points[:, 0], rows)
    maps, local = np.unique(owner, return_inverse=True)
    q = regions.half_levels(stack[maps], parity)
    top, edge = regions.band_tops(_laid_end_to_end(q, 1, np.iinfo(q.dtype).min))
    labels, count = regions.label(top)
    where = points.copy()
    where[:, 0] = local.reshape(-1) * rows + row
    return labels[tuple(where.T)].astype(np.int64), regions.flag_labels(labels, count, edge)


def highest_first(values: np.ndarray) -> np.ndarray:
    """Indices that order ``values`` ``(k,)`` highest first, ties in their given order.

    Integers of one or two bytes by a stable sort of ``max - values`` in the unsigned type of their size,
    which NumPy radix-sorts (4x faster than sorting them as float64 on the 8k candidates of a broad 8-bit
    map); other values as float64.

    Examples
    --------
    >>> highest_first(np.array([3, 7, 3, 9], np.int8)).tolist()
    [3, 1, 0, 2]
    """
    if values.dtype.kind in "iu" and values.dtype.itemsize <= 2:
        key = (np.iinfo(values.dtype).max - values.astype(np.int32)).astype(f"u{values.dtype.itemsize}")
        return np.argsort(key, kind="stable")
    return np.argsort(-values.astype(np.float64), kind="stable")


def unravel(flat: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``np.unravel_index`` of C-order positions ``flat`` ``(k,)`` as int64 rows ``(k, len(shape))``.

    By ``divmod`` one axis at a time, from the last: 1.7x faster than ``np.unravel_index`` and a stack.

    Examples
    --------
    >>> unravel(np.array([0, 5, 11]), (3, 4)).tolist()
    [[0, 0], [1, 1], [2, 3]]
    """
    out = np.empty((len(flat), len(shape)), np.int64)
    rest = np.asarray(flat, np.int64)
    for axis in range(len(shape) - 1, 0, -1):
        rest, out[:, axis] = np.divmod(rest, shape[axis])
    out[:, 0] = rest
    return out


def comparable(x: np.ndarray) -> np.ndarray:
    """``x`` as local maxima compare it.

    In its own dtype (a maximum is exact in any); floats of fewer than 4 bytes and booleans as float32, other
    kinds as float64.
    """
    if x.dtype.kind == "b" or (x.dtype.kind == "f" and x.dtype.itemsize < 4):
        return x.astype(np.float32)
    if x.dtype.kind not in "iuf":
        return x.astype(np.float64)
    return x


def pick(
    x: np.ndarray,
    coords: np.ndarray,
    values: np.ndarray,
    min_distance: int,
    num_peaks: int,
    merge_plateaus: bool,
    integer: bool,
) -> np.ndarray:
    """:func:`choose` among the candidates ``coords`` (best first) of the map ``x``, its regions found in ``x``.

    In an integer map (``integer``), rounding leaves bumps one level high on the ridges between peaks: a
    region there takes in pixels one level below (:func:`band_keys`). In a float map it is the pixels at or
    above the candidate's value, labelled only for values that two candidates share (:func:`level_keys`).
    """
    if not merge_plateaus:
        return choose(coords, values, min_distance, num_peaks, x.shape)
    if integer:
        shoulder, keys = band_keys(x, coords, values)
        return choose(coords, values, min_distance, num_peaks, x.shape, shoulder, keys)
    return choose(coords, values, min_distance, num_peaks, x.shape, joined=partial(level_keys, x))


def validate_counts(num_peaks, min_distance) -> tuple[int, int]:
    """``num_peaks`` and ``min_distance`` as ints >= 1, else TypeError or :class:`PeaklocValueError`."""
    for name, value in (("num_peaks", num_peaks), ("min_distance", min_distance)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"`{name}` must be an int. Got: {type(value).__name__}")
        if value < 1:
            raise PeaklocValueError(f"`{name}` must be >= 1. Got: {value}")
    return int(num_peaks), int(min_distance)
