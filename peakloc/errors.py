"""Exceptions and warnings: one-line messages the CLI prints as ``peakloc: error: PATH: reason``."""

from __future__ import annotations


class PeaklocError(Exception):
    """Base class of every error peakloc raises on purpose; its message is one line."""


class PeaklocValueError(PeaklocError, ValueError):
    """A parameter or an array has a value peakloc cannot work with."""


class AxesError(PeaklocValueError):
    """Axis letters that are unknown, repeated, or do not match the array."""


class NoFiniteValueError(PeaklocValueError):
    """A heatmap holds no finite value, so it has no peak.

    ``position`` is the heatmap's flat batch position (C order), so that callers can name it.
    """

    def __init__(self, message: str, position: int = 0) -> None:
        super().__init__(message)
        self.position = position


class InputError(PeaklocError):
    """A file cannot be read as a heatmap (missing, empty, truncated, pickled, non-numeric...)."""


class NoRoomError(PeaklocError, OSError):
    """A temporary file (a smoothed or decoded copy of a map read in pieces) does not fit its folder's disk."""


class MissingTorchError(PeaklocError, ImportError):
    """Torch is needed (a tensor, ``--device cuda``) but is not installed."""

    def __init__(self, what: str = "this") -> None:
        super().__init__(
            f"{what} needs PyTorch, which is not installed: pip install 'peakloc[torch]' "
            "(or follow https://pytorch.org/get-started/ for a CUDA build)"
        )


class PeaklocWarning(UserWarning):
    """Something the user should know that does not stop the work; one line, like an error."""


class NonFiniteWarning(PeaklocWarning):
    """NaN or infinite values were found and ignored."""
