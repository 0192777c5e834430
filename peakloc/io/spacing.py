"""Voxel size from a file's metadata, for overlays that keep the true aspect of anisotropic volumes.

OME-TIFF (``PhysicalSizeZ/Y/X`` with their units), ImageJ TIFF (``spacing`` for Z, the resolution tags for Y
and X), OME-Zarr (the ``scale`` transformations of the full-resolution level), and HDF5 (the dataset's
``element_size_um``, as ilastik and Fiji's HDF5 plugin write it). Only the ratios matter,
so any one unit does; sizes in different units are converted to micrometres first.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ElementTree

from ..errors import PeaklocError
from .hdf5 import SUFFIXES as HDF5_SUFFIXES
from .hdf5 import element_size
from .readers import suffix_of

#: OME's length units, in micrometres.
_MICROMETRES = {"pm": 1e-6, "nm": 1e-3, "µm": 1.0, "um": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6, "Å": 1e-4}


def voxel_size(path: str, spatial: str) -> tuple[float, ...] | None:
    """The size of a voxel along each axis of ``spatial`` (letters in ``Z, Y, X`` order), or None.

    None where the file is no TIFF, Zarr store or HDF5 file, says nothing, or names a size that is not positive.

    Examples
    --------
    >>> voxel_size("nothing.npy", "ZYX") is None
    True
    """
    lower = str(path).lower().rstrip("/")
    try:
        if lower.endswith((".tif", ".tiff")) and os.path.isfile(path):
            found = _tiff(path)
        elif lower.endswith(".zarr") and os.path.isdir(path):
            found = _zarr(path)
        elif suffix_of(path) in HDF5_SUFFIXES:
            found = element_size(path)
        else:
            return None
    except (OSError, ValueError, KeyError, TypeError, IndexError, ElementTree.ParseError, PeaklocError):
        return None  # metadata that cannot be read is metadata the overlay does without
    if not found or any(letter not in found for letter in spatial):
        return None
    sizes = tuple(float(found[letter]) for letter in spatial)
    return sizes if all(s > 0 and s < float("inf") for s in sizes) else None


def _tiff(path: str) -> dict[str, float]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if tif.is_ome and tif.ome_metadata:
            return _ome_xml(tif.ome_metadata)
        found: dict[str, float] = {}
        page = tif.pages.first
        for letter, tag in (("X", "XResolution"), ("Y", "YResolution")):
            value = page.tags.get(tag)
            if value is not None:
                numerator, denominator = value.value
                if numerator > 0 and denominator > 0:
                    found[letter] = denominator / numerator  # resolution is pixels per unit
        if tif.is_imagej and tif.imagej_metadata and "spacing" in tif.imagej_metadata:
            found["Z"] = float(tif.imagej_metadata["spacing"])
        return found


def _ome_xml(text: str) -> dict[str, float]:
    root = ElementTree.fromstring(text)
    pixels = next((e for e in root.iter() if e.tag.endswith("Pixels")), None)
    if pixels is None:
        return {}
    found = {}
    for letter in "ZYX":
        size = pixels.get(f"PhysicalSize{letter}")
        if size is not None:
            found[letter] = float(size) * _MICROMETRES.get(pixels.get(f"PhysicalSize{letter}Unit", "µm"), 1.0)
    return found


def _zarr(path: str) -> dict[str, float]:
    attrs = {}
    for name, key in (("zarr.json", "attributes"), (".zattrs", None)):
        file = os.path.join(path, name)
        if os.path.isfile(file):
            with open(file, encoding="utf-8") as handle:
                data = json.load(handle)
            attrs = data.get(key, {}) if key else data
            if attrs:
                break
    multiscales = attrs.get("ome", {}).get("multiscales") or attrs.get("multiscales")
    if not multiscales:
        return {}
    first = multiscales[0]
    names = [str(a["name"] if isinstance(a, dict) else a).upper() for a in first.get("axes", [])]
    scale = [1.0] * len(names)
    for transforms in (
        first["datasets"][0].get("coordinateTransformations", []),
        first.get("coordinateTransformations", []),
    ):
        for t in transforms:
            if t.get("type") == "scale":
                scale = [a * float(b) for a, b in zip(scale, t["scale"])]
    return {n: s for n, s in zip(names, scale) if n in ("Z", "Y", "X")}
