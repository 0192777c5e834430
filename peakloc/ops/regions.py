"""Connected regions of a map in one pass each: neighbourhood maxima, labelling, and the tops of level bands.

Peak finding asks, of each candidate, which region of the map it belongs to (its plateau; in integer maps
the pixels joined to it by a ridge at most one level lower). Each answer here comes from one labelling of
the whole map (OpenCV in 2-D, ``scipy.ndimage`` in 3-D), never from a search grown per candidate.
Neighbours are the ``3**ndim - 1`` around a pixel (8 in 2-D, 26 in 3-D); values outside the map count as
absent.
"""

from __future__ import annotations

import numpy as np

from .filters import CV_DILATE, dilated, lowest


def neighbour_max(x: np.ndarray) -> np.ndarray:
    """Maximum over the ``3**ndim`` box around each element, the element included; same shape and dtype.

    OpenCV's 3x3 dilation over each 2-D plane where it takes the dtype, then the neighbours along the
    first axis; otherwise one axis at a time, each a copy and two shifted maxima (no padded copies).

    Examples
    --------
    >>> neighbour_max(np.array([0, 3, 0, 0, 1], np.uint8))
    array([3, 3, 3, 1, 1], dtype=uint8)
    >>> neighbour_max(np.array([[[1, 0], [0, 0]], [[0, 0], [0, 5]]], np.int64))[0].tolist()
    [[5, 5], [5, 5]]
    """
    if x.dtype in CV_DILATE:
        if x.ndim <= 2:
            return dilated(x.reshape(1, -1) if x.ndim == 1 else x, 1).reshape(x.shape)
        out = np.empty(x.shape, x.dtype)
        for k, plane in enumerate(x.reshape((-1,) + x.shape[-2:])):
            out.reshape((-1,) + x.shape[-2:])[k] = dilated(plane, 1)
        return _along(out, 0)
    out = x
    for axis in range(x.ndim):
        out = _along(out, axis)
    return out


def _along(x: np.ndarray, axis: int) -> np.ndarray:
    """Maximum of each element and its two neighbours along ``axis`` (a new array)."""
    out = x.copy()
    a = np.moveaxis(out, axis, 0)
    b = np.moveaxis(x, axis, 0)
    np.maximum(a[1:], b[:-1], out=a[1:])
    np.maximum(a[:-1], b[1:], out=a[:-1])
    return out


def label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components of ``mask`` (every neighbour connects): int32 labels 1..n (0 outside), and n.

    Examples
    --------
    >>> label(np.array([1, 1, 0, 1], bool))
    (array([1, 1, 0, 2], dtype=int32), 2)
    """
    mask = np.ascontiguousarray(mask, dtype=bool)
    if mask.ndim <= 2:
        import cv2

        flat = mask.reshape(1, -1) if mask.ndim == 1 else mask
        count, labels = cv2.connectedComponents(flat.view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
        return labels.reshape(mask.shape), count - 1
    from scipy import ndimage

    labels = np.empty(mask.shape, np.int32)
    count = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, bool), output=labels)
    return labels, int(count)


def component(mask: np.ndarray, seed: tuple[int, ...]) -> np.ndarray:
    """The connected component of ``mask`` holding ``seed`` (bool, ``mask``'s shape), for small masks.

    Labelled by OpenCV in 1-D and 2-D; in 3-D grown a ring of neighbours at a time, which for the few
    pixels of a small box costs less than importing ``scipy.ndimage`` (16 MiB of memory).

    Examples
    --------
    >>> component(np.array([1, 1, 0, 1], bool), (0,)).tolist()
    [True, True, False, False]
    """
    if mask.ndim <= 2:
        labels, _ = label(mask)
        return labels == labels[seed]
    region = np.zeros(mask.shape, bool)
    region[seed] = True
    count = 1
    while True:
        region = neighbour_max(region) & mask
        grown = int(np.count_nonzero(region))
        if grown == count:
            return region
        count = grown


def half_levels(x: np.ndarray, parity: int) -> np.ndarray:
    """Integer levels paired two by two: ``ceil(x / 2)`` for ``parity`` 0, ``floor(x / 2)`` for 1.

    A band of two levels ``{l - 1, l}`` is one level of ``half_levels(x, l % 2)``: levels ``2k - 1`` and
    ``2k`` become one level for parity 0, levels ``2k`` and ``2k + 1`` one level for parity 1. In ``x``'s
    own integer dtype, one more in unsigned types: the dtype's lowest value is never used, so that
    :func:`band_tops` can use it to mean "absent".

    Examples
    --------
    >>> x = np.array([-3, 0, 1, 2, 3, 127], np.int8)
    >>> half_levels(x, 0), half_levels(x, 1)
    (array([-1,  0,  1,  1,  2, 64], dtype=int8), array([-2,  0,  0,  1,  1, 63], dtype=int8))
    >>> half_levels(np.array([0, 1, 2, 255], np.uint8), 0)
    array([  1,   2,   2, 129], dtype=uint8)
    """
    q = x >> 1
    if parity == 0:
        q += x & 1
    if x.dtype.kind == "u":
        q += 1
    return q


def band_tops(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels with no higher neighbour, and those of them beside an equal neighbour that has one.

    ``q`` never holds its dtype's lowest value (:func:`half_levels` leaves it free).

    A plateau of ``q`` (equal values, connected) is a regional maximum when none of its pixels has a higher
    neighbour. The first mask (``top``) holds every pixel of every regional maximum, plus pieces of the other
    plateaus; its connected components each lie within one plateau (two neighbours with no higher neighbour
    are equal). The second (``edge``) marks the pixels of ``top`` beside a pixel of their own plateau outside
    ``top``: a component of ``top`` is a regional maximum exactly when it holds no ``edge`` pixel. Regional
    maxima are never neighbours of one another, so labelling ``top`` separates them.
    """
    top = neighbour_max(q) == q
    if q.dtype.kind == "u":
        rest = q * ~top  # the lowest value is 0: a product, where np.where branches (10x slower on 8-bit maps)
    else:
        rest = q.copy()
        rest[top] = lowest(q.dtype)
    edge = top & (neighbour_max(rest) == q)
    return top, edge


def flag_labels(labels: np.ndarray, count: int, marks: np.ndarray) -> np.ndarray:
    """``(count + 1,)`` bool: which labels hold a pixel of ``marks`` (label 0, outside, never)."""
    flags = np.zeros(count + 1, bool)
    # The marks' flat positions first: a boolean index of the labels reads them 1.7x slower.
    flags[labels.reshape(-1)[np.flatnonzero(marks)]] = True
    flags[0] = False
    return flags


#: Pixels whose neighbourhoods are gathered at once by :func:`sparse_band` (a few tens of MB in 3-D).
SPARSE_BLOCK = 1 << 15


def sparse_band(
    x: np.ndarray, parity: int, floor: int, rows: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`band_tops` at or above ``floor``, labelled and flagged from those pixels alone (few of them).

    ``floor`` is the lower level of a pair of :func:`half_levels` ``(x, parity)`` (so that a pixel's equal
    neighbours are all at or above it), above the dtype's lowest value. Each such pixel's ``3**ndim``
    neighbourhood is gathered (no pass over the whole map but one comparison), and the band tops among them
    are joined by SciPy's connected components. With ``rows`` ``(lo, hi)``, only band tops in rows ``lo:hi``
    of the first axis are labelled (a slab read with a halo: the halo's neighbours are read, its pixels are
    not labelled).

    Parameters
    ----------
    x : ndarray of int, shape ``spatial``

    Returns
    -------
    coords : ndarray of int64, ``(P, ndim)``
        The labelled pixels, in C order.
    component : ndarray of int64, ``(P,)``
        Their components: equal, one component.
    flagged : ndarray of bool
        Per component: whether it holds an edge pixel (no regional maximum). Index it with ``component``.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    # A ring of the dtype's lowest value: every neighbour exists, and none outside the map is >= floor.
    padded = np.pad(x, 1, constant_values=np.iinfo(x.dtype).min)
    flat = padded.reshape(-1)
    where = np.flatnonzero(flat >= floor)
    strides = np.array([int(np.prod(padded.shape[k + 1 :])) for k in range(x.ndim)])
    shifts = (np.array(list(np.ndindex(*(3,) * x.ndim))) - 1) @ strides

    def near(block: slice):
        """Neighbours of ``where[block]`` (flat indices in the padded map) and their levels."""
        index = where[block, None] + shifts[None]
        return index, half_levels(flat[index], parity)

    blocks = [slice(k, k + SPARSE_BLOCK) for k in range(0, len(where), SPARSE_BLOCK)]
    top = np.empty(len(where), bool)
    for block in blocks:
        _, q = near(block)
        centre = half_levels(flat[where[block]], parity)
        top[block] = ~np.any(q > centre[:, None], axis=1)
    allowed = top.copy()
    if rows is not None:
        first = where // strides[0] - 1
        allowed &= (first >= rows[0]) & (first < rows[1])
    edge = np.zeros(len(where), bool)
    links = []
    for block in blocks:
        index, q = near(block)
        centre = half_levels(flat[where[block]], parity)
        position = np.minimum(np.searchsorted(where, index), len(where) - 1)
        member = where[position] == index
        neighbour_top = member & top[position]
        edge[block] = allowed[block] & np.any(member & (q == centre[:, None]) & ~neighbour_top, axis=1)
        found, cols = np.nonzero(member & allowed[position] & allowed[block][:, None])
        links.append((found + block.start, position[found, cols]))
    kept = np.flatnonzero(allowed)
    renumber = np.cumsum(allowed) - 1
    ends = [renumber[np.concatenate([link[k] for link in links])] for k in (0, 1)] if links else [[], []]
    graph = coo_matrix((np.ones(len(ends[0]), np.int8), tuple(ends)), shape=(len(kept), len(kept)))
    count, component = connected_components(graph, directed=False)
    flagged = np.zeros(count, bool)
    flagged[component[renumber[edge]]] = True
    coords = np.stack(np.unravel_index(where[kept], padded.shape), axis=1) - 1
    return coords, component.astype(np.int64), flagged


def find_rows(coords: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Index in ``coords`` ``(P, ndim)`` (C order) of each of ``points`` ``(k, ndim)``, which are among them."""
    top = np.maximum(coords.max(axis=0), points.max(axis=0)) + 1 if len(coords) and len(points) else None
    if top is None:
        return np.zeros(len(points), np.int64)
    return np.searchsorted(np.ravel_multi_index(tuple(coords.T), top), np.ravel_multi_index(tuple(points.T), top))
