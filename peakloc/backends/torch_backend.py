"""Eager torch back end: tensors in, tensors out on the same device, differentiable.

Under ``torch.compile`` the data-dependent steps (counting non-finite values, refusing a map with none)
are skipped so that the graph has no breaks: non-finite values are still masked, but not counted.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import NoFiniteValueError
from ..ops.normalize import coefficient, logit_floor

#: Integer types without an argmax kernel on every device; mapped to int64 in an order-preserving way.
_WIDE_UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)


def to_device(array, device: str) -> torch.Tensor:
    """A NumPy array as a tensor on ``device``; float16 and bool become float32 (not every device reduces them).

    Unsigned integers keep their type: :func:`argmax` orders them exactly, :func:`soft_argmax` computes in
    float32 as the NumPy back end does.
    """
    array = np.ascontiguousarray(array)
    if array.dtype == np.float16 or array.dtype.kind == "b":
        array = array.astype(np.float32)
    return torch.from_numpy(array).to(device)


def cuda_available() -> bool:
    """True when torch sees a CUDA device."""
    return torch.cuda.is_available()


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else (integers, half types) is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def spatial_size(t: torch.Tensor, ndim: int) -> int:
    """Values per map: the product of the last ``ndim`` sizes."""
    size = 1
    for n in t.shape[t.ndim - ndim :]:
        size *= int(n)
    return size


def raise_if_empty(count: torch.Tensor) -> None:
    """:class:`NoFiniteValueError` for the first map (C order) whose finite count is 0."""
    empty = torch.nonzero(count.reshape(-1) == 0)
    if empty.numel():
        position = int(empty[0, 0])
        raise NoFiniteValueError(f"heatmap {position} has no finite value", position)


def _flatten(t: torch.Tensor, ndim: int) -> torch.Tensor:
    return t.reshape(t.shape[: t.ndim - ndim] + (-1,))


def _finite(flat: torch.Tensor) -> tuple[torch.Tensor | None, int]:
    """Mask of finite values (None where all are, outside compilation) and how many are not."""
    if not flat.is_floating_point():
        return None, 0
    finite = torch.isfinite(flat)
    if torch.compiler.is_compiling():
        return finite, 0  # no data-dependent branch in a compiled graph: always masked, never counted
    nonfinite = int(finite.numel() - finite.sum().item())
    if nonfinite == 0:
        return None, 0
    raise_if_empty(finite.reshape(-1, flat.shape[-1]).sum(-1))
    return finite, nonfinite


def _unravel(index: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    coords = []
    for n in reversed(shape):
        coords.append(index % n)
        index = torch.div(index, n, rounding_mode="floor")
    return torch.stack(coords[::-1], dim=-1)


def _orderable(flat: torch.Tensor) -> torch.Tensor:
    """A tensor with the same order as ``flat`` that every device can argmax: int64 for wide unsigned types.

    uint64 cannot be cast to int64 or float64 without losing order; flipping its top bit (as int64) maps
    0..2**64-1 onto -2**63..2**63-1 in the same order.
    """
    if flat.dtype == torch.uint64:
        return flat.view(torch.int64) ^ torch.iinfo(torch.int64).min
    if flat.dtype in _WIDE_UNSIGNED or flat.dtype == torch.bool:
        return flat.to(torch.int64)
    return flat


def argmax(t: torch.Tensor, ndim: int) -> tuple[torch.Tensor, int]:
    """First maximum in C order, ignoring NaN and inf: int64 ``(..., ndim)`` on ``t``'s device."""
    flat = _flatten(t, ndim)
    finite, nonfinite = _finite(flat)
    if finite is not None:
        flat = flat.masked_fill(~finite, float("-inf"))
    return _unravel(_orderable(flat).argmax(dim=-1), tuple(t.shape[t.ndim - ndim :])), nonfinite


def probabilities(t: torch.Tensor, beta: float, ndim: int, normalize: str) -> tuple[torch.Tensor, int]:
    """``softmax(coef * (v - max v))`` over the spatial positions, shape ``t.shape``, and the non-finite count."""
    x = _flatten(t, ndim).to(work_dtype(t.dtype))
    hi = x.amax(dim=-1, keepdim=True)
    lo = x.amin(dim=-1, keepdim=True)
    # NaN propagates through amax and inf is an extreme: finite extremes mean every value is finite, so the
    # usual case skips the isfinite pass (on CPU torch's took 4.9 ms on the uniform batch 64x17x64x48).
    if torch.compiler.is_compiling() or not bool(torch.isfinite(hi).all() & torch.isfinite(lo).all()):
        finite, nonfinite = _finite(x)
    else:
        finite, nonfinite = None, 0
    if finite is not None:
        hi = x.masked_fill(~finite, float("-inf")).amax(dim=-1, keepdim=True)
        lo = x.masked_fill(~finite, float("inf")).amin(dim=-1, keepdim=True)
        # Replace before arithmetic: NaN would poison the gradient even where masked later.
        x = torch.where(finite, x, hi.detach())
    coef = coefficient(beta, normalize, hi, lo)
    # The shift is detached: softmax does not depend on it, and it keeps the graph free of ties' subgradients.
    logits = (x - hi.detach()) * coef
    if logits.device.type == "cpu":
        # Torch's CPU exp and division take up to 70x longer on subnormal results (as NumPy's, see
        # exp_logits): logits are floored where each probability, its weight over a total of at most
        # n, stays a normal float. With the finite check above, the uniform batch at beta 100 took 12.7 ->
        # 3.5 ms here. Below the floor the gradient is 0 instead of about 1e-38.
        logits = logits.clamp_min(logit_floor(logits.dtype) + math.log(logits.shape[-1]))
    if finite is not None:
        logits = logits.masked_fill(~finite, float("-inf"))
    return torch.softmax(logits, dim=-1).reshape(t.shape), nonfinite


def soft_argmax(
    t: torch.Tensor, beta: float, ndim: int, normalize: str, threads: int | None = None
) -> tuple[torch.Tensor, int]:
    """Soft-argmax per map: float ``(..., ndim)`` in array-axis order, on ``t``'s device, differentiable.

    Softmax, then marginal sums. ``threads`` is the NumPy back end's; torch keeps its own thread settings.
    """
    p, nonfinite = probabilities(t, beta, ndim, normalize)
    spatial_dims = list(range(p.ndim - ndim, p.ndim))
    coords = []
    for dim in spatial_dims:
        others = [d for d in spatial_dims if d != dim]
        marginal = p.sum(dim=others) if others else p
        grid = torch.arange(p.shape[dim], dtype=p.dtype, device=p.device)
        coords.append((marginal * grid).sum(dim=-1))
    return torch.stack(coords, dim=-1), nonfinite


def local_maxima_masks(heatmaps, radius: int, device: str) -> np.ndarray:
    """``x == max_pool(x)`` per map with a ``(2 * radius + 1)`` window: NumPy bool ``(B, *spatial)``.

    Non-finite values count as -inf, as in the NumPy filter; max pooling pads with -inf.
    """
    t = to_device(heatmaps, device)
    x = t.to(work_dtype(t.dtype))
    x = x.masked_fill(~torch.isfinite(x), float("-inf"))
    ndim = x.ndim - 1
    pool = {1: torch.nn.functional.max_pool1d, 2: torch.nn.functional.max_pool2d, 3: torch.nn.functional.max_pool3d}
    pooled = pool[ndim](x.unsqueeze(1), kernel_size=2 * radius + 1, stride=1, padding=radius).squeeze(1)
    return np.asarray((x == pooled).cpu().numpy(), dtype=bool)
