"""Back ends behind one interface, :class:`Backend`: NumPy (default), eager torch, and fused Triton.

The back end is chosen from the input's type at one dispatch point, :func:`for_array`; torch is imported
only when a tensor is passed (it is then already in ``sys.modules``) or a GPU is asked for. Triton serves
the soft-argmax of CUDA float tensors, guarded: where it cannot compile or launch, or disagrees with eager
torch on its first call, eager torch takes over for the rest of the process (see
:mod:`peakloc.backends.triton_backend`). Which path runs is the library setting :func:`use_triton`.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol

from ..errors import MissingTorchError, PeaklocValueError

#: ``auto``: Triton for CUDA float tensors where it is installed; ``never``: eager torch always;
#: ``always``: Triton for every float tensor, CPU ones included (in Triton's interpreter, for tests).
TRITON_MODES = ("auto", "never", "always")
_triton_mode = "auto"


class Backend(Protocol):
    """What every back end provides. Coordinates are in array-axis order ``(..., z, y, x)``, pixel units."""

    def argmax(self, x: Any, ndim: int) -> tuple[Any, int]:
        """First maximum in C order of each map ``(..., *spatial)``: int64 ``(..., ndim)``, non-finite count."""

    def soft_argmax(
        self, x: Any, beta: float, ndim: int, normalize: str, threads: int | None = None
    ) -> tuple[Any, int]:
        """``sum_i i * softmax(c * (v - max v))_i`` per map: float ``(..., ndim)``, non-finite count."""


def is_tensor(x: Any) -> bool:
    """True for a ``torch.Tensor``, without importing torch (a tensor implies torch is loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def load_torch(what: str = "this") -> Any:
    """The eager torch back end, or :class:`MissingTorchError` naming `what` needed it."""
    try:
        from . import torch_backend as backend
    except ImportError as exc:  # only a missing torch lands here; the module imports nothing else
        raise MissingTorchError(what) from exc
    return backend


def use_triton(mode: str) -> str:
    """Set when the fused Triton kernel serves tensors' soft-argmax; returns the previous mode.

    Parameters
    ----------
    mode : {"auto", "never", "always"}
        ``auto`` (default): CUDA float tensors, where Triton is installed. ``never``: eager torch only.
        ``always``: every float tensor, CPU ones too (with ``TRITON_INTERPRET=1`` set before Triton is first
        imported, Triton's interpreter runs it: how the tests check the kernel without a GPU).
    """
    global _triton_mode
    if mode not in TRITON_MODES:
        raise PeaklocValueError(f"`mode` must be one of {', '.join(TRITON_MODES)}. Got: {mode!r}")
    previous, _triton_mode = _triton_mode, mode
    return previous


def _wants_triton(t: Any) -> bool:
    import torch

    if _triton_mode == "never" or not t.is_floating_point() or torch.compiler.is_compiling():
        return False
    return t.is_cuda or _triton_mode == "always"


def for_array(x: Any) -> Backend:
    """The back end that handles `x`: torch (or Triton) for tensors, NumPy for everything else."""
    if not is_tensor(x):
        from . import numpy_backend

        return numpy_backend
    backend = load_torch()
    if _wants_triton(x):
        try:
            from . import triton_backend
        except ImportError:  # Triton is not installed: eager torch is the fused kernel's fallback anyway
            return backend
        return triton_backend
    return backend
