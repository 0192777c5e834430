"""The memory budget of a run (``--max-memory``): sizes in words, and what an input will need.

Memory means what the run spends: anonymous resident memory (``RssAnon``); clean pages of a memory-mapped
NPY file are the kernel's cache and do not count.
"""

from __future__ import annotations

import os
import re

from ..errors import InputError, PeaklocValueError
from ..io.probe import OPENCV_MAX_PIXELS, Probe
from .settings import Settings

#: The budget when none is given: a share of the machine's memory.
DEFAULT_MAX_MEMORY = "50%"
_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*|%)\s*$", re.IGNORECASE)


def machine_memory() -> int:
    """Bytes of physical memory of this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def parse_size(text: str, total: int | None = None) -> int:
    """Bytes of a size: ``512MiB``, ``4GiB`` (powers of 1024), ``512MB``, ``4GB`` (powers of 1000), ``25%``.

    Examples
    --------
    >>> parse_size("512MiB"), parse_size("4GB"), parse_size("25%", total=8000)
    (536870912, 4000000000, 2000)
    """
    match = _SIZE.match(str(text))
    unit = match.group(2).lower() if match else None
    if match is None or (unit != "%" and unit not in _UNITS):
        raise PeaklocValueError(f"`max_memory` must be a size like 512MiB, 4GB or 25%. Got: {text!r}")
    number = float(match.group(1))
    if unit == "%":
        if not 0 < number <= 100:
            raise PeaklocValueError(f"`max_memory` as a share must be in (0%, 100%]. Got: {text!r}")
        return int(number / 100 * (machine_memory() if total is None else total))
    size = int(number * _UNITS[unit])
    if size <= 0:
        raise PeaklocValueError(f"`max_memory` must be more than 0 bytes. Got: {text!r}")
    return size


def describe(size: float) -> str:
    """A size for people, in powers of 1024.

    Examples
    --------
    >>> describe(3 * 1024**3), describe(1536), describe(12)
    ('3.0 GiB', '1.5 KiB', '12 B')
    """
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{int(size)} B"


#: SciPy's labelling and graph modules, imported where the plateaus of a map read in slabs are labelled
#: (measured: ``import scipy.ndimage, scipy.sparse.csgraph`` adds 18 MiB of RssAnon).
LABEL_BYTES = 24 * 1024**2

#: An overlay's pictures: panels are max-pooled to at most 2048 px a side, whatever the input's size.
OVERLAY_BYTES = 192 * 1024**2


def value_bytes(settings: Settings) -> int:
    """Working memory per heatmap value, by what the run computes.

    Measured on a 4000x4000 map (``/usr/bin/time -v``): the global methods keep about 3 bytes a value, the
    sub-pixel methods 8 more (a float copy for the clip levels), local maxima (``--peaks``, ``--threshold``)
    about 40, the smoothing about 72.
    """
    per_value = 4
    if any(m not in ("argmax", "softargmax") for m in settings.methods):
        per_value += 8
    if settings.finds_peaks:
        per_value += 40
    if settings.smooth:
        per_value += 80
    return per_value


def fixed_bytes(settings: Settings) -> int:
    """Working memory whatever the input's size: an overlay's pictures stay below :data:`OVERLAY_BYTES`."""
    return OVERLAY_BYTES if settings.overlay is not None else 0


def working_bytes(values: int, settings: Settings) -> int:
    """Working memory beyond the decoded array for ``values`` heatmap values.

    :func:`value_bytes` a value and :func:`fixed_bytes` in all.
    """
    return values * value_bytes(settings) + fixed_bytes(settings)


def needed(decoded: int, values: int, settings: Settings) -> int:
    """Bytes an input needs in memory: its decoded array (``decoded`` bytes) and the run's working memory."""
    return decoded + working_bytes(values, settings)


def check(found: Probe | None, kind: str, settings: Settings, budget: int | None, mapped: bool = True) -> None:
    """Refuse, before decoding, an input that cannot fit the budget or that OpenCV would refuse.

    Raises :class:`InputError` naming the sizes. A memory-mapped NPY file's own pages do not count (an NPY
    read whole, from a URL, is not ``mapped``).
    """
    if found is None:
        return
    if kind == "image" and found.values > OPENCV_MAX_PIXELS:
        height, width = found.shape[:2]
        raise InputError(f"image of {width}x{height} pixels is larger than OpenCV decodes (2^30)")
    if budget is None:
        return
    decoded = 0 if kind == "npy" and mapped else found.nbytes
    need = needed(decoded, found.values, settings)
    if need > budget:
        shape = "x".join(map(str, found.shape))
        raise InputError(
            f"needs about {describe(need)} of memory ({shape} {found.dtype}, {describe(found.nbytes)} as stored), "
            f"more than the memory budget of {describe(budget)} (`max_memory`)"
        )
