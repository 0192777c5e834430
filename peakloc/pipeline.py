"""One input, end to end: read, lay out as heatmaps, locate peaks with every method asked for.

The CLI calls :func:`locate_file` per input; this module holds the wiring, not the maths or the formats.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from . import core, io
from .axes import Layout, to_heatmaps
from .backends import _numpy
from .errors import NoFiniteValueError, PeaklocError

#: Every method, in the order rows list them.
METHODS = ("argmax", "softargmax")
#: ``--method`` names that stand for several methods.
METHOD_ALIASES = {"both": ("argmax", "softargmax")}


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


@dataclass
class Located:
    """The peaks of one input.

    Attributes
    ----------
    heatmaps : ndarray, shape ``(B, *spatial)``
        The input's heatmaps, batch flattened in C order.
    layout : Layout
    peaks : dict
        Method -> ``(coords, values)``: coords ``(B, P, ndim)`` in pixel units (array-axis order),
        values ``(B, P)`` raw heatmap values at the peaks.
    warnings : list of str
    """

    heatmaps: np.ndarray
    layout: Layout
    peaks: dict[str, tuple[np.ndarray, np.ndarray]]
    warnings: list[str] = field(default_factory=list)

    def table_peaks(self, coords: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The peaks in the table's coordinate system (``pixel`` or ``normalized``)."""
        if coords == "pixel":
            return self.peaks
        shape = self.layout.spatial_shape
        return {m: (core.pixel_to_normalized(c, shape), v) for m, (c, v) in self.peaks.items()}


def _compute(heatmaps: np.ndarray, ndim: int, options: Options) -> dict[str, np.ndarray]:
    """Method -> coords ``(B, ndim)`` in pixels, on the CPU (NumPy) or the GPU (torch)."""
    out: dict[str, np.ndarray] = {}
    if options.device == "cpu":
        source = heatmaps
    else:
        from .backends import torch_backend

        source = torch_backend("--device cuda").to_device(heatmaps, options.device)
    for method in options.methods:
        if method == "argmax":
            coords = core.argmax(source, ndim=ndim)
        else:
            coords = core.soft_argmax(source, beta=options.beta, ndim=ndim, normalize=options.normalize)
        out[method] = coords if isinstance(coords, np.ndarray) else coords.cpu().numpy()
    return out


def locate(heatmaps: np.ndarray, layout: Layout, options: Options) -> Located:
    """Peaks of heatmaps already laid out as ``(B, *spatial)``."""
    ndim = len(layout.spatial)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            found = _compute(heatmaps, ndim, options)
        except NoFiniteValueError as exc:
            label = layout.index_labels()[exc.position]
            message = f"heatmap {label} has no finite value" if label else "the heatmap has no finite value"
            raise NoFiniteValueError(message, exc.position) from None
    peaks = {}
    for method, coords in found.items():
        if method == "argmax":
            flat = heatmaps.reshape(len(heatmaps), -1)
            index = np.ravel_multi_index(tuple(coords.T), layout.spatial_shape)
            values = flat[np.arange(len(flat)), index][:, None]
        else:
            values = _numpy.interpolate(heatmaps, coords[:, None, :])
        peaks[method] = (coords[:, None, :], values)
    messages = sorted({str(w.message) for w in caught})
    return Located(heatmaps, layout, peaks, messages)


def locate_file(path: str, options: Options) -> Located:
    """Read one file and locate its peaks; raises :class:`PeaklocError` for anything wrong with the input."""
    array, axes = io.read(path, options.axes)
    stacked, layout = to_heatmaps(array, axes)
    heatmaps = stacked.reshape((layout.count,) + layout.spatial_shape)
    return locate(heatmaps, layout, options)
