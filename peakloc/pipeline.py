"""One input, end to end: read, lay out as heatmaps, locate peaks with every method asked for.

:mod:`peakloc.batch` calls :func:`read_heatmaps` and :func:`locate` per input (or per stack of inputs);
this module holds the wiring, not the maths or the formats.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from . import core, io
from .axes import Layout, to_heatmaps
from .backends import _numpy
from .errors import NoFiniteValueError, PeaklocError

#: The sub-pixel refinements of peakloc.subpixel, which is imported only when one is asked for.
REFINE_METHODS = ("local", "quadratic", "dark", "gaussian")
#: Every method, in the order rows list them: the contract's two, then the sub-pixel refinements.
METHODS = ("argmax", "softargmax") + REFINE_METHODS
#: ``--method`` names that stand for several methods.
METHOD_ALIASES = {"both": ("argmax", "softargmax"), "all": METHODS}


def parse_methods(text: str) -> tuple[str, ...]:
    """``"argmax,softargmax"`` or ``"both"`` -> methods in row order, no repeats.

    Examples
    --------
    >>> parse_methods("softargmax,argmax")
    ('argmax', 'softargmax')
    """
    chosen: set[str] = set()
    for name in (part.strip().lower() for part in text.split(",")):
        if name in METHOD_ALIASES:
            chosen.update(METHOD_ALIASES[name])
        elif name in METHODS:
            chosen.add(name)
        else:
            known = ", ".join(METHODS + tuple(METHOD_ALIASES))
            raise PeaklocError(f"unknown method {name!r}; choose from {known} (comma-separated)")
    return tuple(m for m in METHODS if m in chosen)


@dataclass(frozen=True)
class Options:
    """What ``peakloc find`` asks of every input."""

    methods: tuple[str, ...] = ("argmax", "softargmax")
    beta: float = core.DEFAULT_BETA
    normalize: str = core.DEFAULT_NORMALIZE
    axes: str | None = None
    coords: str = "pixel"
    device: str = "cpu"
    peaks: int = 1
    min_distance: int = 1
    threshold: str | None = None
    window: int | None = None
    sigma: float | None = None
    smooth: float = 0.0
    extra: bool = False


@dataclass
class Located:
    """The peaks of one input.

    Attributes
    ----------
    heatmaps : ndarray, shape ``(B, *spatial)``
        The input's heatmaps, batch flattened in C order.
    layout : Layout
    peaks : dict
        Method -> ``(coords, values)``: coords ``(B, P, ndim)`` in pixel units (array-axis order; NaN
        where heatmap ``b`` has fewer than ``p + 1`` peaks), values ``(B, P)`` raw heatmap values at the
        peaks. ``softargmax`` is global: it has ``P = 1``.
    extras : dict
        Method -> ``{"sigma", "amplitude", "snr", "fallback"}`` arrays of shape ``(B, P)``.
    warnings : list of str
    """

    heatmaps: np.ndarray
    layout: Layout
    peaks: dict[str, tuple[np.ndarray, np.ndarray]]
    extras: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    present: np.ndarray | None = None

    def table_peaks(self, coords: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The peaks in the table's coordinate system (``pixel`` or ``normalized``)."""
        if coords == "pixel":
            return self.peaks
        shape = self.layout.spatial_shape
        return {m: (core.pixel_to_normalized(c, shape), v) for m, (c, v) in self.peaks.items()}

    def overlay_peaks(self) -> dict[str, np.ndarray]:
        """Method -> float pixel coordinates ``(B, P, ndim)``, NaN where a peak is missing."""
        out = {}
        for method, (coords, _) in self.peaks.items():
            c = coords.astype(np.float64)
            if self.present is not None:
                c[~self.present[:, : c.shape[1]]] = np.nan
            out[method] = c
        return out


def _global(heatmaps: np.ndarray, ndim: int, options: Options) -> dict[str, np.ndarray]:
    """Global argmax and softargmax, ``(B, ndim)`` each, on the CPU (NumPy) or the GPU (torch)."""
    wanted = [m for m in ("argmax", "softargmax") if m in options.methods or m == "argmax"]
    if options.device == "cpu":
        source = heatmaps
    else:
        from .backends import torch_backend

        source = torch_backend("--device cuda").to_device(heatmaps, options.device)
    out = {}
    for method in wanted:
        if method == "argmax":
            coords = core.argmax(source, ndim=ndim)
        else:
            coords = core.soft_argmax(source, beta=options.beta, ndim=ndim, normalize=options.normalize)
        out[method] = coords if isinstance(coords, np.ndarray) else coords.cpu().numpy()
    return out


def _integer_peaks(heatmaps: np.ndarray, argmax: np.ndarray, options: Options) -> tuple[np.ndarray, np.ndarray]:
    """Integer peaks ``(B, P, ndim)`` (-1 where missing) and a presence mask ``(B, P)``."""
    if options.peaks == 1 and options.threshold is None:
        return argmax[:, None, :], np.ones((len(heatmaps), 1), bool)
    from .peaks import local_maxima, parse_threshold

    threshold_abs, threshold_rel = parse_threshold(options.threshold)
    candidates = None
    if options.device != "cpu":
        from .backends import torch_backend

        # Max-pooling NMS on the GPU; the few candidates come back for the greedy spacing.
        candidates = torch_backend().local_maxima_masks(heatmaps, options.min_distance, options.device)
    found = [
        local_maxima(
            h,
            options.peaks,
            options.min_distance,
            threshold_abs,
            threshold_rel,
            candidates=None if candidates is None else candidates[b],
        )
        for b, h in enumerate(heatmaps)
    ]
    count = max([len(f) for f in found] + [1])
    centres = np.full((len(heatmaps), count, heatmaps.ndim - 1), -1, np.int64)
    present = np.zeros((len(heatmaps), count), bool)
    for b, f in enumerate(found):
        centres[b, : len(f)] = f
        present[b, : len(f)] = True
    return centres, present


def _plain_extras(heatmaps: np.ndarray, owner: np.ndarray, points: np.ndarray) -> dict[str, np.ndarray]:
    """Extra columns for argmax and softargmax rows: the width estimate around each integer peak."""
    from .subpixel import estimate_width

    width, _, amplitude, noise = estimate_width(heatmaps, owner, points)
    with np.errstate(all="ignore"):
        snr = np.nan_to_num(amplitude / noise, nan=0.0)
    return {"sigma": width, "amplitude": amplitude, "snr": snr, "fallback": np.zeros(len(points), bool)}


def locate(heatmaps: np.ndarray, layout: Layout, options: Options) -> Located:
    """Peaks of heatmaps already laid out as ``(B, *spatial)``, with every method of ``options``.

    With ``options.smooth``, every method runs on the smoothed heatmaps (:func:`peakloc.smooth`);
    the values stay the raw heatmaps'.
    """
    ndim = len(layout.spatial)
    raw = heatmaps
    if options.smooth:
        from .smoothing import smooth

        heatmaps = smooth(raw, options.smooth, ndim)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            found = _global(heatmaps, ndim, options)
        except NoFiniteValueError as exc:
            label = layout.index_labels()[exc.position]
            message = f"heatmap {label} has no finite value" if label else "the heatmap has no finite value"
            raise NoFiniteValueError(message, exc.position) from None
    messages = {str(w.message) for w in caught}
    centres, present = _integer_peaks(heatmaps, found["argmax"], options)
    owner, rank = np.nonzero(present)
    points = centres[owner, rank]
    plain = _plain_extras(heatmaps, owner, points) if options.extra else {}

    def scatter(values: np.ndarray, fill) -> np.ndarray:
        out = np.full(present.shape + values.shape[1:], fill, dtype=values.dtype if fill != -1 else np.int64)
        out[owner, rank] = values
        return out

    def scatter_extras(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: scatter(v, False if k == "fallback" else np.nan) for k, v in columns.items()}

    peaks: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    extras: dict[str, dict[str, np.ndarray]] = {}
    flat = raw.reshape(len(raw), -1)
    for method in options.methods:
        if method == "argmax":
            index = np.ravel_multi_index(tuple(points.T), layout.spatial_shape)
            values = flat[owner, index]
            peaks[method] = (scatter(points, -1), scatter(values, np.nan if values.dtype.kind == "f" else 0))
            extras[method] = scatter_extras(plain)
        elif method == "softargmax":
            coords = found["softargmax"][:, None, :]
            peaks[method] = (coords, _numpy.interpolate(raw, coords))
            extras[method] = {k: v[:, :1] for k, v in scatter_extras(plain).items()}
        else:
            from .subpixel import refine_flat

            result = refine_flat(
                heatmaps,
                owner,
                points,
                method,
                window=options.window,
                sigma=options.sigma,
                beta=options.beta,
                normalize=options.normalize,
            )
            coords = scatter(result.coords, np.nan)
            peaks[method] = (coords, _numpy.interpolate(raw, np.nan_to_num(coords)))
            extras[method] = scatter_extras(
                {"sigma": result.sigma, "amplitude": result.amplitude, "snr": result.snr, "fallback": result.fallback}
            )
            if result.fallback.any():
                n = int(result.fallback.sum())
                messages.add(
                    f"{method} kept the integer peak for {n} peak{'s' * (n != 1)} "
                    "(border, flat or non-positive neighbourhood, or failed fit)"
                )
    for coords, _ in peaks.values():
        if coords.dtype.kind == "f":
            coords[~present[:, : coords.shape[1]]] = np.nan
    return Located(raw, layout, peaks, extras, sorted(messages), present)


def read_heatmaps(path: str, axes: str | None = None) -> tuple[np.ndarray, Layout]:
    """A file's heatmaps ``(B, *spatial)`` and their layout; :class:`PeaklocError` for a bad input."""
    array, letters = io.read(path, axes)
    stacked, layout = to_heatmaps(array, letters)
    return stacked.reshape((layout.count,) + layout.spatial_shape), layout
