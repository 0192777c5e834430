"""One input, end to end: read it, lay it out as heatmaps, locate its peaks with every method asked for.

:mod:`.batch` calls :func:`read_heatmaps` and :func:`locate` per input (or per stack of single-map inputs,
which :meth:`Located.part` splits again); this module holds the wiring, not the maths or the formats.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .. import backends
from ..errors import NoFiniteValueError
from ..io import is_supported, read
from ..io.axes import Layout, to_heatmaps
from ..io.probe import probe
from ..io.readers import kind_of
from ..ops.coords import pixel_to_normalized
from ..ops.interpolate import interpolate
from ..ops.subpixel import refine_flat, snr
from ..ops.windows import estimate_shape
from ..output.table import SHAPE_COLUMNS
from .budget import check
from .settings import Settings


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
    """

    coords: np.ndarray
    values: np.ndarray
    present: np.ndarray
    fallback: np.ndarray
    shape: dict[str, np.ndarray]

    def rows(self, start: int, stop: int) -> MethodPeaks:
        """The peaks of heatmaps ``start:stop``."""
        part = slice(start, stop)
        return MethodPeaks(
            self.coords[part],
            self.values[part],
            self.present[part],
            self.fallback[part],
            {k: v[part] for k, v in self.shape.items()},
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

    def warnings(self) -> list[str]:
        """One line per kind of problem met in this input's heatmaps, sorted."""
        messages = []
        count = int(self.nonfinite.sum())
        if count:
            messages.append(f"{count} non-finite value{'s' * (count != 1)} ignored")
        if self.peaks:
            empty = ~next(iter(self.peaks.values())).present[:, 0]
            if empty.any():
                labels = [label for label, none in zip(self.layout.index_labels(), empty) if none]
                where = f" in heatmap{'s' * (len(labels) != 1)} {', '.join(labels[:5])}" if labels[0] else ""
                more = f" and {len(labels) - 5} more" if len(labels) > 5 else ""
                messages.append(f"no peak above the threshold {self.threshold}{where}{more}")
        for method, peaks in self.peaks.items():
            n = int(np.count_nonzero(peaks.fallback & peaks.present))
            if n:
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
        label = layout.index_labels()[exc.position]
        message = f"heatmap {label} has no finite value" if label else "the heatmap has no finite value"
        raise NoFiniteValueError(message, exc.position) from None
    return found, nonfinite


def _integer_peaks(heatmaps: np.ndarray, argmax: np.ndarray, settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    """Integer peaks ``(B, P, ndim)`` (0 where missing) and where they are present ``(B, P)``."""
    if settings.peaks == 1 and settings.threshold is None:
        return argmax[:, None, :], np.ones((len(heatmaps), 1), bool)
    from ..ops.peaks import local_maxima, parse_threshold

    threshold_abs, threshold_rel = parse_threshold(settings.threshold)
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
    return np.count_nonzero(~np.isfinite(heatmaps.reshape(len(heatmaps), -1)), axis=1)


def locate(heatmaps: np.ndarray, layout: Layout, settings: Settings) -> Located:
    """Peaks of heatmaps already laid out as ``(B, *spatial)``, with every method of ``settings``.

    With ``settings.smooth``, every method runs on the smoothed heatmaps (:func:`peakloc.smooth`); the
    values stay the raw heatmaps'. Every number of heatmap ``b`` depends on heatmap ``b`` alone.
    """
    ndim = len(layout.spatial)
    raw = heatmaps
    if settings.smooth:
        from ..ops.smoothing import smooth

        heatmaps = smooth(raw, settings.smooth, ndim)
    found, nonfinite = _global(heatmaps, layout, settings)
    centres, present = _integer_peaks(heatmaps, found["argmax"], settings)
    owner, rank = np.nonzero(present)
    points = centres[owner, rank]
    estimate = estimate_shape(heatmaps, owner, points) if settings.extra else None

    def scatter(values: np.ndarray, fill=0) -> np.ndarray:
        out = np.full(present.shape + values.shape[1:], fill, dtype=values.dtype)
        out[owner, rank] = values
        return out

    def shape_columns(sigma: np.ndarray, amplitude: np.ndarray, ratio: np.ndarray) -> dict[str, np.ndarray]:
        if not settings.extra:
            return {}
        return dict(zip(SHAPE_COLUMNS, (scatter(sigma, np.nan), scatter(amplitude, np.nan), scatter(ratio, np.nan))))

    plain = shape_columns(estimate.sigma, estimate.amplitude, snr(estimate)) if estimate is not None else {}
    peaks: dict[str, MethodPeaks] = {}
    never = np.zeros(present.shape, bool)
    for method in settings.methods:
        if method == "argmax":
            index = np.ravel_multi_index(tuple(points.T), layout.spatial_shape)
            values = scatter(raw.reshape(len(raw), -1)[owner, index])
            peaks[method] = MethodPeaks(scatter(points), values, present, never, plain)
        elif method == "softargmax":
            coords = found["softargmax"][:, None, :]
            shape = {k: v[:, :1] for k, v in plain.items()}
            peaks[method] = MethodPeaks(coords, interpolate(raw, coords), present[:, :1], never[:, :1], shape)
        else:
            result = refine_flat(
                heatmaps,
                owner,
                points,
                method,
                window=settings.window,
                sigma=settings.sigma,
                beta=settings.beta,
                normalize=settings.normalize,
                shape=estimate,
            )
            coords = scatter(result.coords, 0.0)
            peaks[method] = MethodPeaks(
                coords,
                interpolate(raw, coords),
                present,
                scatter(result.fallback, False),
                shape_columns(result.sigma, result.amplitude, result.snr),
            )
    return Located(raw, layout, peaks, _nonfinite_per_map(raw, nonfinite), settings.threshold)


def read_heatmaps(path: str, settings: Settings | None = None, budget: int | None = None) -> tuple[np.ndarray, Layout]:
    """A file's heatmaps ``(B, *spatial)`` and their layout; :class:`PeaklocError` for a bad input.

    With a ``budget`` (bytes), an input that would need more fails before it is decoded (see
    :func:`.budget.check`).
    """
    settings = settings or Settings()
    kind = kind_of(path)
    if os.path.isfile(path) and is_supported(path):
        check(probe(path, kind), kind, settings, budget)
    array, letters = read(path, settings.axes, settings.decode_colormap)
    stacked, layout = to_heatmaps(array, letters)
    return stacked.reshape((layout.count,) + layout.spatial_shape), layout
