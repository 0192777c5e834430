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

#: Overlays of small heatmaps are scaled up (nearest neighbour) to at least this many pixels on the short side.
MIN_SHORT_SIDE = 256
#: ... but automatic scaling never makes the long side larger than this.
MAX_LONG_SIDE = 4096
DEFAULT_COLORMAP = "jet"
NAN_COLOUR = (128, 128, 128)
BAND_COLOUR = (40, 40, 40)
TEXT_COLOUR = (255, 255, 255)
FONT_SCALE = 0.45
LINE_HEIGHT = 18
_SHIFT = 4  # OpenCV fixed-point bits: positions are drawn to 1/16 pixel


@dataclass(frozen=True)
class Marker:
    """How a method's peaks are drawn: a shape name and a BGR colour."""

    shape: str
    colour: tuple[int, int, int]


#: One marker per method; white dot for argmax as users know it, distinct shapes for sub-pixel methods.
MARKERS = {
    "argmax": Marker("dot", (255, 255, 255)),
    "softargmax": Marker("cross", (255, 0, 255)),
    "local": Marker("diamond", (0, 255, 255)),
    "quadratic": Marker("square", (0, 128, 255)),
    "dark": Marker("ring", (0, 0, 0)),
    "gaussian": Marker("triangle", (255, 255, 0)),
}


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


def draw_marker(image: np.ndarray, x: float, y: float, marker: Marker, size: float) -> None:
    """Draw one marker centred on display coordinates ``(x, y)`` (pixel centres are integers), in place."""
    import cv2

    r = max(3.0, size)
    centre = (_to_fixed(x), _to_fixed(y))
    outline = (0, 0, 0) if sum(marker.colour) > 200 else (255, 255, 255)
    lt = cv2.LINE_AA
    if marker.shape == "dot":
        r = max(2.5, 0.6 * r)
        cv2.circle(image, centre, _to_fixed(r + 1), outline, -1, lt, _SHIFT)
        cv2.circle(image, centre, _to_fixed(r), marker.colour, -1, lt, _SHIFT)
        return
    if marker.shape == "ring":
        cv2.circle(image, centre, _to_fixed(r * 1.6), outline, 3, lt, _SHIFT)
        cv2.circle(image, centre, _to_fixed(r * 1.6), marker.colour, 1, lt, _SHIFT)
        return
    a = r * 1.5
    if marker.shape == "cross":
        segments = [((x - a, y - a), (x + a, y + a)), ((x - a, y + a), (x + a, y - a))]
    else:
        corners = {
            "diamond": [(x, y - a), (x + a, y), (x, y + a), (x - a, y)],
            "square": [(x - a, y - a), (x + a, y - a), (x + a, y + a), (x - a, y + a)],
            "triangle": [(x, y - a), (x + a, y + a * 0.8), (x - a, y + a * 0.8)],
        }[marker.shape]
        segments = list(zip(corners, corners[1:] + corners[:1]))
    for width, colour in ((4, outline), (2, marker.colour)):
        for (x0, y0), (x1, y1) in segments:
            cv2.line(image, (_to_fixed(x0), _to_fixed(y0)), (_to_fixed(x1), _to_fixed(y1)), colour, width, lt, _SHIFT)


def _put_text(image: np.ndarray, text: str, x: int, y: int, outline: bool = True) -> None:
    """White text; on the heatmap itself with a black outline so that any colour map leaves it legible."""
    import cv2

    if outline:
        cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, FONT_SCALE, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, FONT_SCALE, TEXT_COLOUR, 1, cv2.LINE_AA)


def _text_width(text: str) -> int:
    import cv2

    return cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, FONT_SCALE, 1)[0][0]


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


def legend(width: int, methods: list[str]) -> np.ndarray:
    """A band naming each method next to its marker, wrapped to ``width`` pixels."""
    items = [(m, 22 + _text_width(m) + 12) for m in methods]
    rows: list[list[tuple[str, int]]] = [[]]
    used = 6
    for item in items:
        if rows[-1] and used + item[1] > width:
            rows.append([])
            used = 6
        rows[-1].append(item)
        used += item[1]
    band = _band(width, len(rows))
    for r, row in enumerate(rows):
        x = 6
        y_text = 6 + r * LINE_HEIGHT + 12
        for method, item_width in row:
            draw_marker(band, x + 7, y_text - 4, MARKERS.get(method, MARKERS["softargmax"]), 4)
            _put_text(band, method, x + 20, y_text, outline=False)
            x += item_width
    return band


def title_band(width: int, text: str) -> np.ndarray:
    """A band with one line of text (the input and index), shortened from the left to fit."""
    band = _band(width, 1)
    _put_text(band, _fit(text, width - 12), 6, 18, outline=False)
    return band


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

    ``heatmap`` is an ndarray or a map read in pieces (:class:`~peakloc.ops.lazy.Map`).
    """
    lo, hi = np.inf, -np.inf
    for part in _slabs(heatmap.shape[0], int(np.prod(heatmap.shape[1:], dtype=np.int64)), 8):
        block = _without_infinities(np.asarray(heatmap[part]))
        if block.dtype.kind != "f" or not np.isnan(block).all():
            lo, hi = min(lo, float(np.fmin.reduce(block, axis=None))), max(hi, float(np.fmax.reduce(block, axis=None)))
    return (lo, hi) if lo <= hi else (0.0, 0.0)


def projections(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximum-intensity projections of a ``(Z, Y, X)`` volume along Z, Y and X, NaN where nothing is finite.

    Read slab by slab along Z, in the volume's own dtype.
    """
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
    dtype.

    Examples
    --------
    >>> max_pool(np.arange(12.0).reshape(3, 4), 2)
    array([[ 5.,  7.],
           [ 9., 11.]])
    """
    rows, cols = image.shape
    out = np.empty((-(-rows // factor), -(-cols // factor)))
    padded_cols = out.shape[1] * factor
    per_band = max(1, 8 * SLAB_VALUES // max(1, cols * factor))
    for first in range(0, out.shape[0], per_band):
        last = min(first + per_band, out.shape[0])
        band = _without_infinities(np.asarray(image[first * factor : last * factor]))
        fill = np.nan if band.dtype.kind == "f" else np.iinfo(band.dtype).min if band.dtype.kind in "iu" else 0
        height = (last - first) * factor
        if band.shape[0] < height or padded_cols > cols:
            grown = np.full((height, padded_cols), fill, band.dtype)
            grown[: band.shape[0], :cols] = band
            band = grown
        blocks = band.reshape(last - first, factor, -1, factor)
        out[first:last] = np.fmax.reduce(np.fmax.reduce(blocks, axis=3), axis=1)
    return out


def _pooled(panel: Panel) -> Panel:
    factor = -(-max(panel.image.shape) // MAX_PANEL)
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


def render(
    heatmap: np.ndarray,
    peaks: dict[str, np.ndarray],
    *,
    colormap: str = DEFAULT_COLORMAP,
    scale: int | None = None,
    title: str = "",
    background: np.ndarray | None = None,
) -> np.ndarray:
    """Picture of one heatmap with its peaks marked.

    Parameters
    ----------
    heatmap : ndarray, shape ``(X,)``, ``(Y, X)`` or ``(Z, Y, X)``
        Raw values; NaN and inf are drawn grey. A panel larger than :data:`MAX_PANEL` pixels a side is
        max-pooled (``scale`` is then ignored).
    peaks : dict
        Method -> pixel coordinates ``(P, ndim)`` in array-axis order, rank 1 first (NaN rows skipped).
    colormap : str
        OpenCV colour map name.
    scale : int, optional
        Integer zoom (nearest neighbour); default :func:`auto_scale`.
    title : str
        Text of the top band (input and index).
    background : ndarray, optional
        A BGR photograph (2-D heatmaps only): the coloured map is resized onto it and blended.

    Returns
    -------
    ndarray of uint8, shape ``(H, W, 3)``, BGR.
    """
    import cv2

    views = panels(heatmap)
    lo, hi = finite_range(heatmap)
    pictures = []
    for view in views:
        rows, cols = view.image.shape
        if background is not None:
            if heatmap.ndim != 2:
                raise PeaklocError("`background` works with 2-D heatmaps only")
            height, width = background.shape[:2]
            fy, fx = height / rows, width / cols
            coloured = cv2.resize(
                colorize(view.image, colormap, lo, hi), (width, height), interpolation=cv2.INTER_LINEAR
            )
            holes = cv2.resize(
                (~np.isfinite(view.image)).astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST
            )
            picture = cv2.addWeighted(background, 0.5, coloured, 0.5, 0)
            picture[holes.astype(bool)] = background[holes.astype(bool)]
        else:
            # A pooled panel is already large: shown as it is.
            f = 1 if view.pool > 1 else scale or auto_scale(heatmap.shape[-2:])
            fy = fx = float(f)
            if heatmap.ndim == 1:
                fy = float(max(32, f))
            coloured = colorize(view.image, colormap, lo, hi)
            picture = cv2.resize(coloured, (int(cols * fx), int(rows * fy)), interpolation=cv2.INTER_NEAREST)
        size = max(3.0, min(12.0, 0.6 * min(fx, fy)))
        # Heatmap pixel c is pooled pixel (c + 0.5) / pool - 0.5, shown at the zoom fx, fy.
        fy, fx = fy / view.pool, fx / view.pool
        # argmax last: its small dot then sits visibly inside the larger sub-pixel markers.
        for method, coords in sorted(peaks.items(), key=lambda item: item[0] == "argmax"):
            marker = MARKERS.get(method, MARKERS["softargmax"])
            for rank, point in enumerate(np.asarray(coords, dtype=np.float64), start=1):
                if np.isnan(point).any():
                    continue
                y = (point[view.row_axis] + 0.5) * fy - 0.5 if view.row_axis >= 0 else picture.shape[0] / 2 - 0.5
                x = (point[view.col_axis] + 0.5) * fx - 0.5
                draw_marker(picture, x, y, marker, size)
                if len(coords) > 1 and method == next(iter(peaks)):
                    _put_text(picture, str(rank), int(x + size + 3), int(y - size - 2))
        if view.label:
            _put_text(picture, view.label, 4, 16)
        pictures.append(picture)
    body = _side_by_side(pictures)
    parts = [title_band(body.shape[1], title)] if title else []
    parts += [body, legend(body.shape[1], list(peaks))]
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


def contact_sheet(tiles: list[np.ndarray], title: str = "", columns: int | None = None, gap: int = 4) -> np.ndarray:
    """A grid of overlay images (each with its own title band), row by row in C order, under a title."""
    columns = columns or math.ceil(math.sqrt(len(tiles)))
    height = max(t.shape[0] for t in tiles)
    width = max(t.shape[1] for t in tiles)
    rows = math.ceil(len(tiles) / columns)
    sheet = np.full((rows * (height + gap) + gap, columns * (width + gap) + gap, 3), 20, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = gap + r * (height + gap), gap + c * (width + gap)
        sheet[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    return np.concatenate([title_band(sheet.shape[1], title), sheet]) if title else sheet
