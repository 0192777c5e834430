"""Overlay files: one unique name per input, one PNG per heatmap (and a contact sheet), never over an input."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from ..errors import PeaklocError
from .overlay import DEFAULT_COLORMAP, ColourRange, contact_sheet, finite_range, legend, panels, render

#: Anything but letters (any script), digits and ``._=+-`` becomes ``_`` in a file name.
_UNSAFE = re.compile(r"[^\w.=+-]+")


def sanitize(text: str) -> str:
    """A file-name-safe version of ``text`` that keeps letters of any script and never starts with a dot.

    Examples
    --------
    >>> sanitize("T=0;C=2"), sanitize("Zürich frame"), sanitize(".hidden"), sanitize("é.png")
    ('T=0_C=2', 'Zürich_frame', 'hidden', 'é.png')
    """
    return _UNSAFE.sub("_", text).strip("_").lstrip(".") or "_"


def _parts(path: str) -> list[str]:
    """The parts of an input's absolute path; an HDF5 dataset's path joins its file's name."""
    from ..io.hdf5 import split_selector

    file, dataset = split_selector(path)
    parts = os.path.normpath(os.path.abspath(file)).split(os.sep)
    if dataset:
        stem, suffix = os.path.splitext(parts[-1])
        parts[-1] = f"{stem}_{dataset.strip('/').replace('/', '_')}{suffix}"
    return parts


def base_names(paths: list[str]) -> dict[str, str]:
    """A unique overlay base name per input path: its stem, lengthened by parent folders on collisions.

    Examples
    --------
    >>> base_names(["a/frame.png", "b/frame.png", "c/other.npy"])
    {'a/frame.png': 'a_frame', 'b/frame.png': 'b_frame', 'c/other.npy': 'other'}
    >>> base_names(["x/a.png", "x/a.npy"])
    {'x/a.png': 'a_png', 'x/a.npy': 'a_npy'}
    >>> base_names(["run.h5:/predictions/heads"])  # an HDF5 file's dataset: the file and the dataset
    {'run.h5:/predictions/heads': 'run_predictions_heads'}
    """
    unique = list(dict.fromkeys(paths))
    parts = {p: _parts(p) for p in unique}
    # Per path: how many trailing path parts name it, and whether the extension is added (a.png vs a.npy).
    state = {p: [1, False] for p in unique}

    def name(p: str) -> str:
        depth, with_suffix = state[p]
        stem, suffix = os.path.splitext(parts[p][-1])
        leaf = stem + suffix.replace(".", "_") if with_suffix else stem
        return sanitize("_".join(parts[p][-depth:-1] + [leaf]) if depth > 1 else leaf)

    for _ in range(256):
        names = {p: name(p) for p in unique}
        groups: dict[str, list[str]] = {}
        for p, n in names.items():
            groups.setdefault(n, []).append(p)
        clashes = [g for g in groups.values() if len(g) > 1]
        if not clashes:
            return names
        for group in clashes:
            folders = [tuple(parts[p][:-1]) for p in group]
            for p, folder in zip(group, folders):
                if folders.count(folder) > 1 and not state[p][1]:
                    state[p][1] = True
                elif state[p][0] < len(parts[p]):
                    state[p][0] += 1
    return {p: f"{sanitize(os.path.basename(p))}_{i}" for i, p in enumerate(unique)}


def write_png(path: str, image: np.ndarray) -> None:
    """Encode and write a PNG; raises :class:`PeaklocError` with the reason (disk full, no folder...)."""
    import cv2

    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise PeaklocError(f"cannot encode overlay {path}")
    try:
        with open(path, "wb") as handle:
            handle.write(data.tobytes())
    except OSError as exc:
        raise PeaklocError(f"cannot write overlay {path}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class OverlaySettings:
    """What ``--overlay`` and its companion options ask for."""

    folder: str
    colormap: str = DEFAULT_COLORMAP
    scale: int | None = None
    sheet: bool = False
    background: np.ndarray | None = None
    value_range: ColourRange | None = None
    #: ``--spacing``: voxel size in Z, Y, X order (or Y, X), any one unit.
    spacing: tuple[float, ...] | None = None

    def spacing_for(self, ndim: int, found: tuple[float, ...] | None = None) -> tuple[float, ...] | None:
        """The voxel size of an input's ``ndim`` spatial axes, or None (square pixels).

        ``--spacing`` (its last ``ndim`` values), else ``found`` in the file's metadata. A volume given only
        Y,X takes Z from the metadata, or the finer of Y and X.
        """
        if ndim < 2:
            return None
        given = self.spacing
        if given is None:
            return found
        if len(given) >= ndim:
            return tuple(given[-ndim:])
        z = found[0] if found is not None and len(found) == ndim else min(given)
        return (z, *given)


def read_background(path: str) -> np.ndarray:
    """A photograph as 8-bit BGR, for ``--background``."""
    import cv2

    if not os.path.isfile(path):
        raise PeaklocError(f"{path}: no such file")
    image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise PeaklocError(f"{path}: cannot decode image")
    return image


def write_overlays(
    base: str,
    path: str,
    labels: list[str],
    heatmaps: np.ndarray,
    peaks: dict[str, tuple[np.ndarray, np.ndarray]],
    settings: OverlaySettings,
    protected: set[str],
    spacing: tuple[float, ...] | None = None,
    others: list[np.ndarray] | None = None,
) -> list[str]:
    """Write one PNG per heatmap (and a contact sheet if asked) for one input; returns the files written.

    Parameters
    ----------
    base : str
        The input's unique base name (see :func:`base_names`).
    path : str
        The input as given, for titles.
    labels : list of str
        Index label per heatmap (``""`` for a single one).
    heatmaps : ndarray, shape ``(B, *spatial)``
    peaks : dict
        Method -> coordinates ``(B, P, ndim)`` in pixel units, NaN where a peak is missing.
    protected : set of str
        Real paths of the inputs: an overlay never overwrites one.
    spacing : tuple of float, optional
        Voxel size of the spatial axes (see :meth:`OverlaySettings.spacing_for`).
    others : list of ndarray, optional
        Per heatmap, the local maxima ranked below the marked peaks ``(Q, ndim)``, drawn faintly.
    """
    try:
        os.makedirs(settings.folder, exist_ok=True)
    except OSError as exc:
        raise PeaklocError(f"cannot create overlay folder {settings.folder}: {exc.strerror or exc}") from None
    written = []
    style = {
        "colormap": settings.colormap,
        "scale": settings.scale,
        "background": settings.background,
        "value_range": settings.value_range,
        "spacing": spacing,
    }
    for b, label in enumerate(labels):
        name = f"{base}_{sanitize(label)}" if label else base
        image = render(
            heatmaps[b],
            {m: c[b] for m, c in peaks.items()},
            title=f"{path} {label}".strip(),
            others=None if others is None else others[b],
            **style,
        )
        written.append(_write_new(os.path.join(settings.folder, name + ".png"), image, protected))
    if settings.sheet and len(labels) > 1:
        written.append(_write_sheet(base, path, labels, heatmaps, peaks, others, settings, style, protected))
    return written


def _write_sheet(base, path, labels, heatmaps, peaks, others, settings, style, protected) -> str:
    """The contact sheet: every heatmap in one colour range, one legend for all of them."""
    if settings.value_range is not None:
        limits = settings.value_range.limits([v.image for b in range(len(labels)) for v in panels(heatmaps[b])])
    else:
        ends = [finite_range(heatmaps[b]) for b in range(len(labels))]
        limits = (min(e[0] for e in ends), max(e[1] for e in ends))
    tiles = [
        render(
            heatmaps[b],
            {m: c[b] for m, c in peaks.items()},
            title=label,
            others=None if others is None else others[b],
            limits=limits,
            with_legend=False,
            **style,
        )
        for b, label in enumerate(labels)
    ]
    lower = others is not None and any(len(o) for o in others)
    key = lambda width: legend(width, list(peaks), settings.colormap, limits, lower)  # noqa: E731
    sheet = contact_sheet(tiles, title=path, key=key)
    return _write_new(os.path.join(settings.folder, base + "_sheet.png"), sheet, protected)


def _write_new(path: str, image: np.ndarray, protected: frozenset[str] | set[str]) -> str:
    """Write an overlay PNG, never over an input, a link, or anything that is not a regular file."""
    if os.path.realpath(path) in protected:
        raise PeaklocError(f"overlay {path} would overwrite an input; choose another `folder`")
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isfile(path)):
        raise PeaklocError(f"overlay {path} exists and is not a regular file; peakloc does not write over it")
    write_png(path, image)
    return path
