"""Colour-mapped heatmaps: a colour image made by ``cv2.applyColorMap`` turned back into its values."""

from __future__ import annotations

from functools import cache

import numpy as np

#: Largest distance (per channel, in grey levels) of a pixel from the map's nearest colour that still counts
#: as on the map: lossless files are exact, JPEG moves colours by a few levels.
ON_MAP = 12
#: Pixels sampled to recognise a colour map (an image's colours repeat; a sample suffices).
SAMPLE = 1 << 16
#: Distinct colours matched against each map, most frequent first.
MATCHED = 2048


def names() -> list[str]:
    """OpenCV's colour map names, lower case (``jet``, ``viridis``, ...)."""
    import cv2

    return sorted(n[len("COLORMAP_") :].lower() for n in dir(cv2) if n.startswith("COLORMAP_"))


@cache
def table(name: str) -> np.ndarray:
    """The 256 BGR colours of OpenCV's map ``name``, ``(256, 3)`` int32: entry ``v`` is value ``v``'s colour."""
    import cv2

    code = getattr(cv2, f"COLORMAP_{name.upper()}")
    return cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], code)[:, 0, :].astype(np.int32)


def _nearest(colours: np.ndarray, lut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest map colour and the largest channel distance to it, per colour ``(n, 3)``."""
    d2 = ((colours[:, None, :].astype(np.int32) - lut[None]) ** 2).sum(axis=-1)
    index = d2.argmin(axis=1)
    return index, np.abs(colours.astype(np.int32) - lut[index]).max(axis=1)


def decode(image: np.ndarray, name: str) -> np.ndarray:
    """Values ``(H, W)`` uint8 of a BGR(A) image ``(H, W, 3+)``: each pixel's nearest colour of map ``name``.

    Distinct colours are matched once each (an image has far fewer of them than pixels).

    Examples
    --------
    >>> import cv2
    >>> values = np.array([[0, 100, 255]], np.uint8)
    >>> decode(cv2.applyColorMap(values, cv2.COLORMAP_JET), "jet")
    array([[  0, 100, 255]], dtype=uint8)
    """
    bgr = np.ascontiguousarray(image[..., :3])
    packed = (bgr[..., 0].astype(np.int32) << 16) | (bgr[..., 1].astype(np.int32) << 8) | bgr[..., 2]
    unique, inverse = np.unique(packed, return_inverse=True)
    colours = np.stack([(unique >> 16) & 255, (unique >> 8) & 255, unique & 255], axis=1)
    index, _ = _nearest(colours, table(name))
    return index.astype(np.uint8)[inverse].reshape(packed.shape)


def recognise(image: np.ndarray) -> str | None:
    """The OpenCV colour map whose colours a BGR(A) image ``(H, W, 3+)`` lies on, or None.

    A map is recognised when at least 99% of the sampled pixels are within :data:`ON_MAP` levels of it,
    they use at least 16 of its 256 colours, and the image is not grey.
    """
    bgr = image[..., :3].reshape(-1, 3)
    if len(bgr) > SAMPLE:
        bgr = bgr[:: len(bgr) // SAMPLE]
    if np.all(bgr == bgr[:, :1]):
        return None
    colours, counts = np.unique(bgr, axis=0, return_counts=True)
    # Only the most frequent colours are matched: a map has 256, and a photograph fails on coverage anyway.
    top = np.argsort(-counts, kind="stable")[:MATCHED]
    total, colours, counts = counts.sum(), colours[top], counts[top]
    for name in names():
        index, distance = _nearest(colours, table(name))
        near = distance <= ON_MAP
        if counts[near].sum() >= 0.99 * total and len(np.unique(index[near])) >= 16:
            return name
    return None
