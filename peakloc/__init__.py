"""peakloc: find peaks in heatmaps (hard argmax and soft-argmax, 1-D to 3-D, NumPy or torch).

This module never imports torch: the torch back end loads only when a tensor or a GPU asks for it.
"""

from .core import argmax, pixel_to_normalized, soft_argmax
from .errors import NoFiniteValueError, NonFiniteWarning, PeaklocError

__version__ = "0.1.0"

__all__ = [
    "NoFiniteValueError",
    "NonFiniteWarning",
    "PeaklocError",
    "Refined",
    "__version__",
    "argmax",
    "find_peaks",
    "pixel_to_normalized",
    "refine",
    "smooth",
    "soft_argmax",
]

# Peak picking and refinement load on first use: `peakloc find` with the contract's methods never needs them.
_LAZY = {"find_peaks": "peaks", "refine": "subpixel", "Refined": "subpixel", "smooth": "smoothing"}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'peakloc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
