"""peakloc: find peaks in heatmaps (hard argmax and soft-argmax, 1-D to 3-D, NumPy or torch).

This module never imports torch: the torch back end loads only when a tensor or a GPU asks for it, and
:class:`SoftArgmax` (a ``torch.nn.Module``) only when it is first used.
"""

from .errors import NoFiniteValueError, NonFiniteWarning, PeaklocError, PeaklocWarning
from .ops.api import argmax, soft_argmax
from .ops.coords import normalized_to_pixel, pixel_to_normalized

__version__ = "0.1.0"

__all__ = [
    "NoFiniteValueError",
    "NonFiniteWarning",
    "PeaklocError",
    "PeaklocWarning",
    "Refined",
    "SoftArgmax",
    "__version__",
    "argmax",
    "find_peaks",
    "normalized_to_pixel",
    "pixel_to_normalized",
    "refine",
    "smooth",
    "soft_argmax",
]

# Loaded on first use: `peakloc find` with the contract's methods never needs them, and SoftArgmax needs torch.
_LAZY = {
    "find_peaks": "ops.api",
    "refine": "ops.subpixel",
    "Refined": "ops.subpixel",
    "smooth": "ops.smoothing",
    "SoftArgmax": "nn",
}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'peakloc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
