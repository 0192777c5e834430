"""peakloc: find peaks in heatmaps (hard argmax and soft-argmax, 1-D to 3-D, NumPy or torch).

This module never imports torch: the torch back end loads only when a tensor or a GPU asks for it.
"""

from .core import argmax, pixel_to_normalized, soft_argmax
from .errors import NoFiniteValueError, NonFiniteWarning, PeaklocError
from .peaks import find_peaks
from .subpixel import Refined, refine

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
    "soft_argmax",
]
