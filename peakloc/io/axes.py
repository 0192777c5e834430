"""Axis letters: defaults, validation, and moving batch axes in front of the spatial ones.

Letters follow tifffile: ``Z``, ``Y``, ``X`` are spatial; every other known letter is a batch axis
(one heatmap per index), except ``S`` (colour samples), which readers turn into grey.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import AxesError

SPATIAL = "ZYX"
#: tifffile's axis codes (``S`` = samples, ``Q``/``I`` = unknown or image sequence).
KNOWN = "TCZYXSIQAPRHELVMOF"


def validate_axes(axes: str) -> str:
    """Upper-case and check axis letters: known, no repeats, at least one spatial axis.

    Examples
    --------
    >>> validate_axes("cyx")
    'CYX'
    """
    if not isinstance(axes, str):
        raise TypeError(f"`axes` must be a string. Got: {type(axes).__name__}")
    letters = axes.strip().upper()
    unknown = sorted({a for a in letters if a not in KNOWN})
    if unknown:
        raise AxesError(
            f"unknown axis letter {', '.join(repr(a) for a in unknown)} in `axes` {axes!r}; "
            f"known letters: {KNOWN} (Z, Y, X are spatial)"
        )
    repeated = sorted({a for a in letters if letters.count(a) > 1})
    if repeated:
        raise AxesError(f"axis letter {', '.join(repr(a) for a in repeated)} repeated in `axes` {axes!r}")
    if not any(a in SPATIAL for a in letters):
        raise AxesError(f"`axes` {axes!r} has no spatial axis (Z, Y or X)")
    return letters


def default_axes(ndim: int) -> str:
    """Axes of an array stored without metadata (NPY, a plain multi-page TIFF): X, YX, ZYX.

    Examples
    --------
    >>> default_axes(3)
    'ZYX'
    """
    if 1 <= ndim <= 3:
        return SPATIAL[-ndim:]
    if ndim == 0:
        raise AxesError("a 0-d array (a single number) is not a heatmap")
    example = "TCZYX"[-ndim:] if ndim <= 5 else "TCZYX"
    raise AxesError(f"cannot tell the axes of a {ndim}-d array: pass `axes` with {ndim} letters, e.g. {example}")


@dataclass(frozen=True)
class Layout:
    """How a stored array maps to heatmaps.

    Attributes
    ----------
    batch : str
        Batch axis letters, in stored order (e.g. ``"TC"``).
    batch_shape : tuple of int
        Their sizes.
    spatial : str
        Spatial axis letters present, always in ``Z, Y, X`` order (e.g. ``"YX"``).
    spatial_shape : tuple of int
        Their sizes.
    """

    batch: str
    batch_shape: tuple[int, ...]
    spatial: str
    spatial_shape: tuple[int, ...]

    @property
    def count(self) -> int:
        """Number of heatmaps."""
        return math.prod(self.batch_shape)  # Python ints: no overflow, and no NumPy call per file

    def index_labels(self) -> list[str]:
        """One label per heatmap, in C order: ``""`` for a single map, else ``"C=2"`` or ``"T=0;C=2"``.

        Examples
        --------
        >>> Layout("TC", (1, 2), "YX", (4, 4)).index_labels()
        ['T=0;C=0', 'T=0;C=1']
        """
        if not self.batch:
            return [""]
        return [";".join(f"{a}={i}" for a, i in zip(self.batch, idx)) for idx in np.ndindex(*self.batch_shape)]


def layout_of(shape: tuple[int, ...], axes: str) -> Layout:
    """The layout of an array of ``shape`` with axis letters ``axes``.

    Batch axes come in stored order, then the spatial ones in Z, Y, X order.

    Examples
    --------
    >>> layout_of((3, 40, 2, 50), "YCXT")
    Layout(batch='CT', batch_shape=(40, 50), spatial='YX', spatial_shape=(3, 2))
    """
    axes = validate_axes(axes)
    if len(axes) != len(shape):
        raise AxesError(f"axes {axes!r} name {len(axes)} axes but the array has {len(shape)} (shape {tuple(shape)})")
    if "S" in axes:
        raise AxesError(f"axes {axes!r}: colour samples (S) are only allowed in images and TIFF files")
    batch = "".join(a for a in axes if a not in SPATIAL)
    spatial = "".join(a for a in SPATIAL if a in axes)
    spatial_shape = tuple(int(shape[axes.index(a)]) for a in spatial)
    if 0 in spatial_shape:
        raise AxesError(f"a spatial axis is empty (shape {tuple(shape)}, axes {axes!r})")
    return Layout(batch, tuple(int(shape[axes.index(a)]) for a in batch), spatial, spatial_shape)


def to_heatmaps(array: np.ndarray, axes: str) -> tuple[np.ndarray, Layout]:
    """Transpose an array with axis letters to ``(batch..., Z?, Y?, X?)``.

    Parameters
    ----------
    array : ndarray
        The stored array; ``S`` must already be gone (readers turn colour into grey).
    axes : str
        One letter per axis of `array`.

    Returns
    -------
    heatmaps : ndarray, shape ``batch_shape + spatial_shape``
        The array, or a view of it (no copy), with batch axes first, in stored order, then the spatial
        axes in Z, Y, X order.
    layout : Layout
    """
    layout, order = arrangement(tuple(array.shape), axes)
    return (array if order is None else array.transpose(order)), layout


@lru_cache(maxsize=64)
def arrangement(shape: tuple[int, ...], axes: str) -> tuple[Layout, tuple[int, ...] | None]:
    """:func:`layout_of` an array of ``shape`` with letters ``axes``, and the order of its axes for it.

    The order moves the batch axes first and the spatial ones into Z, Y, X order (None: as stored). Once per
    shape and letters: a folder of images of one shape asks the same question for every file.
    """
    layout = layout_of(shape, axes)
    letters = validate_axes(axes)
    order = tuple(letters.index(a) for a in layout.batch + layout.spatial)
    return layout, (None if order == tuple(range(len(order))) else order)
