"""Torch back end: tensors in, tensors out on the same device, differentiable.

The only module of peakloc that imports torch.
"""

from __future__ import annotations

import os

import torch

from ..errors import NoFiniteValueError

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def fused_available() -> bool:
    """True when the fused Triton kernel can run (Triton importable)."""
    try:
        from . import _triton  # noqa: F401
    except ImportError:
        return False
    return True


def _use_fused(t: torch.Tensor) -> bool:
    """CUDA float tensors use the fused kernel; PEAKLOC_TRITON=0 turns it off, =1 forces it (interpreter)."""
    choice = os.environ.get("PEAKLOC_TRITON", "")
    if choice == "0" or t.dtype not in _FLOATS or not (t.is_cuda or choice == "1"):
        return False
    return fused_available()


def to_device(array, device: str) -> torch.Tensor:
    """A NumPy array as a tensor on ``device``; types torch cannot reduce on every device become float."""
    import numpy as np

    array = np.ascontiguousarray(array)
    if array.dtype.kind == "u" and array.dtype.itemsize > 1:
        array = array.astype(np.float64 if array.dtype.itemsize > 2 else np.float32)
    elif array.dtype == np.float16 or array.dtype.kind == "b":
        array = array.astype(np.float32)
    return torch.from_numpy(array).to(device)


def cuda_available() -> bool:
    """True when torch sees a CUDA device."""
    return torch.cuda.is_available()


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else (integers, half types) is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _flatten(t: torch.Tensor, ndim: int) -> torch.Tensor:
    return t.reshape(t.shape[: t.ndim - ndim] + (-1,))


def _finite(flat: torch.Tensor) -> tuple[torch.Tensor | None, int]:
    """Mask of finite values (None if all are) and how many are not; refuses maps with none."""
    if not (flat.is_floating_point() or flat.is_complex()):
        return None, 0
    finite = torch.isfinite(flat)
    nonfinite = int(finite.numel() - finite.sum().item())
    if nonfinite == 0:
        return None, 0
    empty = torch.nonzero(~finite.reshape(-1, flat.shape[-1]).any(-1))
    if empty.numel():
        position = int(empty[0, 0])
        raise NoFiniteValueError(f"heatmap {position} has no finite value", position)
    return finite, nonfinite


def _unravel(index: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    coords = []
    for n in reversed(shape):
        coords.append(index % n)
        index = torch.div(index, n, rounding_mode="floor")
    return torch.stack(coords[::-1], dim=-1)


def argmax(t: torch.Tensor, ndim: int) -> tuple[torch.Tensor, int]:
    """First maximum in C order, ignoring NaN and inf: int64 ``(..., ndim)`` on ``t``'s device."""
    flat = _flatten(t, ndim)
    finite, nonfinite = _finite(flat)
    if finite is not None:
        flat = flat.masked_fill(~finite, float("-inf"))
    elif flat.dtype in (torch.uint16, torch.uint32, torch.uint64, torch.bool):
        flat = flat.to(torch.int64) if flat.dtype != torch.uint64 else flat.to(torch.float64)
    return _unravel(flat.argmax(dim=-1), tuple(t.shape[t.ndim - ndim :])), nonfinite


def _coefficient(beta: float, normalize: str, hi: torch.Tensor, lo: torch.Tensor) -> torch.Tensor:
    """Same rule as the NumPy back end; divisions guarded so that gradients stay finite."""
    if normalize == "minmax":
        span = hi - lo
        positive = span > 0
        coef = torch.where(positive, beta / torch.where(positive, span, torch.ones_like(span)), torch.zeros_like(span))
    elif normalize == "max":
        positive = hi > 0
        coef = torch.where(positive, beta / torch.where(positive, hi, torch.ones_like(hi)), torch.full_like(hi, beta))
    else:
        coef = torch.full_like(hi, beta)
    return coef.clamp(max=torch.finfo(torch.float32).max)


def probabilities(t: torch.Tensor, beta: float, ndim: int, normalize: str) -> tuple[torch.Tensor, int]:
    """``softmax(coef * (v - max v))`` over the spatial positions, shape ``t.shape``, and the non-finite count."""
    x = _flatten(t, ndim).to(work_dtype(t.dtype))
    finite, nonfinite = _finite(x)
    if finite is None:
        hi = x.amax(dim=-1, keepdim=True)
        lo = x.amin(dim=-1, keepdim=True)
    else:
        hi = x.masked_fill(~finite, float("-inf")).amax(dim=-1, keepdim=True)
        lo = x.masked_fill(~finite, float("inf")).amin(dim=-1, keepdim=True)
        # Replace before arithmetic: NaN would poison the gradient even where masked later.
        x = torch.where(finite, x, hi.detach())
    coef = _coefficient(beta, normalize, hi, lo)
    # The shift is detached: softmax does not depend on it, and it keeps the graph free of ties' subgradients.
    logits = (x - hi.detach()) * coef
    if finite is not None:
        logits = logits.masked_fill(~finite, float("-inf"))
    return torch.softmax(logits, dim=-1).reshape(t.shape), nonfinite


def soft_argmax(t: torch.Tensor, beta: float, ndim: int, normalize: str) -> tuple[torch.Tensor, int]:
    """Soft-argmax per map: float ``(..., ndim)`` in array-axis order, on ``t``'s device, differentiable.

    CUDA tensors go through the fused Triton kernel (one read of the data) where Triton is installed;
    elsewhere, eager torch: softmax, then marginal sums.
    """
    if _use_fused(t):
        from . import _triton

        coords, count = _triton.soft_argmax(t, beta, ndim, normalize)
        empty = torch.nonzero(count == 0)
        if empty.numel():
            position = int(empty[0, 0])
            raise NoFiniteValueError(f"heatmap {position} has no finite value", position)
        per_map = 1
        for n in t.shape[t.ndim - ndim :]:
            per_map *= int(n)
        return coords, int(count.numel() * per_map - count.sum().item())
    p, nonfinite = probabilities(t, beta, ndim, normalize)
    spatial_dims = list(range(p.ndim - ndim, p.ndim))
    coords = []
    for dim in spatial_dims:
        others = [d for d in spatial_dims if d != dim]
        marginal = p.sum(dim=others) if others else p
        grid = torch.arange(p.shape[dim], dtype=p.dtype, device=p.device)
        coords.append((marginal * grid).sum(dim=-1))
    return torch.stack(coords, dim=-1), nonfinite


def local_maxima_masks(heatmaps, radius: int, device: str):
    """``x == max_pool(x)`` per map with a ``(2 * radius + 1)`` window: NumPy bool ``(B, *spatial)``.

    Non-finite values count as -inf, as in the NumPy filter; max pooling pads with -inf.
    """
    import numpy as np

    t = to_device(heatmaps, device)
    x = t.to(work_dtype(t.dtype))
    x = x.masked_fill(~torch.isfinite(x), float("-inf"))
    ndim = x.ndim - 1
    pool = {1: torch.nn.functional.max_pool1d, 2: torch.nn.functional.max_pool2d, 3: torch.nn.functional.max_pool3d}
    pooled = pool[ndim](x.unsqueeze(1), kernel_size=2 * radius + 1, stride=1, padding=radius).squeeze(1)
    return np.asarray((x == pooled).cpu().numpy(), dtype=bool)
