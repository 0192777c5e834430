"""Today's plateau-merging peak search, kept as the reference the one-pass search in the package must equal.

This is ``peakloc.ops.peaks`` as it was before the one-pass search (one flood fill per candidate, seconds on
broad 8-bit peaks): the rule is the same, so its peaks are the answer the property tests compare with.
"""

from __future__ import annotations

import numpy as np

from peakloc.errors import NoFiniteValueError
from peakloc.ops.filters import maximum_filter

RIDGE_TOLERANCE = 1.0


def _dilate(mask: np.ndarray) -> np.ndarray:
    """``mask`` grown by one pixel towards all 3**ndim - 1 neighbours."""
    out = mask.copy()
    for axis in range(mask.ndim):
        grown = out.copy()
        index_a = [slice(None)] * mask.ndim
        index_b = [slice(None)] * mask.ndim
        index_a[axis], index_b[axis] = slice(1, None), slice(None, -1)
        grown[tuple(index_a)] |= out[tuple(index_b)]
        grown[tuple(index_b)] |= out[tuple(index_a)]
        out = grown
    return out


#: Dilation steps tried before a 2-D region is labelled by OpenCV instead (which costs its import once).
GROWTH_STEPS = 8


def _component(allowed: np.ndarray, seed: tuple) -> np.ndarray:
    """The 8- (26-) connected component of ``allowed`` that holds ``seed``.

    Grown by dilation, one pixel per step: a float map's plateaus are a pixel or two. A wide 2-D region (the
    flat top of a broad 8-bit peak) is labelled in one pass instead of one dilation per pixel of its width.
    """
    region = np.zeros(allowed.shape, bool)
    region[seed] = True
    count = 1
    for step in range(allowed.size):
        if step == GROWTH_STEPS and allowed.ndim == 2:
            import cv2

            _, labels = cv2.connectedComponents(allowed.view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
            return labels == labels[seed]
        region = _dilate(region) & allowed
        grown = int(region.sum())
        if grown == count:
            break
        count = grown
    return region


def _region(x, point: np.ndarray, floor: float, reach: int) -> tuple[np.ndarray, tuple, np.ndarray]:
    """Connected (8- or 26-neighbour) pixels ``>= floor`` around ``point``, their box, and its values.

    The box starts ``reach`` pixels each side and doubles while the region touches its edge. ``x`` is an
    ndarray or anything that reads boxes (:class:`~peakloc.ops.lazy.Map`-like), in float64 with -inf.
    """
    while True:
        box = tuple(slice(max(0, p - reach), p + reach + 1) for p in point)
        crop = np.asarray(x[box], dtype=np.float64)
        region = _component(np.ascontiguousarray(crop >= floor), tuple(p - b.start for p, b in zip(point, box)))
        at_edge = any(
            (region.take(0, axis=a).any() and box[a].start > 0)
            or (region.take(-1, axis=a).any() and box[a].start + crop.shape[a] < x.shape[a])
            for a in range(len(x.shape))
        )
        if not at_edge:
            return region, box, crop
        reach *= 2


class _Regions:
    """Pixels already merged into a kept peak: one bool array for an in-memory map, else the regions' boxes."""

    def __init__(self, shape: tuple[int, ...], dense: bool) -> None:
        self.mask = np.zeros(shape, bool) if dense else None
        self.boxes: list[tuple[tuple, np.ndarray]] = []

    def add(self, box: tuple, region: np.ndarray) -> None:
        if self.mask is not None:
            self.mask[box] |= region
        else:
            self.boxes.append((box, region))

    def __contains__(self, point: tuple) -> bool:
        if self.mask is not None:
            return bool(self.mask[point])
        for box, region in self.boxes:
            if all(b.start <= p < b.start + n for p, b, n in zip(point, box, region.shape)):
                if region[tuple(p - b.start for p, b in zip(point, box))]:
                    return True
        return False


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


def _alone(x, point: tuple[int, ...], floor: float) -> bool:
    """Whether no neighbour of ``point`` (8 or 26) is ``>= floor``: its plateau is itself, no labelling needed."""
    box = tuple(slice(max(0, p - 1), p + 2) for p in point)
    return int(np.count_nonzero(np.asarray(x[box], dtype=np.float64) >= floor)) == 1


def greedy_spacing(
    candidates: np.ndarray,
    min_distance: int,
    num_peaks: int,
    x=None,
    tolerance: float = 0.0,
    values: np.ndarray | None = None,
    shape: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Greedy: keep candidates (sorted, best first) not closer than ``min_distance`` to a kept one.

    With ``x`` (plateau merging), a kept candidate also removes every candidate joined to it by pixels no
    more than ``tolerance`` below it (its plateau, and in integer maps the one-level ridges of rounding),
    and a candidate so joined to a higher pixel is no peak. ``x`` is the map (non-finite values -inf): an
    ndarray, or a reader of float64 boxes for a map read in pieces. ``values`` are the candidates' values
    (default: read from ``x``); ``shape`` the map's (default ``x``'s, else the candidates' extent).
    """
    if x is None and (min_distance <= 1 or len(candidates) <= 1):
        return candidates[:num_peaks]
    if shape is None:
        shape = tuple(x.shape) if x is not None else tuple(int(n) + 1 for n in candidates.max(axis=0))
    kept = _Kept(shape, min_distance) if min_distance > 1 else None
    chosen: list[tuple[int, ...]] = []
    merged = _Regions(shape, isinstance(x, np.ndarray)) if x is not None else None
    reach = max(4 * min_distance, 16)
    for k, point in enumerate(_points(candidates)):
        if kept is not None and kept.near(point):
            continue
        if merged is not None:
            if point in merged:
                continue
            value = float(x[point]) if values is None else float(values[k])
            if _alone(x, point, value - tolerance):
                merged.add(tuple(slice(p, p + 1) for p in point), np.ones((1,) * len(point), bool))
            else:
                region, box, crop = _region(x, np.asarray(point), value - tolerance, reach)
                if tolerance and (crop[region] > value).any():
                    continue  # a shoulder of a higher peak, not a peak of its own
                merged.add(box, region)
        if kept is not None:
            kept.add(point)
        chosen.append(point)
        if len(chosen) >= num_peaks:
            break
    return np.asarray(chosen, dtype=np.int64).reshape(-1, candidates.shape[1])


def local_maxima(
    heatmap: np.ndarray,
    num_peaks: int = 1,
    min_distance: int = 1,
    threshold_abs: float | None = None,
    threshold_rel: float | None = None,
    candidates: np.ndarray | None = None,
    merge_plateaus: bool = True,
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
    threshold_abs, threshold_rel : float, optional
        Peaks must be strictly above ``threshold_abs`` (default: the map's minimum) and above
        ``threshold_rel`` times the maximum.
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
    if x.dtype.kind == "b" or (x.dtype.kind == "f" and x.dtype.itemsize < 4):
        x = x.astype(np.float32)
    elif x.dtype.kind not in "iuf":
        x = x.astype(np.float64)
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
    asked = -np.inf if threshold_abs is None else threshold_abs
    if threshold_rel is not None:
        asked = max(asked, threshold_rel * hi)
    if lo == hi:  # constant map: its argmax, the first position, is its only peak
        first = np.array(np.unravel_index(int(np.argmax(x)), x.shape), dtype=np.int64)[None]
        return first if hi > asked else np.empty((0, x.ndim), np.int64)
    threshold = max(asked, lo) if threshold_abs is None else asked
    if candidates is None:
        candidates = x == maximum_filter(x, min_distance)
    mask = candidates & (x > np.float64(threshold))
    coords = np.argwhere(mask)
    values = x[mask].astype(np.float64)
    order = np.argsort(-values, kind="stable")
    # In an integer map, rounding leaves bumps one level high on the ridges between peaks.
    tolerance = RIDGE_TOLERANCE if np.asarray(heatmap).dtype.kind in "iu" else 0.0
    return greedy_spacing(
        coords[order], min_distance, num_peaks, x if merge_plateaus else None, tolerance, values[order], x.shape
    )
