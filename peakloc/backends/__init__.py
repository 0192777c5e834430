"""Back ends behind one signature: ``_numpy`` (default, no torch) and ``_torch`` (tensors, CUDA).

The back end is chosen from the input's type at one dispatch point, :func:`for_array`; torch is imported
only when a tensor is passed (it is then already in ``sys.modules``) or a GPU is asked for.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

from ..errors import MissingTorchError


def is_tensor(x: Any) -> bool:
    """True for a ``torch.Tensor``, without importing torch (a tensor implies torch is loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def torch_backend(what: str = "this") -> ModuleType:
    """The torch back end, or :class:`MissingTorchError` naming `what` needed it."""
    try:
        from . import _torch
    except ImportError as exc:  # only a missing torch lands here; _torch imports nothing else
        raise MissingTorchError(what) from exc
    return _torch


def for_array(x: Any) -> ModuleType:
    """The back end that handles `x`: torch for tensors, NumPy for everything else."""
    if is_tensor(x):
        return torch_backend()
    from . import _numpy

    return _numpy
