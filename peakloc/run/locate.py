"""One input, end to end: read it, lay it out as heatmaps, locate its peaks with every method asked for.

:mod:`.batch` calls :func:`read_heatmaps` and :func:`locate` per input (or per stack of single-map inputs,
which :meth:`Located.part` splits again); this module holds the wiring, not the maths or the formats.
"""

from __future__ import annotations

import os
import stat
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from .. import backends
from ..backends.numpy_backend import count_per_row
from ..errors import NoFiniteValueError, NoRoomError
from ..io import is_supported, read, readers, remote
from ..io.axes import Layout, arrangement, to_heatmaps
from ..io.probe import probe
from ..io.readers import kind_of
from ..io.remote import is_url
from ..ops.coords import pixel_to_normalized
from ..ops.interpolate import interpolate
from ..ops.lazy import KeptBoxes, Maps, is_lazy
from ..output.table import SHAPE_COLUMNS
from .budget import LABEL_BYTES, check, describe, fixed_bytes, needed, value_bytes
from .settings import REFINE_METHODS, Settings

if TYPE_CHECKING:
    from ..ops.streaming import Slabs


@dataclass(frozen=True)
class MethodPeaks:
    """One method's peaks of ``B`` heatmaps, up to ``P`` per heatmap.

    Attributes
    ----------
    coords : ndarray, shape ``(B, P, ndim)``
        Pixel coordinates in array-axis order: int64 for ``argmax``, float64 otherwise. Meaningful only
        where ``present``.
    values : ndarray, shape ``(B, P)``
        Raw heatmap values at the peaks.
    present : ndarray of bool, shape ``(B, P)``
        Where heatmap ``b`` has a peak of rank ``p + 1``: the one mark of a missing peak.
    fallback : ndarray of bool, shape ``(B, P)``
        Where a sub-pixel method kept the integer peak.
    shape : dict
        With ``extra``: column of :data:`~peakloc.output.table.SHAPE_COLUMNS` -> ``(B, P)`` float64; else
        empty.
    error : ndarray, shape ``(B, P, ndim)``, optional
        With ``extra``: the 1-sigma uncertainty of each coordinate, pixels, NaN where the method has none.
    split : ndarray of bool, shape ``(B, P)``, optional
        With ``extra``: where the peak is one of the two spots split out of a merged peak.
    """

    coords: np.ndarray
    values: np.ndarray
    present: np.ndarray
    fallback: np.ndarray
    shape: dict[str, np.ndarray]
    error: np.ndarray | None = None
    split: np.ndarray | None = None

    def rows(self, start: int, stop: int) -> MethodPeaks:
        """The peaks of heatmaps ``start:stop``."""
        part = slice(start, stop)
        return MethodPeaks(
            self.coords[part],
            self.values[part],
            self.present[part],
            self.fallback[part],
            {k: v[part] for k, v in self.shape.items()},
            None if self.error is None else self.error[part],
            None if self.split is None else self.split[part],
        )


@dataclass(frozen=True)
class Located:
    """The peaks of one input.

    Attributes
    ----------
    heatmaps : ndarray, shape ``(B, *spatial)``
        The input's raw heatmaps, batch flattened in C order.
    layout : Layout
    peaks : dict
        Method -> :class:`MethodPeaks`, in row order.
    nonfinite : ndarray of int, shape ``(B,)``
        Non-finite values ignored in each heatmap.
    """

    heatmaps: np.ndarray
    layout: Layout
    peaks: dict[str, MethodPeaks]
    nonfinite: np.ndarray
    threshold: str | None = None

    def part(self, index: int, layout: Layout) -> Located:
        """Heatmap ``index`` of a stack located in one call, as the single-map input (``layout``) it came from."""
        return Located(
            self.heatmaps[index : index + 1],
            layout,
            {m: p.rows(index, index + 1) for m, p in self.peaks.items()},
            self.nonfinite[index : index + 1],
            self.threshold,
        )

    def _problems(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Per heatmap ``(B,)``: whether it has no peak, and each method's peaks that fell back.

        What :meth:`warnings` reports (with :attr:`nonfinite`) and :meth:`warned` flags.
        """
        first = next(iter(self.peaks.values()), None)
        empty = np.zeros(len(self.nonfinite), bool) if first is None else ~first.present[:, 0]
        fallen = {m: np.count_nonzero(p.fallback & p.present, axis=1) for m, p in self.peaks.items()}
        return empty, fallen

    def warned(self) -> np.ndarray:
        """Per heatmap ``(B,)``: whether it alone, as an input of its own, has :meth:`warnings`."""
        empty, fallen = self._problems()
        return (self.nonfinite > 0) | empty | np.any([n > 0 for n in fallen.values()], axis=0)

    def warnings(self) -> list[str]:
        """One line per kind of problem met in this input's heatmaps, sorted (see :meth:`warned`)."""
        messages = []
        count = int(self.nonfinite.sum())
        if count:
            messages.append(f"{count} non-finite value{'s' * (count != 1)} ignored")
        empty, fallen = self._problems()
        if empty.any():
            labels = [label for label, none in zip(self.layout.index_labels(), empty) if none]
            where = f" in heatmap{'s' * (len(labels) != 1)} {', '.join(labels[:5])}" if labels[0] else ""
            more = f" and {len(labels) - 5} more" if len(labels) > 5 else ""
            messages.append(f"no peak above the threshold {self.threshold}{where}{more}")
        for method, per_map in fallen.items():
            n = int(per_map.sum())
            if n and method == "gaussian":
                messages.append(
                    f"gaussian fell back for {n} peak{'s' * (n != 1)}: the integer peak at a border, a flat or "
                    "non-positive neighbourhood, a failed fit or a fit pulled towards a neighbour; each spot's "
                    "own fit where a joint fit of neighbouring spots failed"
                )
            elif n:
                messages.append(
                    f"{method} kept the integer peak for {n} peak{'s' * (n != 1)} "
                    "(border, flat or non-positive neighbourhood, or failed fit)"
                )
        return sorted(messages)

    def table_coords(self, coords: str) -> dict[str, np.ndarray]:
        """Method -> coordinates ``(B, P, ndim)`` in the table's system, ``pixel`` or ``normalized``."""
        if coords == "pixel":
            return {m: p.coords for m, p in self.peaks.items()}
        shape = self.layout.spatial_shape
        return {m: pixel_to_normalized(p.coords, shape) for m, p in self.peaks.items()}

    def overlay_peaks(self) -> dict[str, np.ndarray]:
        """Method -> float pixel coordinates ``(B, P, ndim)``, NaN where a peak is missing."""
        return {m: np.where(p.present[..., None], p.coords, np.nan) for m, p in self.peaks.items()}


def _on_device(heatmaps: np.ndarray, device: str):
    if device == "cpu":
        return heatmaps
    return backends.load_torch("`device`='cuda'").to_device(heatmaps, device)


def _to_numpy(coords) -> np.ndarray:
    return coords if isinstance(coords, np.ndarray) else coords.cpu().numpy()


def _global(heatmaps: np.ndarray, layout: Layout, settings: Settings) -> tuple[dict[str, np.ndarray], int]:
    """Global argmax (always: it seeds the peaks) and soft-argmax if asked, ``(B, ndim)`` each; non-finite count."""
    ndim = len(layout.spatial)
    source = _on_device(heatmaps, settings.device)
    backend = backends.for_array(source)
    try:
        coords, nonfinite = backend.argmax(source, ndim)
        found = {"argmax": _to_numpy(coords)}
        if "softargmax" in settings.methods:
            coords, _ = backend.soft_argmax(source, settings.beta, ndim, settings.normalize, settings.threads)
            found["softargmax"] = _to_numpy(coords)
    except NoFiniteValueError as exc:
        raise _no_finite(layout, exc.position) from None
    return found, nonfinite


def _no_finite(layout: Layout, position: int) -> NoFiniteValueError:
    """The error of heatmap ``position`` (C order) that holds no finite value, named by its index label."""
    label = layout.index_labels()[position]
    message = f"heatmap {label} has no finite value" if label else "the heatmap has no finite value"
    return NoFiniteValueError(message, position)


def _integer_peaks(heatmaps: np.ndarray, argmax: np.ndarray, settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    """Integer peaks ``(B, P, ndim)`` (0 where missing) and where they are present ``(B, P)``."""
    if not settings.finds_peaks:
        return argmax[:, None, :], np.ones((len(heatmaps), 1), bool)
    from ..ops.peaks import local_maxima, parse_threshold, stack_local_maxima, stacks_at_once

    threshold_abs, threshold_rel, threshold_sd = parse_threshold(settings.threshold)
    found = None
    if settings.device == "cpu" and stacks_at_once(heatmaps):  # a movie's frames: filtered and labelled at once
        with suppress(NoFiniteValueError):  # map by map below, whose error names the map
            found = stack_local_maxima(
                heatmaps, settings.peaks, settings.min_distance, threshold_abs, threshold_rel, threshold_sd=threshold_sd
            )
    if found is None:
        candidates = None
        if settings.device != "cpu":
            # Max-pooling NMS on the GPU; the few candidates come back for the greedy spacing.
            candidates = backends.load_torch().local_maxima_masks(heatmaps, settings.min_distance, settings.device)
        found = [
            local_maxima(
                h,
                settings.peaks,
                settings.min_distance,
                threshold_abs,
                threshold_rel,
                candidates=None if candidates is None else candidates[b],
                threshold_sd=threshold_sd,
            )
            for b, h in enumerate(heatmaps)
        ]
    count = max([len(f) for f in found] + [1])
    centres = np.zeros((len(heatmaps), count, heatmaps.ndim - 1), np.int64)
    present = np.zeros((len(heatmaps), count), bool)
    for b, f in enumerate(found):
        centres[b, : len(f)] = f
        present[b, : len(f)] = True
    return centres, present


def _nonfinite_per_map(heatmaps: np.ndarray, total: int) -> np.ndarray:
    if not total:
        return np.zeros(len(heatmaps), np.int64)
    return count_per_row(~np.isfinite(heatmaps.reshape(len(heatmaps), -1)))


def _split_merged(work, layout: Layout, settings: Settings, centres, present, clip_levels):
    """The integer peaks after the two-spot test (:func:`~peakloc.ops.subpixel.crowded.split_merged`).

    A split peak becomes the two pixels of its spots; then each heatmap's peaks are ranked again by their
    value in ``work`` (highest first) and the first ``settings.peaks`` kept. Returns centres ``(B, P, ndim)``,
    where present ``(B, P)``, which are split spots ``(B, P)``, and the test's own fits and shape estimates
    of the peaks it was given ``(owner, points, Fits, PeakShape)`` (or None), which the ``gaussian`` method
    and the shape estimate reuse for the peaks that stay.
    """
    from ..ops.subpixel import crowded, gaussian
    from ..ops.windows import estimate_shape

    owner, rank = np.nonzero(present)
    points = centres[owner, rank]
    if not len(points):
        return centres, present, np.zeros(present.shape, bool), None
    shape = estimate_shape(work, owner, points, settings.threads)
    fits = gaussian.fit_peaks(work, owner, points, shape, clip_levels, settings.threads)
    spots = crowded.split_merged(work, owner, points, fits, settings.split_threshold, settings.threads)
    # Each peak in its place in the list, or its two spots there where it split; the first of equal places kept.
    spatial = np.array(layout.spatial_shape)
    two = np.fromiter((s is not None for s in spots), bool, len(spots))
    counts = np.where(two, 2, 1)
    row_owner, row_points, row_split = (
        np.repeat(owner, counts),
        np.repeat(points, counts, axis=0),
        np.repeat(two, counts),
    )
    if two.any():
        first = (np.cumsum(counts) - counts)[two]
        made = np.clip(np.rint(np.stack([s for s in spots if s is not None])).astype(np.int64), 0, spatial - 1)
        row_points[first], row_points[first + 1] = made[:, 0], made[:, 1]
    keys = _peak_keys(row_owner, row_points, (len(present), *spatial))
    kept = np.sort(np.unique(keys, return_index=True)[1])
    row_owner, row_points, row_split = row_owner[kept], row_points[kept], row_split[kept]
    # Each heatmap's peaks by value in work (highest first, ties in list order), the first settings.peaks.
    heights = _values_at(work, row_owner, row_points, layout.spatial_shape).astype(np.float64)
    order = np.lexsort((np.arange(len(kept)), -heights, row_owner))
    row_owner, row_points, row_split = row_owner[order], row_points[order], row_split[order]
    slot = np.arange(len(order)) - np.searchsorted(row_owner, row_owner)
    width = max(1, min(settings.peaks, int(slot.max(initial=0)) + 1))
    chosen = slot < width
    out = np.zeros((len(present), width, centres.shape[2]), np.int64)
    where = np.zeros((len(present), width), bool)
    split = np.zeros((len(present), width), bool)
    out[row_owner[chosen], slot[chosen]] = row_points[chosen]
    where[row_owner[chosen], slot[chosen]] = True
    split[row_owner[chosen], slot[chosen]] = row_split[chosen]
    return out, where, split, (owner, points, fits, shape)


def _known_fits(tested, owner: np.ndarray, points: np.ndarray, rows: np.ndarray):
    """The two-spot test's fits for :func:`~peakloc.ops.subpixel.refine_flat`'s ``known``, or None.

    ``(rows, Fits)``: per peak, its row in the test's fits (``rows``, from :func:`_rows_in`), -1 for a peak
    the test made (a split spot) or whose neighbours changed. A peak's own fit depends on its heatmap,
    position, shape estimate and neighbours alone, so the test's fit of such a peak is the one the
    ``gaussian`` method would make again.
    """
    if tested is None:
        return None
    tested_owner, tested_points, fits, _ = tested
    rows = rows.copy()
    # A fit leaves out the samples of its neighbours: it is the same only among the same neighbours. They
    # changed where a peak within a neighbour's reach is in one list and not the other (a split spot, a peak
    # the test took away): only those few peaks' neighbours are looked for, so memory stays small however
    # many peaks there are.
    dims = _key_space(tested, owner, points)
    keys, tested_keys = _peak_keys(owner, points, dims), _peak_keys(tested_owner, tested_points, dims)
    gone, added = ~np.isin(tested_keys, keys), ~np.isin(keys, tested_keys)
    changes = int(gone.sum() + added.sum())
    if changes:
        from ..ops.subpixel.gaussian import neighbour_grid
        from ..ops.windows import near_pairs

        grid = neighbour_grid(
            np.concatenate([tested_owner[gone], owner[added], owner]),
            np.concatenate([tested_points[gone], points[added], points]),
        )
        _, near = near_pairs(grid, np.arange(changes))
        rows[near[near >= changes] - changes] = -1
    return rows, fits


def _key_space(tested, owner: np.ndarray, points: np.ndarray) -> tuple[int, ...]:
    """:func:`_peak_keys`' bounds ``(heatmaps, *positions)``: they hold the peaks and the two-spot test's."""
    tested_owner, tested_points = tested[0], tested[1]
    dims = np.maximum(points.max(axis=0, initial=0), tested_points.max(axis=0, initial=0)) + 1
    return (int(max(owner.max(initial=0), tested_owner.max(initial=0))) + 1, *map(int, dims))


def _peak_keys(owner: np.ndarray, points: np.ndarray, dims: tuple[int, ...]) -> np.ndarray:
    """One int64 per peak ``(heatmap, *position)``, within ``dims`` (heatmaps, then the positions' bounds)."""
    return np.ravel_multi_index((owner, *points.T), dims).astype(np.int64)


def _rows_in(tested, owner: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Per peak, its row among the two-spot test's peaks (``tested``, see :func:`_split_merged`), or -1."""
    if tested is None or not len(points) or not len(tested[1]):
        return np.full(len(points), -1, np.int64)
    dims = _key_space(tested, owner, points)
    known, wanted = _peak_keys(tested[0], tested[1], dims), _peak_keys(owner, points, dims)
    order = np.argsort(known, kind="stable")
    place = np.minimum(np.searchsorted(known[order], wanted), len(known) - 1)
    return np.where(known[order][place] == wanted, order[place], -1).astype(np.int64)


def _values_at(raw, owner: np.ndarray, points: np.ndarray, spatial: tuple[int, ...]) -> np.ndarray:
    """Raw values at integer points: one gather in memory, one read per point from a stack read in pieces."""
    if isinstance(raw, np.ndarray):
        return raw.reshape(len(raw), -1)[owner, np.ravel_multi_index(tuple(points.T), spatial)]
    return np.array([raw[(int(b), *map(int, p))] for b, p in zip(owner, points)], dtype=raw.dtype)


def locate(
    heatmaps, layout: Layout, settings: Settings, budget: int | None = None, slabs: Slabs | None = None
) -> Located:
    """Peaks of heatmaps laid out as ``(B, *spatial)``, with every method of ``settings``.

    ``heatmaps`` is an ndarray, or a :class:`~peakloc.ops.lazy.Maps` stack read in pieces within ``budget``
    bytes (see :func:`_locate_in_pieces`), its passes over slabs on ``slabs`` (default: threads here).
    With ``settings.smooth``, every method runs on the smoothed heatmaps (:func:`peakloc.smooth`); the
    values stay the raw heatmaps'. Every number of heatmap ``b``
    depends on heatmap ``b`` alone.
    """
    if isinstance(heatmaps, Maps):
        return _locate_in_pieces(heatmaps, layout, settings, budget, slabs)
    ndim = len(layout.spatial)
    raw = heatmaps
    if settings.smooth:
        from ..ops.smoothing import smooth

        heatmaps = smooth(raw, settings.smooth, ndim)
    found, nonfinite = _global(heatmaps, layout, settings)
    centres, present = _integer_peaks(heatmaps, found["argmax"], settings)
    return _assemble(raw, heatmaps, layout, settings, found, centres, present, _nonfinite_per_map(raw, nonfinite))


def _assemble(raw, work, layout, settings, found, centres, present, nonfinite, clip_levels=None) -> Located:
    """Every method's peaks from the global results and the integer peaks.

    ``work`` is what the methods see (the smoothed heatmaps with ``--smooth``), ``raw`` gives the values;
    both may be read in pieces.
    """
    split = tested = None
    if clip_levels is None and "gaussian" in settings.methods and isinstance(work, np.ndarray):
        from ..ops.subpixel.gaussian import censoring

        clip_levels = censoring(work)  # once, for the two-spot test and the fits (each would take it again)
    if "gaussian" in settings.methods and settings.peaks > 1 and np.isfinite(settings.split_threshold):
        centres, present, split, tested = _split_merged(work, layout, settings, centres, present, clip_levels)
    owner, rank = np.nonzero(present)
    points = centres[owner, rank]
    estimate = None
    rows = _rows_in(tested, owner, points)
    if settings.extra or any(m in REFINE_METHODS for m in settings.methods):
        from ..ops.windows import PeakShape, estimate_shape

        # Once for every method (and the --extra columns): each would otherwise estimate it again. A peak's
        # estimate depends on its own window alone: the two-spot test's serve the peaks that stay.
        todo = np.flatnonzero(rows < 0)
        fresh = estimate_shape(work, owner[todo], points[todo], settings.threads)
        parts = [np.empty((len(points),) + getattr(fresh, name).shape[1:]) for name in PeakShape.__dataclass_fields__]
        for part, name in zip(parts, PeakShape.__dataclass_fields__):
            part[todo] = getattr(fresh, name)
            if tested is not None:
                part[rows >= 0] = getattr(tested[3], name)[rows[rows >= 0]]
        estimate = PeakShape(*parts)

    def scatter(values: np.ndarray, fill=0) -> np.ndarray:
        out = np.full(present.shape + values.shape[1:], fill, dtype=values.dtype)
        out[owner, rank] = values
        return out

    def shape_columns(sigma: np.ndarray, amplitude: np.ndarray, ratio: np.ndarray) -> dict[str, np.ndarray]:
        if not settings.extra:
            return {}
        return dict(zip(SHAPE_COLUMNS, (scatter(sigma, np.nan), scatter(amplitude, np.nan), scatter(ratio, np.nan))))

    plain = {}
    if settings.extra:
        from ..ops.subpixel import snr

        plain = shape_columns(estimate.sigma, estimate.amplitude, snr(estimate))
    peaks: dict[str, MethodPeaks] = {}
    never = np.zeros(present.shape, bool)
    for method in settings.methods:
        if method == "argmax":
            values = scatter(_values_at(raw, owner, points, layout.spatial_shape))
            peaks[method] = MethodPeaks(scatter(points), values, present, never, plain)
        elif method == "softargmax":
            coords = found["softargmax"][:, None, :]
            shape = {k: v[:, :1] for k, v in plain.items()}
            peaks[method] = MethodPeaks(coords, interpolate(raw, coords), present[:, :1], never[:, :1], shape)
        else:
            from ..ops.subpixel import refine_flat  # not imported by runs without it: start-up

            result = refine_flat(
                work,
                owner,
                points,
                method,
                window=settings.window,
                sigma=settings.sigma,
                beta=settings.beta,
                normalize=settings.normalize,
                shape=estimate,
                clip_levels=clip_levels,
                threads=settings.threads,
                known=_known_fits(tested, owner, points, rows) if method == "gaussian" else None,
                uncertainty=settings.extra,  # its columns are --extra's
            )
            coords = scatter(result.coords, 0.0)
            peaks[method] = MethodPeaks(
                coords,
                interpolate(raw, coords),
                present,
                scatter(result.fallback, False),
                shape_columns(result.sigma, result.amplitude, result.snr),
                scatter(result.uncertainty, np.nan) if settings.extra else None,
            )
    if settings.extra:
        for method, found_peaks in peaks.items():
            width = found_peaks.present.shape[1]
            flags = np.zeros((len(present), width), bool) if split is None else split[:, :width]
            peaks[method] = replace(found_peaks, split=flags)
    return Located(raw, layout, peaks, nonfinite, settings.threshold)


def fits_in_memory(maps: Maps, settings: Settings, budget: int | None, count: int | None = None) -> bool:
    """Whether ``count`` maps (default all) can be loaded and located in memory within ``budget``."""
    if budget is None:
        return True
    count = maps.count if count is None else count
    values = count * int(np.prod(maps.spatial, dtype=np.int64))
    return needed(values * maps.dtype.itemsize, values, settings) <= budget


def _locate_in_pieces(
    maps: Maps, layout: Layout, settings: Settings, budget: int | None, slabs: Slabs | None = None
) -> Located:
    """Locate a stack read in pieces: groups of maps that fit, or one map at a time in slabs.

    Groups are exact because every method works per map; slabs are exact because each streamed method
    reads the halo it needs (:mod:`peakloc.ops.streaming`).
    """
    if fits_in_memory(maps, settings, budget, 1):
        group = maps.count
        while group > 1 and not fits_in_memory(maps, settings, budget, group):
            group //= 2
        parts = []
        for start in range(0, maps.count, group):
            stop = min(start + group, maps.count)
            part_layout = Layout("B", (stop - start,), layout.spatial, layout.spatial_shape)
            try:
                # The group's heatmaps are dropped once located: only its peaks stay.
                parts.append(replace(locate(maps.load(start, stop), part_layout, settings), heatmaps=None))
            except NoFiniteValueError as exc:
                raise _no_finite(layout, start + exc.position) from None
        return concatenate(parts, maps, layout, settings)
    return _locate_slabs(maps, layout, settings, budget, slabs)


def concatenate(parts: list[Located], heatmaps, layout: Layout, settings: Settings) -> Located:
    """One Located from groups of consecutive maps located apart.

    ``heatmaps`` are the whole stack's: in memory, or a :class:`~peakloc.ops.lazy.Maps` stack read in pieces.
    """
    peaks = {}
    for method in parts[0].peaks:
        width = max(p.peaks[method].present.shape[1] for p in parts)

        def padded(array: np.ndarray, fill, width: int = width) -> np.ndarray:
            pad = [(0, 0), (0, width - array.shape[1])] + [(0, 0)] * (array.ndim - 2)
            return np.pad(array, pad, constant_values=fill)

        items = [p.peaks[method] for p in parts]
        peaks[method] = MethodPeaks(
            np.concatenate([padded(m.coords, 0) for m in items]),
            np.concatenate([padded(m.values, 0) for m in items]),
            np.concatenate([padded(m.present, False) for m in items]),
            np.concatenate([padded(m.fallback, False) for m in items]),
            {k: np.concatenate([padded(m.shape[k], np.nan) for m in items]) for k in items[0].shape},
            None if items[0].error is None else np.concatenate([padded(m.error, np.nan) for m in items]),
            None if items[0].split is None else np.concatenate([padded(m.split, False) for m in items]),
        )
    nonfinite = np.concatenate([p.nonfinite for p in parts])
    return Located(heatmaps, layout, peaks, nonfinite, settings.threshold)


def _locate_slabs(
    maps: Maps, layout: Layout, settings: Settings, budget: int | None, slabs: Slabs | None = None
) -> Located:
    """Maps too large to hold: each read in slabs of a size the budget allows, every method streamed.

    ``slabs`` runs the passes over slabs (default: this process's threads); a smoothed map lives in a file
    of this process, so its passes always run here.
    """
    from ..backends.numpy_backend import DEFAULT_THREADS, large_map_rows
    from ..ops import streaming
    from ..ops.peaks import parse_threshold

    # Per value: the slab and its working memory; the overlay's pictures are a fixed sum, set aside once. A
    # float map's slab passes hold little beside the slab: its local maxima a copy where it has NaN or inf and
    # a byte a value of mask (:func:`peakloc.ops.filters.maxima_mask`); the rest work in fixed-size blocks.
    # An integer map's plateau labelling and a smoothing need what a value needs in memory.
    if maps.dtype.kind == "f" and not settings.smooth:
        per_value = 2 * maps.dtype.itemsize + 2
    else:
        per_value = maps.dtype.itemsize + value_bytes(settings)
    # A store whose chunks hold many rows is read a band of whole chunks at a time (each decoded once), when
    # a band fits a quarter of the budget (the slabs of a band end before the next is read: one band, and
    # the few rows of the next slab it keeps, are held); the slabs share the rest.
    band = maps.chunk_rows()
    band_bytes = band * int(np.prod(maps.spatial[1:])) * maps.dtype.itemsize
    if band < 2 or (budget is not None and band_bytes > budget // 4):
        band = band_bytes = 0
    here = streaming.Slabs(settings.threads, band)
    # A smoothed map is a memory-mapped file of this process, without chunks: read directly, here.
    direct = streaming.Slabs(settings.threads)
    slabs = here if slabs is None else slabs
    # Up to one slab per thread in memory, one read again, and room for the rest of the run.
    threads = max(here.threads, getattr(slabs, "threads", DEFAULT_THREADS))
    left = None if budget is None else budget - band_bytes - fixed_bytes(settings)
    if left is not None and settings.finds_peaks:
        left -= LABEL_BYTES  # SciPy, where plateaus are labelled slab by slab
    if settings.smooth and left is not None:
        left -= _smoothed_in_memory(maps, left)
    block = streaming.DEFAULT_BLOCK if left is None else max(1, left // ((threads + 2) * per_value))
    rows = streaming.rows_per_read(maps, block, large_map_rows(maps.spatial))
    if slabs is here and _copy_worth_it(maps, settings, rows, band):
        # Decoded once into temporary files: every pass after reads those at an NPY file's speed.
        try:
            copies = [streaming.decoded_copy(maps, b, rows) for b in range(maps.count)]
        except OSError:  # no room on the temporary disk: each pass decodes the store again
            pass
        else:
            return _locate_slabs(_Stacked(copies, maps), layout, settings, budget)
    counts = "gaussian" in settings.methods  # the fit's clip levels need how many values equal each extreme
    work, stats, raw_stats = maps, [], []
    smoothed = []
    # What an overlay draws (projections, a pooled picture) and its colour range come from the one read of its slabs.
    picture = 0
    if settings.overlay is not None:
        from ..output.overlay import pool_factor  # only for runs that draw one

        picture = pool_factor(maps.spatial)

    def peak_runner() -> Slabs:
        """The peak pass reads each slab with min_distance rows of halo a side: as many slabs at once as fit."""
        if slabs is here and budget is not None:
            per_slab = (rows + 2 * settings.min_distance) * int(np.prod(maps.spatial[1:])) * per_value
            return streaming.Slabs(max(1, min(here.threads, left // per_slab)), here.band)
        return slabs

    maxima = peak_runner()
    soft = (settings.beta, settings.normalize) if "softargmax" in settings.methods else None
    # One read of each slab gives the extremes, the overlay's pictures, the peak candidates and the
    # soft-argmax (a smoothed map's passes read the smoothed file, after its extremes).
    peaks = (settings.min_distance, streaming.first_candidates(settings.peaks)) if settings.finds_peaks else None
    surveys: list = []
    for b in range(maps.count):
        try:
            if settings.smooth:
                first = streaming.map_stats(maps, b, rows, counts, settings.threads, slabs, picture)
            else:
                runner = maxima if peaks else slabs
                surveys.append(streaming.survey(maps, b, rows, counts, settings.threads, runner, picture, peaks, soft))
                first = surveys[-1].stats
        except NoFiniteValueError:
            raise _no_finite(layout, b) from None
        raw_stats.append(first)
        if settings.smooth:
            smoothed.append(streaming.smooth(maps, b, first, settings.smooth, rows))
            first = streaming.map_stats(smoothed[-1], 0, rows, counts, settings.threads, direct)
        stats.append(first)
    if settings.smooth:
        here = direct
        work, slabs = _Stacked(smoothed, maps), here
        maxima = peak_runner()

    ndim = len(layout.spatial)
    found = {"argmax": np.stack([streaming.argmax(s, maps.spatial) for s in stats])}
    if soft is not None and not settings.finds_peaks:
        found["softargmax"] = np.stack(
            [
                surveys[b].soft if surveys else streaming.soft_argmax(work, b, s, *soft, rows, settings.threads, slabs)
                for b, s in enumerate(stats)
            ]
        )
    if not settings.finds_peaks:
        centres, present = found["argmax"][:, None, :], np.ones((maps.count, 1), bool)
    else:
        threshold_abs, threshold_rel, threshold_sd = parse_threshold(settings.threshold)
        lists = [
            streaming.local_maxima(
                work,
                b,
                s,
                rows,
                settings.peaks,
                settings.min_distance,
                threshold_abs,
                threshold_rel,
                threads=settings.threads,
                slabs=maxima,
                threshold_sd=threshold_sd,
                # Without a survey, one read of each slab serves the local maxima and the soft-argmax.
                soft=None if surveys else soft,
                surveyed=surveys[b].candidates if surveys else None,
            )
            for b, s in enumerate(stats)
        ]
        if soft is not None:
            found["softargmax"] = np.stack([sv.soft for sv in surveys] if surveys else [at for _, at in lists])
            lists = lists if surveys else [f for f, _ in lists]
        count = max([len(f) for f in lists] + [1])
        centres = np.zeros((maps.count, count, ndim), np.int64)
        present = np.zeros((maps.count, count), bool)
        for b, f in enumerate(lists):
            centres[b, : len(f)] = f
            present[b, : len(f)] = True
    nonfinite = np.array([s.nonfinite for s in raw_stats], np.int64)
    clip = None
    if counts:
        from ..ops.subpixel import gaussian

        clip = gaussian.clip_levels_of(stats, work.dtype)
    if streaming.decodes(work):
        # Every method reads windows around the same peaks: a store that decodes gives each place once.
        kept = KeptBoxes(work, limit=KEPT_BYTES if budget is None else min(KEPT_BYTES, max(budget // 8, 1 << 20)))
        if settings.extra or any(m in REFINE_METHODS for m in settings.methods):
            from ..ops.windows import SIGMA_WINDOW

            # The shape estimate's window around each peak, the first any method reads, all read side by side.
            half = SIGMA_WINDOW[ndim]
            wanted = [
                (b, tuple(slice(max(0, int(c) - half), int(c) + half + 1) for c in centre))
                for b, k in zip(*np.nonzero(present))
                for centre in [centres[b, k]]
            ]
            kept.prefetch(wanted, settings.threads or DEFAULT_THREADS)
        maps, work = (kept, kept) if work is maps else (maps, kept)
    return _assemble(maps, work, layout, settings, found, centres, present, nonfinite, clip)


def _smoothed_in_memory(maps: Maps, left: int) -> int:
    """Bytes of the run's memory that ``--smooth``'s temporary files of ``maps`` take: 0 on a disk.

    In a folder in memory (tmpfs: ``TMPDIR`` there, as on many systems' ``/tmp``) the float64 copies are
    memory beside the run's own, so they take their share of the budget: at most half of the ``left`` bytes,
    the rest for the passes over their slabs. More fails the input (:class:`~peakloc.errors.NoRoomError`).
    """
    import tempfile

    folder = tempfile.gettempdir()
    if not _in_memory_filesystem(folder):
        return 0
    size = maps.count * int(np.prod(maps.spatial, dtype=np.int64)) * 8
    if size > left // 2:
        raise NoRoomError(
            f"--smooth needs {describe(size)} of float64 temporary files in {folder}, which is in memory "
            f"(tmpfs): more than the memory budget leaves; set TMPDIR to a folder on disk"
        )
    return size


def _copy_worth_it(maps: Maps, settings: Settings, rows: int, band: int = 0) -> bool:
    """Whether a stack read in pieces is worth a decoded copy on disk (:func:`~peakloc.ops.streaming.decoded_copy`).

    When its chunks are deeper than the slabs of ``rows`` rows (each slab's read would decode whole chunks
    for a few of their rows, and each window around a peak a whole chunk), the run needs more than the
    extremes (soft-argmax, local maxima, windows around peaks), and the temporary folder is on a disk (not
    tmpfs: there the copy would be memory beside the budget) with room for it and a tenth to spare. Stores of
    thin chunks (a TIFF's pages) are decoded once a pass instead: writing the copy costs about as much as
    decoding them again (measured on a 4 GiB zlib TIFF). Nor is a store copied whose chunks a ``band`` of
    whole chunks serves (its pass decodes each chunk once) when its windows are few beside its chunks (at
    most one a chunk, each decoding one or two): writing the copy costs a few times decoding every chunk
    (a 4 GiB OME-Zarr of 256 LZ4 chunks: 2.2 s to decode them all, 9.4 s to write them decoded).
    """
    import shutil
    import tempfile

    from ..ops import streaming

    if not streaming.decodes(maps) or maps.chunk_rows() <= rows:
        return False
    if band > 1:
        chunks = maps.array.chunks
        stored = int(np.prod([-(-n // int(c)) for n, c in zip(maps.array.shape, chunks)], dtype=np.int64))
        if maps.count * max(1, settings.peaks if settings.finds_peaks else 1) <= stored:
            return False
    if not (settings.finds_peaks or any(m == "softargmax" or m in REFINE_METHODS for m in settings.methods)):
        return False
    size = maps.count * int(np.prod(maps.spatial, dtype=np.int64)) * maps.dtype.itemsize
    folder = tempfile.gettempdir()
    return not _in_memory_filesystem(folder) and shutil.disk_usage(folder).free > 1.1 * size


def _in_memory_filesystem(path: str, mountinfo: str = "/proc/self/mountinfo") -> bool:
    """Whether ``path`` lies on tmpfs or ramfs (a file there is memory, not disk), by the mount table."""
    try:
        with open(mountinfo) as table:
            mounts = [line.split(" - ") for line in table]
    except OSError:
        return False  # not Linux: a temporary folder in memory is not the default there
    path = os.path.realpath(path)
    best, kind = "", ""
    for head, tail in (m for m in mounts if len(m) == 2):
        point = head.split()[4].replace("\\040", " ")
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, tail.split()[0]
    return kind in ("tmpfs", "ramfs")


#: Windows kept around peaks of a store that decodes (:class:`~peakloc.ops.lazy.KeptBoxes`), at most an eighth
#: of the budget.
KEPT_BYTES = 64 << 20


class _Stacked(Maps):
    """Single-map stacks (smoothed maps in temporary files) as one stack of their maps."""

    def __init__(self, members: list[Maps], like: Maps) -> None:
        self.members = members
        self.spatial = like.spatial
        self.batch_shape = (len(members),)
        self.count = len(members)
        self.shape = (self.count, *self.spatial)
        self.ndim = 1 + len(self.spatial)
        self.dtype = members[0].dtype
        self.array = members[0].array
        self.order = members[0].order
        self.source = None  # files of this process
        self.seen: dict[int, dict] = {}

    def read(self, b: int, box: tuple[slice, ...] = (), out: np.ndarray | None = None) -> np.ndarray:
        return self.members[b].read(0, box, out)


@dataclass(frozen=True)
class Source:
    """How an input is read: enough to open it again in another process (a cluster's worker reading a slab)."""

    path: str
    axes: str | None = None
    decode_colormap: str | None = None
    in_pieces: bool | None = None

    def read(self, check=None):
        """``(array, axis letters)`` as :func:`peakloc.io.read` gives them (``check``: see there)."""
        return read(self.path, self.axes, self.decode_colormap, self.in_pieces, check)

    def open(self) -> Maps:
        """The input as a stack read in pieces, as :func:`read_heatmaps` gave it."""
        return _stack(*self.read())[0]


def _stack(array, letters: str) -> tuple[Maps, Layout]:
    layout, order = arrangement(tuple(array.shape), letters)
    return Maps(array, len(layout.spatial), order), layout


#: Largest decoded size per stored byte of a TIFF read in pieces (zlib's limit is 1032).
BOMB_RATIO = 1100


def regular_size(path: str) -> int | None:
    """Size in bytes of a regular file (symbolic links followed), None for anything else or nothing."""
    try:
        status = os.stat(path)
    except (OSError, ValueError):
        return None
    return status.st_size if stat.S_ISREG(status.st_mode) else None


def read_heatmaps(path: str, settings: Settings | None = None, budget: int | None = None):
    """A file's heatmaps ``(B, *spatial)`` and their layout; :class:`PeaklocError` for a bad input.

    An input stored so that it can be read in pieces (NPY, large TIFF, Zarr) comes as an ndarray where it
    fits ``budget`` (bytes) once loaded, else as a :class:`~peakloc.ops.lazy.Maps` stack that
    :func:`locate` reads in pieces. Any other input that would need more than ``budget`` fails before it is
    decoded (see :func:`.budget.check`).
    """
    settings = settings or Settings()
    kind = kind_of(path)
    in_pieces = None
    url = is_url(path)
    # An image is checked by the reader, from its header, before the rest is read and decoded: one open.
    image_check = (lambda found: check(found, kind, settings, budget)) if kind == "image" else None
    # Decoded whole: small TIFFs, and NPY files from a URL (no memory map there).
    whole = ("tiff", "npy") if url else ("tiff",)
    probed = kind in whole and is_supported(path)
    stored = regular_size(path) if probed and not url else None
    if probed and (url or stored is not None):
        try:
            found, size = probe(path, kind), (remote.size(path) if url else stored)
        except OSError:  # a URL that names nothing: the reader says so in its words
            found, size = None, 0
        # Read in pieces, a large TIFF needs no budget check, unless it claims more than any honest file holds:
        # zlib compresses at most 1032:1, so a file that decodes to more is a bomb (or damaged), refused whole.
        honest = found is not None and found.nbytes <= BOMB_RATIO * size
        fits = found is None or budget is None or needed(found.nbytes, found.values, settings) <= budget
        in_pieces = kind == "tiff" and honest and (found.nbytes > readers.TIFF_IN_PIECES or not fits)
        if not in_pieces:
            check(found, kind, settings, budget, mapped=not url)
    source = Source(path, settings.axes, settings.decode_colormap, in_pieces if kind == "tiff" else None)
    array, letters = source.read(image_check)
    if is_lazy(array):
        maps, layout = _stack(array, letters)
        if not fits_in_memory(maps, settings, budget):
            maps.source = source
            return maps, layout
        return maps.load(), layout
    stacked, layout = to_heatmaps(array, letters)
    return stacked.reshape((layout.count,) + layout.spatial_shape), layout
