"""The one settings object of a run: what ``peakloc find`` (or a library caller) asks of every input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import PeaklocValueError
from ..ops.normalize import DEFAULT_BETA, DEFAULT_NORMALIZE

#: :data:`peakloc.ops.subpixel.crowded.SPLIT_THRESHOLD` and the names of :data:`peakloc.ops.subpixel.METHODS`
#: (a test keeps them equal), not imported: a run without sub-pixel methods imports none of their code.
SPLIT_THRESHOLD = 40.0
REFINE_METHODS = ("local", "quadratic", "dark", "gaussian")

if TYPE_CHECKING:
    from ..output.overlay_files import OverlaySettings

#: Every method, in the order rows list them: the global two, then the sub-pixel refinements.
METHODS = ("argmax", "softargmax", *REFINE_METHODS)
#: Names that stand for several methods.
METHOD_ALIASES = {"both": ("argmax", "softargmax"), "all": METHODS}
COORDS = ("pixel", "normalized")


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
            raise PeaklocValueError(f"unknown method {name!r}; choose from {known} (comma-separated)")
    return tuple(m for m in METHODS if m in chosen)


@dataclass(frozen=True)
class Settings:
    """What a run asks of every input.

    Attributes
    ----------
    methods : tuple of str
        In row order (see :data:`METHODS`).
    beta, normalize
        The soft-argmax's (and ``local``'s) sharpness and scaling.
    axes : str, optional
        Axis letters of every stored array; default from each file.
    device : {"cpu", "cuda"}
        Where the global argmax, soft-argmax and peak candidates are computed.
    peaks, min_distance, threshold
        Up to ``peaks`` local maxima per heatmap, ``min_distance`` px apart, above ``threshold``.
    split_threshold : float
        With ``gaussian`` and ``peaks`` above 1: a peak splits into two spots where the two-spot model's
        likelihood-ratio statistic exceeds this (``inf``: never).
    window, sigma
        ``local``'s half-width and ``dark``'s blur sigma; default per peak.
    smooth : float
        Width of the quadratic-preserving smoothing before every method; 0 is off.
    coords : {"pixel", "normalized"}
        Coordinates of the table.
    extra : bool
        Add the peak-shape columns to the table.
    overlay : OverlaySettings, optional
        Write overlays.
    decode_colormap : str, optional
        Read colour images as heatmaps coloured by this OpenCV colour map.
    max_memory : int, optional
        The run's memory budget in bytes; an input that would need more fails alone, before it is decoded.
    threads : int, optional
        NumPy threads per process for large arrays; a pool of one process per core passes 1.
    """

    methods: tuple[str, ...] = ("argmax", "softargmax")
    beta: float = DEFAULT_BETA
    normalize: str = DEFAULT_NORMALIZE
    axes: str | None = None
    device: str = "cpu"
    peaks: int = 1
    min_distance: int = 1
    threshold: str | None = None
    split_threshold: float = SPLIT_THRESHOLD
    window: int | None = None
    sigma: float | None = None
    smooth: float = 0.0
    coords: str = "pixel"
    extra: bool = False
    overlay: OverlaySettings | None = None
    decode_colormap: str | None = None
    max_memory: int | None = None
    threads: int | None = None

    @property
    def finds_peaks(self) -> bool:
        """Whether the run finds local maxima (``--peaks`` above 1 or a ``--threshold``), not the argmax alone."""
        return self.peaks > 1 or self.threshold is not None
