"""Overlays: a heatmap in a colour map with its peaks marked, as a BGR picture a person can check.

Pure functions from arrays to images; :mod:`.overlay_files` names, writes and protects the files.
Drawing uses OpenCV with sub-pixel precision (``shift``): a peak at pixel coordinate ``c`` on an axis shown
``f`` times larger lands at ``(c + 0.5) * f - 0.5``, so pixel centres map to pixel centres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import PeaklocError
from ..io.colormaps import names as colormap_names
from ..ops.filters import block_maxima

#: Overlays of small heatmaps are scaled up (nearest neighbour) to at least this many pixels on the short side.
MIN_SHORT_SIDE = 256
#: ... but automatic scaling never makes the long side larger than this.
MAX_LONG_SIDE = 4096
#: Every panel is at least this many pixels across: a thin axis (9 slices of a stack) is stretched to it.
MIN_PANEL_SIDE = 64
DEFAULT_COLORMAP = "jet"
NAN_COLOUR = (128, 128, 128)
BAND_COLOUR = (40, 40, 40)
TEXT_COLOUR = (255, 255, 255)
OUTLINE_COLOUR = (0, 0, 0)
#: Unranked local maxima: small rings in this colour, blended at this opacity.
OTHER_COLOUR = (255, 255, 255)
OTHER_OPACITY = 0.45
#: With --background, the heatmap's opacity at the top of its colour range (0 at the bottom).
BACKGROUND_OPACITY = 0.75
FONT_SCALE = 0.45
LINE_HEIGHT = 18
_SHIFT = 4  # OpenCV fixed-point bits: positions are drawn to 1/16 pixel


@dataclass(frozen=True)
class Marker:
    """How a method's peaks are drawn: a shape name and a BGR colour.

    Every shape is an outline around the peak with a black edge, never a fill: the pixels at the peak keep
    the heatmap's own colour. The colours are Okabe and Ito's palette for colour-blind readers, and the
    shapes tell the methods apart in greyscale print.
    """

    shape: str
    colour: tuple[int, int, int]


#: One marker per method: a white circle for the argmax, a distinct shape and colour per other method.
MARKERS = {
    "argmax": Marker("circle", (255, 255, 255)),
    "softargmax": Marker("cross", (167, 121, 204)),  # reddish purple
    "local": Marker("diamond", (233, 180, 86)),  # sky blue
    "quadratic": Marker("square", (0, 159, 230)),  # orange
    "dark": Marker("plus", (0, 94, 213)),  # vermillion
    "gaussian": Marker("triangle", (66, 228, 240)),  # yellow
}


def _marker(method: str) -> Marker:
    """A method's marker; a method without one of its own is drawn as the soft-argmax is."""
    return MARKERS.get(method, MARKERS["softargmax"])


def _colormap_id(name: str) -> int:
    import cv2

    value = getattr(cv2, f"COLORMAP_{name.upper()}", None)
    if value is None:
        raise PeaklocError(f"unknown colour map {name!r}; choose from {', '.join(colormap_names())}")
    return value


def colorize(image: np.ndarray, colormap: str, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Scale an image to 0..255 over its finite values (or ``[lo, hi]``) and colour it; NaN/inf grey.

    Parameters
    ----------
    image : ndarray, shape ``(H, W)``, any real dtype
    colormap : str
        An OpenCV colour map name.

    Returns
    -------
    ndarray of uint8, shape ``(H, W, 3)``, BGR.
    """
    import cv2

    values = image.astype(np.float64)
    finite = np.isfinite(values)
    if lo is None or hi is None:
        lo, hi = (values[finite].min(), values[finite].max()) if finite.any() else (0.0, 0.0)
    span = hi - lo
    scaled = np.where(finite, (values - lo) / span if span > 0 else 0.0, 0.0)
    grey = np.clip(np.rint(scaled * 255), 0, 255).astype(np.uint8)
    coloured = cv2.applyColorMap(grey, _colormap_id(colormap))
    coloured[~finite] = NAN_COLOUR
    return coloured


def auto_scale(shape: tuple[int, ...]) -> int:
    """Integer zoom so that the short side is about :data:`MIN_SHORT_SIDE` px, long side capped."""
    short, long = min(shape), max(shape)
    factor = max(1, math.ceil(MIN_SHORT_SIDE / short))
    return max(1, min(factor, MAX_LONG_SIDE // long))


def _to_fixed(value: float) -> int:
    return int(round(value * (1 << _SHIFT)))


def _segments(shape: str, x: float, y: float, inner: float, outer: float) -> list[tuple[tuple, tuple]]:
    """Line segments of an outline marker between radii ``inner`` and ``outer`` around ``(x, y)``."""
    if shape in ("cross", "plus"):
        d = (inner, outer) if shape == "plus" else (inner / math.sqrt(2), outer / math.sqrt(2))
        directions = [(1, 0), (-1, 0), (0, 1), (0, -1)] if shape == "plus" else [(1, 1), (1, -1), (-1, 1), (-1, -1)]
        return [((x + dx * d[0], y + dy * d[0]), (x + dx * d[1], y + dy * d[1])) for dx, dy in directions]
    a = outer
    corners = {
        "diamond": [(x, y - a), (x + a, y), (x, y + a), (x - a, y)],
        "square": [
            (x - a * 0.8, y - a * 0.8),
            (x + a * 0.8, y - a * 0.8),
            (x + a * 0.8, y + a * 0.8),
            (x - a * 0.8, y + a * 0.8),
        ],
        "triangle": [(x, y - a), (x + a * 0.87, y + a * 0.5), (x - a * 0.87, y + a * 0.5)],
    }[shape]
    return list(zip(corners, corners[1:] + corners[:1]))


_SIZE = {"circle": 1.0, "cross": 1.6, "plus": 1.6, "diamond": 1.45, "square": 1.3, "triangle": 1.7}


def draw_marker(image: np.ndarray, x: float, y: float, marker: Marker, radius: float, clear: float = 0.0) -> None:
    """Draw one outline marker centred on display coordinates ``(x, y)`` (pixel centres are integers), in place.

    ``radius`` is the marker's outer size in display pixels; ``clear`` the radius around the centre that
    stays undrawn (the peak's own pixel): shapes keep at least that distance, lines included.
    """
    import cv2

    lt = cv2.LINE_AA
    centre = (_to_fixed(x), _to_fixed(y))
    # A closed shape's inscribed radius is smaller than its outer one: grow it until the inside clears.
    inscribed = {"circle": 1.0, "diamond": 0.71, "square": 0.8, "triangle": 0.5}.get(marker.shape, 1.0)
    # Sizes differ by shape, so that the markers of several methods on one peak nest instead of covering
    # each other: the argmax's circle innermost.
    outer = max(radius * _SIZE[marker.shape], (clear + 2.5) / inscribed)
    if marker.shape == "circle":
        for width, colour in ((3, OUTLINE_COLOUR), (1, marker.colour)):
            cv2.circle(image, centre, _to_fixed(outer), colour, width, lt, _SHIFT)
        return
    inner = max(clear + 2.5, outer * 0.45)
    for width, colour in ((3, OUTLINE_COLOUR), (1, marker.colour)):
        for (x0, y0), (x1, y1) in _segments(marker.shape, x, y, inner, outer):
            cv2.line(image, (_to_fixed(x0), _to_fixed(y0)), (_to_fixed(x1), _to_fixed(y1)), colour, width, lt, _SHIFT)


def _put_text(image: np.ndarray, text: str, x: int, y: int, outline: bool = True) -> None:
    """White text; on the heatmap itself with a black outline so that any colour map leaves it legible."""
    import cv2

    if outline:
        cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, FONT_SCALE, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, FONT_SCALE, TEXT_COLOUR, 1, cv2.LINE_AA)


def _text_size(text: str) -> tuple[int, int]:
    """Width and height above the baseline of ``text`` in pixels (outline included)."""
    import cv2

    (width, height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, FONT_SCALE, 1)
    return width + 2, height + 2


def _text_width(text: str) -> int:
    return _text_size(text)[0]


def _fit(text: str, width: int) -> str:
    """Shorten text from the left (keeping the file name end) to fit ``width`` pixels."""
    if _text_width(text) <= width:
        return text
    while len(text) > 1 and _text_width("..." + text) > width:
        text = text[1:]
    return "..." + text


def _band(width: int, lines: int) -> np.ndarray:
    band = np.empty((lines * LINE_HEIGHT + 6, width, 3), np.uint8)
    band[:] = BAND_COLOUR
    return band


def number(value: float) -> str:
    """A colour bar's end value: 3 significant digits.

    Examples
    --------
    >>> number(0.0), number(255.0), number(0.012345), number(123456.0)
    ('0', '255', '0.0123', '1.23e+05')
    """
    return f"{value:.3g}"


#: Width of the colour bar's gradient in the legend band, pixels.
COLOUR_BAR_WIDTH = 96


def _colour_bar(colormap: str, limits: tuple[float, float], room: int) -> tuple[int, callable]:
    """The legend item of the colour range: its width, and a function that draws it at ``(band, x, baseline)``.

    It takes at most ``room`` pixels where it can (the gradient shrinks to 16 px at the least).
    """
    lo_text, hi_text = number(limits[0]), number(limits[1])
    texts = _text_width(lo_text) + 8 + _text_width(hi_text)
    bar = int(max(16, min(COLOUR_BAR_WIDTH, room - texts)))
    width = texts + bar

    def draw(band: np.ndarray, x: int, baseline: int) -> None:
        _put_text(band, lo_text, x, baseline, outline=False)
        left = x + _text_width(lo_text) + 4
        ramp = colorize(np.linspace(0.0, 1.0, bar)[np.newaxis], colormap, 0.0, 1.0)
        shown = band[baseline - 10 : baseline, left : left + bar]
        shown[:] = ramp[:, : shown.shape[1]]
        _put_text(band, hi_text, left + bar + 4, baseline, outline=False)

    return width, draw


def legend(
    width: int,
    methods: list[str],
    colormap: str | None = None,
    limits: tuple[float, float] | None = None,
    others: bool = False,
) -> np.ndarray:
    """A band naming each method next to its marker, then the colour bar of ``limits``, wrapped to ``width``.

    ``others``: also the key of the faint rings that mark the local maxima ranked below those shown.
    """
    items: list[tuple[int, callable]] = []
    for method in methods:
        marker = _marker(method)

        def draw(band, x, baseline, marker=marker, method=method):
            draw_marker(band, x + 8, baseline - 4, marker, 7)
            _put_text(band, method, x + 20, baseline, outline=False)

        items.append((20 + _text_width(method) + 12, draw))
    if others:

        def draw_others(band, x, baseline):
            _faint_ring(band, x + 8, baseline - 4, 4)
            _put_text(band, "lower maxima", x + 20, baseline, outline=False)

        items.append((20 + _text_width("lower maxima") + 12, draw_others))
    if colormap is not None and limits is not None:
        bar_width, draw_bar = _colour_bar(colormap, limits, width - 12)
        items.append((bar_width + 6, draw_bar))
    rows: list[list[tuple[int, callable]]] = [[]]
    used = 6
    for item in items:
        if rows[-1] and used + item[0] > width:
            rows.append([])
            used = 6
        rows[-1].append(item)
        used += item[0]
    band = _band(width, len(rows))
    for r, row in enumerate(rows):
        x = 6
        for item_width, draw in row:
            draw(band, x, 6 + r * LINE_HEIGHT + 12)
            x += item_width
    return band


def title_band(width: int, text: str) -> np.ndarray:
    """A band with one line of text (the input and index), shortened from the left to fit."""
    band = _band(width, 1)
    _put_text(band, _fit(text, width - 12), 6, 18, outline=False)
    return band


def _faint_ring(image: np.ndarray, x: float, y: float, radius: float) -> None:
    """A thin ring blended at :data:`OTHER_OPACITY` over ``image``, in place."""
    import cv2

    r = int(math.ceil(radius)) + 2
    top, left = max(0, int(y) - r), max(0, int(x) - r)
    bottom, right = min(image.shape[0], int(y) + r + 2), min(image.shape[1], int(x) + r + 2)
    if bottom <= top or right <= left:
        return
    patch = image[top:bottom, left:right]
    ring = patch.copy()
    cv2.circle(ring, (_to_fixed(x - left), _to_fixed(y - top)), _to_fixed(radius), OTHER_COLOUR, 1, cv2.LINE_AA, _SHIFT)
    cv2.addWeighted(ring, OTHER_OPACITY, patch, 1 - OTHER_OPACITY, 0, dst=patch)


@dataclass(frozen=True)
class Panel:
    """One view of a heatmap: which coordinate axes go to image rows and columns.

    ``image`` is max-pooled ``pool`` times from the heatmap's pixels where the heatmap is larger than
    :data:`MAX_PANEL` pixels on a side, so that no peak vanishes and the picture stays small.
    """

    image: np.ndarray  # (rows, cols) values
    row_axis: int  # index into the peak's coordinates (array-axis order) for image rows, -1: none
    col_axis: int
    label: str = ""
    pool: int = 1


#: Longest side of a panel before it is max-pooled: overlays of huge heatmaps stay a few MB.
MAX_PANEL = 2048
#: Values read at once while projecting or pooling: bounds the float copies of big heatmaps.
SLAB_VALUES = 1 << 22


def _finite_float(block) -> np.ndarray:
    out = np.asarray(block, dtype=np.float64).copy()
    out[~np.isfinite(out)] = np.nan
    return out


def _without_infinities(block: np.ndarray) -> np.ndarray:
    """``block`` as it is (no copy) unless it holds +-inf, which become NaN: ``fmax``/``fmin`` skip NaN."""
    if block.dtype.kind == "f" and np.isinf(block).any():
        return np.where(np.isinf(block), np.nan, block)
    return block


def _slabs(n: int, per_item: int, scale: int = 1) -> list[slice]:
    step = max(1, scale * SLAB_VALUES // max(1, per_item))
    return [slice(start, min(start + step, n)) for start in range(0, n, step)]


def finite_range(heatmap) -> tuple[float, float]:
    """The finite minimum and maximum, read slab by slab along the first axis; ``(0, 0)`` where none.

    ``heatmap`` is an ndarray or a map read in pieces (:class:`~peakloc.ops.lazy.Map`), whose range a pass
    over it may already have found (``heatmap.seen``).
    """
    seen = getattr(heatmap, "seen", {}).get("range")
    if seen is not None:
        return seen
    lo, hi = np.inf, -np.inf
    for part in _slabs(heatmap.shape[0], int(np.prod(heatmap.shape[1:], dtype=np.int64)), 8):
        block = _without_infinities(np.asarray(heatmap[part]))
        if block.dtype.kind != "f" or not np.isnan(block).all():
            lo, hi = min(lo, float(np.fmin.reduce(block, axis=None))), max(hi, float(np.fmax.reduce(block, axis=None)))
    return (lo, hi) if lo <= hi else (0.0, 0.0)


def projections(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximum-intensity projections of a ``(Z, Y, X)`` volume along Z, Y and X, NaN where nothing is finite.

    Read slab by slab along Z, in the volume's own dtype, unless a pass over a volume read in pieces already
    took them (``volume.seen``).
    """
    seen = getattr(volume, "seen", {}).get("projections")
    if seen is not None:
        return seen
    z, y, x = volume.shape
    along_z = np.full((y, x), np.nan)
    along_y = np.empty((z, x))
    along_x = np.empty((z, y))
    for part in _slabs(z, y * x, 8):
        slab = _without_infinities(np.asarray(volume[part]))  # its own dtype: no float copy of the slab
        along_z = np.fmax(along_z, np.fmax.reduce(slab, axis=0))
        along_y[part] = np.fmax.reduce(slab, axis=1)
        along_x[part] = np.fmax.reduce(slab, axis=2)
    return along_z, along_y, along_x


def max_pool(image, factor: int) -> np.ndarray:
    """Block maxima of a 2-D image, ``factor`` pixels a side (NaN only where a block has no finite value).

    Read in bands of many block rows (a tiled store then decodes each tile about once), in the image's own
    dtype, unless a pass over a map read in pieces already pooled it (``image.seen``).

    Examples
    --------
    >>> max_pool(np.arange(12.0).reshape(3, 4), 2)
    array([[ 5.,  7.],
           [ 9., 11.]])
    """
    seen = getattr(image, "seen", {}).get("pooled")
    if seen is not None and seen[0] == factor:  # taken by the pass over a map read in pieces
        return seen[1]
    rows, cols = image.shape
    out = np.empty((-(-rows // factor), -(-cols // factor)))
    per_band = max(1, 8 * SLAB_VALUES // max(1, cols * factor))
    for first in range(0, out.shape[0], per_band):
        last = min(first + per_band, out.shape[0])
        out[first:last] = block_maxima(np.asarray(image[first * factor : last * factor]), factor)
    return out


def pool_factor(shape: tuple[int, ...]) -> int:
    """Pixels a side of the blocks a panel of ``shape`` is max-pooled by (1: drawn as it is)."""
    return max(1, -(-max(shape) // MAX_PANEL))


def _pooled(panel: Panel) -> Panel:
    factor = pool_factor(panel.image.shape)
    if factor <= 1:
        return panel
    return Panel(max_pool(panel.image, factor), panel.row_axis, panel.col_axis, panel.label, factor)


def panels(heatmap: np.ndarray) -> list[Panel]:
    """2-D: the map itself; 3-D: maximum-intensity projections XY, XZ, YZ; 1-D: one strip. Large ones pooled."""
    if heatmap.ndim == 1:
        views = [Panel(np.asarray(heatmap[:])[np.newaxis], -1, 0)]
    elif heatmap.ndim == 2:
        views = [Panel(heatmap if max(heatmap.shape) > MAX_PANEL else np.asarray(heatmap[:]), 0, 1)]
    else:
        along_z, along_y, along_x = projections(heatmap)
        views = [Panel(along_z, 1, 2, "XY"), Panel(along_y, 0, 2, "XZ"), Panel(along_x.T, 1, 0, "YZ")]
    return [_pooled(view) for view in views]


@dataclass(frozen=True)
class ColourRange:
    """``--overlay-range``: the colour map's ends, as percentiles of the values shown or as raw values."""

    lo: float
    hi: float
    percent: bool = False

    @classmethod
    def parse(cls, text: str) -> ColourRange:
        """``"0.5%,99.5%"`` (percentiles) or ``"0,255"`` (raw values); :class:`ValueError` says what is wrong.

        Examples
        --------
        >>> ColourRange.parse("0.5%,99.5%")
        ColourRange(lo=0.5, hi=99.5, percent=True)
        >>> ColourRange.parse("-1,2.5e3")
        ColourRange(lo=-1.0, hi=2500.0, percent=False)
        """
        parts = [p.strip() for p in str(text).split(",")]
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"{text!r} is not LO,HI (e.g. 0.5%,99.5% or 0,255)")
        percent = [p.endswith("%") for p in parts]
        if percent[0] != percent[1]:
            raise ValueError(f"{text!r} mixes a percentile and a value: give both as percentiles or both as values")
        try:
            lo, hi = (float(p.rstrip("%")) for p in parts)
        except ValueError:
            raise ValueError(f"{text!r} is not LO,HI (e.g. 0.5%,99.5% or 0,255)") from None
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
            raise ValueError(f"{text!r}: LO must be below HI, both finite")
        if percent[0] and not (0 <= lo and hi <= 100):
            raise ValueError(f"{text!r}: percentiles must lie within 0%..100%")
        return cls(lo, hi, percent[0])

    def limits(self, images: list[np.ndarray]) -> tuple[float, float]:
        """The raw values at the colour map's ends for the pictures ``images`` (their finite values)."""
        if not self.percent:
            return self.lo, self.hi
        values = np.concatenate([_sample(np.asarray(im, dtype=np.float64)) for im in images])
        values = values[np.isfinite(values)]
        if values.size == 0:
            return 0.0, 0.0
        lo, hi = np.percentile(values, [self.lo, self.hi])
        return float(lo), float(hi)


#: Percentiles are taken over at most about this many values (a regular subsample of larger pictures).
PERCENTILE_SAMPLE = 1 << 22


def _sample(image: np.ndarray) -> np.ndarray:
    flat = image.reshape(-1)
    step = max(1, flat.size // PERCENTILE_SAMPLE)
    return flat[::step]


@dataclass(frozen=True)
class _Geometry:
    """Where a panel's pixels land in its picture: display pixel = (pooled pixel + 0.5) * scale - 0.5 + offset."""

    row_scale: float
    col_scale: float
    row_offset: float = 0.0
    col_offset: float = 0.0

    def display(self, panel: Panel, point: np.ndarray) -> tuple[float, float]:
        """Display ``(x, y)`` of heatmap pixel coordinates ``point`` (array-axis order)."""
        y = (
            (point[panel.row_axis] + 0.5) * self.row_scale / panel.pool - 0.5 + self.row_offset
            if panel.row_axis >= 0
            else self.row_offset + self.row_scale / 2 - 0.5
        )
        x = (point[panel.col_axis] + 0.5) * self.col_scale / panel.pool - 0.5 + self.col_offset
        return x, y


def _axis_scales(
    view: Panel, heatmap_shape: tuple[int, ...], scale: int | None, spacing: tuple[float, ...] | None
) -> tuple[float, float]:
    """Display pixels per pooled pixel along the panel's rows and columns.

    A whole zoom (``scale``, or :func:`auto_scale`), times each axis's voxel size relative to the finest of
    Y and X; an axis shorter than :data:`MIN_PANEL_SIDE` on screen is stretched to it.
    """
    f = 1.0 if view.pool > 1 else float(scale or auto_scale(heatmap_shape[-2:]))
    rows, cols = view.image.shape
    reference = min(spacing[-2:]) if spacing else 1.0

    def along(axis: int, n: int) -> float:
        if axis < 0:  # the one row of a 1-D strip
            return max(32.0, f)
        d = f * (spacing[axis] / reference if spacing else 1.0)
        d = max(d, MIN_PANEL_SIDE / n)
        return min(d, max(1.0, MAX_LONG_SIDE / n))

    return along(view.row_axis, rows), along(view.col_axis, cols)


def _half_widths(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, reach: int = 12) -> np.ndarray:
    """Per point, how big its peak looks (to size its marker), in pixels.

    How far the value stays above half its height over the local minimum, averaged over four directions.
    """
    if rows.size == 0:
        return np.zeros(0)
    h, w = image.shape
    values = np.where(np.isfinite(image), image, np.nan)
    top = values[rows, cols]
    r0, r1 = np.clip(rows - reach, 0, h), np.clip(rows + reach + 1, 0, h)
    c0, c1 = np.clip(cols - reach, 0, w), np.clip(cols + reach + 1, 0, w)
    low = np.array(
        [
            np.nanmin(values[a:b, c:d]) if np.isfinite(values[a:b, c:d]).any() else np.nan
            for a, b, c, d in zip(r0, r1, c0, c1)
        ]
    )
    half = (top + low) / 2
    steps = np.arange(1, reach + 1)
    total = np.zeros(rows.size)
    for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        rr, cc = rows[:, None] + dr * steps, cols[:, None] + dc * steps
        inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        ray = np.where(inside, values[np.clip(rr, 0, h - 1), np.clip(cc, 0, w - 1)], np.nan)
        with np.errstate(invalid="ignore"):
            falls = ~(ray > half[:, None])
        total += np.where(falls.any(axis=1), falls.argmax(axis=1), reach)
    return total / 4


def _neighbour_distances(points: np.ndarray) -> np.ndarray:
    """Distance from each display point ``(P, 2)`` to its nearest other point (inf when alone)."""
    out = np.full(len(points), np.inf)
    if len(points) < 2 or len(points) > 4096:
        return out
    d = np.hypot(points[:, None, 0] - points[None, :, 0], points[:, None, 1] - points[None, :, 1])
    np.fill_diagonal(d, np.inf)
    return d.min(axis=1)


class _Labels:
    """Rank labels placed beside their markers, inside the picture and clear of every marker and label."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.taken = np.zeros(shape, bool)

    def take(self, left: float, top: float, right: float, bottom: float) -> None:
        h, w = self.taken.shape
        self.taken[
            max(0, int(top)) : min(h, int(math.ceil(bottom)) + 1), max(0, int(left)) : min(w, int(math.ceil(right)) + 1)
        ] = True

    def place(self, picture: np.ndarray, text: str, x: float, y: float, radius: float) -> bool:
        """Draw ``text`` at the first free spot around the marker at ``(x, y)``; False if none is free."""
        width, height = _text_size(text)
        h, w = self.taken.shape
        gap = radius * 0.75 + 2
        for left, bottom in (
            (x + gap, y - gap),  # above right
            (x + gap, y + gap + height),  # below right
            (x - gap - width, y - gap),  # above left
            (x - gap - width, y + gap + height),  # below left
        ):
            left, bottom = int(round(left)), int(round(bottom))
            top, right = bottom - height, left + width
            if left < 0 or top < 0 or right >= w or bottom + 2 >= h:
                continue
            if self.taken[top : bottom + 3, left : right + 1].any():
                continue
            _put_text(picture, text, left + 1, bottom)
            self.take(left, top, right, bottom + 2)
            return True
        return False


def _picture(
    view: Panel,
    heatmap: np.ndarray,
    colormap: str,
    limits: tuple[float, float],
    scale: int | None,
    spacing: tuple[float, ...] | None,
    background: np.ndarray | None,
) -> tuple[np.ndarray, _Geometry]:
    """The panel in colour at its display size (or blended into the photo), and where its pixels landed."""
    import cv2

    rows, cols = view.image.shape
    lo, hi = limits
    coloured = colorize(view.image, colormap, lo, hi)
    if background is None:
        row_scale, col_scale = _axis_scales(view, heatmap.shape, scale, spacing)
        size = (max(1, round(cols * col_scale)), max(1, round(rows * row_scale)))
        picture = cv2.resize(coloured, size, interpolation=cv2.INTER_NEAREST)
        return picture, _Geometry(size[1] / rows, size[0] / cols)
    # The map keeps its aspect inside the photo (fitted and centred, as a letterboxed network input), and
    # it is blended with an opacity that follows its own values: the photo shows through where they are low.
    height, width = background.shape[:2]
    fit = min(height / rows, width / cols)
    size = (max(1, round(cols * fit)), max(1, round(rows * fit)))
    top, left = (height - size[1]) // 2, (width - size[0]) // 2
    span = hi - lo
    values = view.image.astype(np.float64)
    with np.errstate(invalid="ignore"):
        opacity = np.clip((values - lo) / span if span > 0 else np.ones_like(values), 0, 1) * BACKGROUND_OPACITY
    opacity[~np.isfinite(values)] = 0
    opacity = cv2.resize(opacity.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)[..., None]
    coloured = cv2.resize(coloured, size, interpolation=cv2.INTER_LINEAR).astype(np.float32)
    picture = background.copy()
    region = picture[top : top + size[1], left : left + size[0]].astype(np.float32)
    picture[top : top + size[1], left : left + size[0]] = np.rint(region * (1 - opacity) + coloured * opacity).astype(
        np.uint8
    )
    return picture, _Geometry(size[1] / rows, size[0] / cols, top, left)


def _mark(
    picture: np.ndarray,
    view: Panel,
    geometry: _Geometry,
    peaks: dict[str, np.ndarray],
    others: np.ndarray | None,
    labelled: bool = True,
) -> None:
    """Draw the faint rings of ``others``, each method's markers and the rank labels, in place.

    Then every marked peak gets its own pixels back: a neighbour's marker or label may have crossed them.
    """
    untouched = picture.copy()
    clear = 0.5 * min(geometry.row_scale, geometry.col_scale) / view.pool
    points = {}
    for method, coords in peaks.items():
        coords = np.asarray(coords, dtype=np.float64).reshape(
            -1, np.asarray(coords).shape[-1] if np.asarray(coords).size else 1
        )
        keep = ~np.isnan(coords).any(axis=1) if coords.size else np.zeros(0, bool)
        ranks = np.flatnonzero(keep) + 1
        shown = np.array([geometry.display(view, p) for p in coords[keep]]).reshape(-1, 2)
        points[method] = (ranks, shown, coords[keep])
    if others is not None and len(others):
        for p in np.asarray(others, dtype=np.float64):
            x, y = geometry.display(view, p)
            _faint_ring(picture, x, y, max(4.0, clear + 2.0))
    first = next(iter(peaks), None)
    # Crowded peaks and thin panels (a projection across 9 slices) get smaller markers.
    most = max(4.0, min(48.0, min(picture.shape[:2]) / 6))
    radii = {}
    for method, (_, shown, coords) in points.items():
        if not len(shown):
            radii[method] = np.zeros(0)
            continue
        pooled = np.clip(np.rint((coords + 0.5) / view.pool - 0.5).astype(np.int64), 0, None)
        rows = pooled[:, view.row_axis] if view.row_axis >= 0 else np.zeros(len(pooled), np.int64)
        cols = pooled[:, view.col_axis]
        rows = np.minimum(rows, view.image.shape[0] - 1)
        cols = np.minimum(cols, view.image.shape[1] - 1)
        width = _half_widths(view.image, rows, cols) * min(geometry.row_scale, geometry.col_scale) / view.pool
        radius = np.maximum(width + 2, clear + 4)
        crowd = _neighbour_distances(shown)
        radii[method] = np.clip(np.minimum(radius, np.maximum(crowd / 2, clear + 4)), 4, most)
    # argmax last: its white circle then sits on top of the others.
    for method in sorted(points, key=lambda m: m == "argmax"):
        marker = _marker(method)
        for (x, y), r in zip(points[method][1], radii[method]):
            draw_marker(picture, x, y, marker, r, clear)
    if labelled and first is not None and len(points[first][1]) > 1:
        labels = _Labels(picture.shape[:2])
        for method, (_, shown, _) in points.items():
            for (x, y), r in zip(shown, radii[method]):
                inside = 0.7 * r * _SIZE[_marker(method).shape]
                labels.take(x - inside, y - inside, x + inside, y + inside)
        widest = max(_SIZE[_marker(m).shape] for m in points)
        for rank, (x, y), r in zip(points[first][0], points[first][1], radii[first]):
            labels.place(picture, str(rank), x, y, r * widest)
    keep_radius = clear + 0.5
    h, w = picture.shape[:2]
    for _, shown, _ in points.values():
        for x, y in shown:
            top, bottom = max(0, int(math.floor(y - keep_radius))), min(h, int(math.ceil(y + keep_radius)) + 1)
            left, right = max(0, int(math.floor(x - keep_radius))), min(w, int(math.ceil(x + keep_radius)) + 1)
            if top < bottom and left < right:
                yy, xx = np.mgrid[top:bottom, left:right]
                near = (yy - y) ** 2 + (xx - x) ** 2 <= keep_radius**2 + 0.5
                near[np.clip(int(round(y)), top, bottom - 1) - top, np.clip(int(round(x)), left, right - 1) - left] = (
                    True
                )
                picture[top:bottom, left:right][near] = untouched[top:bottom, left:right][near]


def render(
    heatmap: np.ndarray,
    peaks: dict[str, np.ndarray],
    *,
    colormap: str = DEFAULT_COLORMAP,
    scale: int | None = None,
    title: str = "",
    background: np.ndarray | None = None,
    value_range: ColourRange | None = None,
    limits: tuple[float, float] | None = None,
    spacing: tuple[float, ...] | None = None,
    others: np.ndarray | None = None,
    with_legend: bool = True,
) -> np.ndarray:
    """Picture of one heatmap with its peaks marked.

    Parameters
    ----------
    heatmap : ndarray, shape ``(X,)``, ``(Y, X)`` or ``(Z, Y, X)``
        Raw values; NaN and inf are drawn grey. A panel larger than :data:`MAX_PANEL` pixels a side is
        max-pooled (``scale`` is then ignored).
    peaks : dict
        Method -> pixel coordinates ``(P, ndim)`` in array-axis order, rank 1 first (NaN rows skipped).
        The first method's markers carry rank labels where there are several.
    colormap : str
        OpenCV colour map name.
    scale : int, optional
        Integer zoom (nearest neighbour); default :func:`auto_scale`.
    title : str
        Text of the top band (input and index).
    background : ndarray, optional
        A BGR photograph (2-D heatmaps only): the map is fitted inside it, centred, keeping its aspect, and
        blended with an opacity that grows with its value.
    value_range : ColourRange, optional
        The colour map's ends; default the finite minimum and maximum of the heatmap.
    limits : (float, float), optional
        The ends as raw values, already computed (a contact sheet's common range); overrides ``value_range``.
    spacing : tuple of float, optional
        Voxel size per spatial axis (array-axis order) in any one unit: panels keep the true aspect.
    others : ndarray, shape ``(Q, ndim)``, optional
        Local maxima ranked below the marked peaks, drawn as faint rings.
    with_legend : bool
        Add the legend band (markers' key and colour bar) under the picture.

    Returns
    -------
    ndarray of uint8, shape ``(H, W, 3)``, BGR.
    """
    views = panels(heatmap)
    if background is not None and heatmap.ndim != 2:
        raise PeaklocError("`background` works with 2-D heatmaps only")
    if limits is None:
        limits = value_range.limits([v.image for v in views]) if value_range is not None else finite_range(heatmap)
    pictures = []
    for i, view in enumerate(views):
        picture, geometry = _picture(view, heatmap, colormap, limits, scale, spacing, background)
        # A volume's ranks are labelled on its XY panel only: the side panels are too thin for them.
        _mark(picture, view, geometry, peaks, others, labelled=i == 0)
        if view.label:
            _put_text(picture, view.label, 4, 16)
        pictures.append(picture)
    body = _side_by_side(pictures)
    parts = [title_band(body.shape[1], title)] if title else []
    parts.append(body)
    if with_legend:
        parts.append(legend(body.shape[1], list(peaks), colormap, limits, others is not None and len(others) > 0))
    return np.concatenate(parts, axis=0)


def _side_by_side(pictures: list[np.ndarray], gap: int = 6) -> np.ndarray:
    height = max(p.shape[0] for p in pictures)
    out = []
    for i, p in enumerate(pictures):
        if i:
            out.append(np.full((height, gap, 3), BAND_COLOUR, np.uint8))
        pad = np.full((height - p.shape[0], p.shape[1], 3), BAND_COLOUR, np.uint8)
        out.append(np.concatenate([p, pad], axis=0))
    return np.concatenate(out, axis=1)


def contact_sheet(
    tiles: list[np.ndarray], title: str = "", columns: int | None = None, gap: int = 4, key: np.ndarray | None = None
) -> np.ndarray:
    """A grid of overlay images (each with its own title band), row by row in C order, under a title.

    ``key`` is a function of the sheet's width that gives its one legend band, put under the grid (tiles are
    rendered without theirs).
    """
    columns = columns or math.ceil(math.sqrt(len(tiles)))
    height = max(t.shape[0] for t in tiles)
    width = max(t.shape[1] for t in tiles)
    rows = math.ceil(len(tiles) / columns)
    sheet = np.full((rows * (height + gap) + gap, columns * (width + gap) + gap, 3), 20, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = gap + r * (height + gap), gap + c * (width + gap)
        sheet[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    parts = [title_band(sheet.shape[1], title)] if title else []
    parts.append(sheet)
    if key is not None:
        parts.append(key(sheet.shape[1]))
    return np.concatenate(parts)
