"""Fused soft-argmax for CUDA tensors in Triton: each value is read once forward and once backward.

Forward, per map: the maximum (and minimum, for ``minmax``) of the finite values, then the weights
``w = exp(coef * (v - max))`` and the sums ``S = sum w``, ``S_k = sum w * g_k`` (g: coordinates) in one
pass. A map of up to :data:`TILE_MAX` values is one program holding the whole map in registers: one read
of memory. A larger map is split across programs: one pass for the extremes, one for the sums (the
normalisation needs the extremes before any ``exp``), partial results combined by torch.

The forward also accumulates ``M1 = sum w * (v - max)`` and ``M2_k = sum w * g_k * (v - max)``, so that the
backward needs no reduction: with upstream gradient ``G`` and ``c = out . G``,
``dL/dv_i = coef * p_i * (g_i . G - c)`` plus, through the normalisation's maximum and minimum,
``T * dcoef/dhi`` at the (first) maximum and ``T * dcoef/dlo`` at the (first) minimum, where
``T = (G . M2 - c * M1) / S``. (Eager torch splits those two terms evenly among tied extremes instead.)

Selected by :func:`peakloc.backends.for_array` for CUDA float tensors when Triton is importable;
``use_triton("always")`` with ``TRITON_INTERPRET=1`` runs it on CPU tensors in Triton's interpreter, which
is how the tests check it on machines without a GPU.

No GPU has run this kernel in peakloc's own tests, so :func:`soft_argmax` guards itself: if Triton cannot
compile or launch it, or its first call in a process disagrees with eager torch on a few of the maps
(forward and backward), it warns once and eager torch serves every later call of the process.
"""

from __future__ import annotations

import warnings

import torch
import triton
import triton.language as tl

from ..errors import PeaklocWarning
from ..ops.normalize import coefficient
from . import torch_backend
from .torch_backend import argmax, raise_if_empty, spatial_size

__all__ = ["argmax", "fused_soft_argmax", "soft_argmax"]

#: Largest map (values) handled by one program from registers.
TILE_MAX = 16384
#: Values per loop step of a split program.
BLOCK = 4096
MODES = {"minmax": 0, "max": 1, "none": 2}
NORMALIZE = {mode: name for name, mode in MODES.items()}


@triton.jit
def _coordinates(index, H, W):
    x = index % W
    y = (index // W) % H
    z = index // (W * H)
    return z, y, x


@triton.jit
def _coef(hi, lo, beta, MODE: tl.constexpr):
    # peakloc.ops.normalize.coefficient inside the kernel (a kernel cannot call Python); tested equal.
    if MODE == 0:
        span = hi - lo
        coef = tl.where(span > 0, beta / tl.where(span > 0, span, 1.0), 0.0)
    elif MODE == 1:
        coef = tl.where(hi > 0, beta / tl.where(hi > 0, hi, 1.0), beta)
    else:
        coef = hi * 0 + beta
    return tl.minimum(coef, 3.0e38)


@triton.jit
def _fused_tile(x_ptr, out_ptr, N, H, W, beta, MODE: tl.constexpr, TILE: tl.constexpr, ACC: tl.constexpr):
    """One map per program, whole map in registers. out row: hi, lo, coef, count, S, Sz, Sy, Sx, M1, M2z, M2y, M2x."""
    row = tl.program_id(0)
    index = tl.arange(0, TILE)
    inside = index < N
    v = tl.load(x_ptr + row.to(tl.int64) * N + index, mask=inside, other=0.0).to(ACC)
    finite = inside & (v == v) & (tl.abs(v) < float("inf"))
    hi = tl.max(tl.where(finite, v, -float("inf")), axis=0)
    lo = tl.min(tl.where(finite, v, float("inf")), axis=0)
    count = tl.sum(finite.to(ACC), axis=0)
    coef = _coef(hi, lo, beta, MODE)
    d = tl.where(finite, v - hi, 0.0)
    w = tl.where(finite, tl.exp(coef * d), 0.0)
    z, y, x = _coordinates(index, H, W)
    base = out_ptr + row * 12
    tl.store(base + 0, hi)
    tl.store(base + 1, lo)
    tl.store(base + 2, coef)
    tl.store(base + 3, count)
    tl.store(base + 4, tl.sum(w, axis=0))
    tl.store(base + 5, tl.sum(w * z.to(ACC), axis=0))
    tl.store(base + 6, tl.sum(w * y.to(ACC), axis=0))
    tl.store(base + 7, tl.sum(w * x.to(ACC), axis=0))
    tl.store(base + 8, tl.sum(w * d, axis=0))
    tl.store(base + 9, tl.sum(w * d * z.to(ACC), axis=0))
    tl.store(base + 10, tl.sum(w * d * y.to(ACC), axis=0))
    tl.store(base + 11, tl.sum(w * d * x.to(ACC), axis=0))


@triton.jit
def _extremes_split(x_ptr, out_ptr, N, SPAN, SPLITS, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """Partial max, min and finite count of values [split * SPAN, (split + 1) * SPAN) of a map."""
    row = tl.program_id(0)
    split = tl.program_id(1)
    start = split * SPAN
    hi = tl.full((BLOCK,), -float("inf"), ACC)
    lo = tl.full((BLOCK,), float("inf"), ACC)
    count = tl.zeros((BLOCK,), ACC)
    for offset in range(0, SPAN, BLOCK):
        index = start + offset + tl.arange(0, BLOCK)
        inside = (index < N) & (offset + tl.arange(0, BLOCK) < SPAN)
        v = tl.load(x_ptr + row.to(tl.int64) * N + index, mask=inside, other=0.0).to(ACC)
        finite = inside & (v == v) & (tl.abs(v) < float("inf"))
        hi = tl.maximum(hi, tl.where(finite, v, -float("inf")))
        lo = tl.minimum(lo, tl.where(finite, v, float("inf")))
        count += finite.to(ACC)
    base = out_ptr + (row * SPLITS + split) * 3
    tl.store(base + 0, tl.max(hi, axis=0))
    tl.store(base + 1, tl.min(lo, axis=0))
    tl.store(base + 2, tl.sum(count, axis=0))


@triton.jit
def _sums_split(x_ptr, stats_ptr, out_ptr, N, H, W, SPAN, SPLITS, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """Partial S, S_k, M1, M2_k of a split, given the map's hi and coef (stats row: hi, coef)."""
    row = tl.program_id(0)
    split = tl.program_id(1)
    hi = tl.load(stats_ptr + row * 2 + 0)
    coef = tl.load(stats_ptr + row * 2 + 1)
    start = split * SPAN
    acc = tl.zeros((BLOCK,), ACC)
    s, sz, sy, sx, m1, mz, my, mx = acc, acc, acc, acc, acc, acc, acc, acc
    for offset in range(0, SPAN, BLOCK):
        index = start + offset + tl.arange(0, BLOCK)
        inside = (index < N) & (offset + tl.arange(0, BLOCK) < SPAN)
        v = tl.load(x_ptr + row.to(tl.int64) * N + index, mask=inside, other=0.0).to(ACC)
        finite = inside & (v == v) & (tl.abs(v) < float("inf"))
        d = tl.where(finite, v - hi, 0.0)
        w = tl.where(finite, tl.exp(coef * d), 0.0)
        z, y, x = _coordinates(index, H, W)
        s += w
        sz += w * z.to(ACC)
        sy += w * y.to(ACC)
        sx += w * x.to(ACC)
        m1 += w * d
        mz += w * d * z.to(ACC)
        my += w * d * y.to(ACC)
        mx += w * d * x.to(ACC)
    base = out_ptr + (row * SPLITS + split) * 8
    tl.store(base + 0, tl.sum(s, axis=0))
    tl.store(base + 1, tl.sum(sz, axis=0))
    tl.store(base + 2, tl.sum(sy, axis=0))
    tl.store(base + 3, tl.sum(sx, axis=0))
    tl.store(base + 4, tl.sum(m1, axis=0))
    tl.store(base + 5, tl.sum(mz, axis=0))
    tl.store(base + 6, tl.sum(my, axis=0))
    tl.store(base + 7, tl.sum(mx, axis=0))


@triton.jit
def _backward_split(x_ptr, grad_ptr, per_map_ptr, N, H, W, SPAN, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """grad_i = coef * w_i / S * (g_i . G - c); per-map row: hi, coef, S, Gz, Gy, Gx, c."""
    row = tl.program_id(0)
    split = tl.program_id(1)
    base = per_map_ptr + row * 7
    hi = tl.load(base + 0)
    coef = tl.load(base + 1)
    total = tl.load(base + 2)
    gz = tl.load(base + 3)
    gy = tl.load(base + 4)
    gx = tl.load(base + 5)
    c = tl.load(base + 6)
    start = split * SPAN
    for offset in range(0, SPAN, BLOCK):
        index = start + offset + tl.arange(0, BLOCK)
        inside = (index < N) & (offset + tl.arange(0, BLOCK) < SPAN)
        v = tl.load(x_ptr + row.to(tl.int64) * N + index, mask=inside, other=0.0).to(ACC)
        finite = inside & (v == v) & (tl.abs(v) < float("inf"))
        p = tl.where(finite, tl.exp(coef * (v - hi)) / total, 0.0)
        z, y, x = _coordinates(index, H, W)
        g = coef * p * (z.to(ACC) * gz + y.to(ACC) * gy + x.to(ACC) * gx - c)
        tl.store(grad_ptr + row.to(tl.int64) * N + index, g, mask=inside)


def _layout(shape: tuple[int, ...], ndim: int) -> tuple[int, int, int]:
    """(N, H, W) of the flattened map, padding missing leading spatial axes with 1."""
    spatial = (1,) * (3 - ndim) + tuple(shape[len(shape) - ndim :])
    return spatial[0] * spatial[1] * spatial[2], spatial[1], spatial[2]


def _splits(batch: int, n: int, device) -> int:
    """Programs per map so that the GPU has a few waves of work (one for many maps)."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4
    wanted = max(1, (4 * sms + batch - 1) // batch)
    return int(max(1, min(wanted, (n + BLOCK - 1) // BLOCK)))


class _FusedSoftArgmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, beta, mode, ndim, n, h, w):
        batch = x.shape[0]
        acc_torch = torch.float64 if x.dtype == torch.float64 else torch.float32
        acc = tl.float64 if x.dtype == torch.float64 else tl.float32
        if n <= TILE_MAX:
            out = torch.empty((batch, 12), dtype=acc_torch, device=x.device)
            tile = triton.next_power_of_2(n)
            _fused_tile[(batch,)](x, out, n, h, w, beta, MODE=mode, TILE=tile, ACC=acc)
            hi, lo, coef, count = out[:, 0], out[:, 1], out[:, 2], out[:, 3]
            sums = out[:, 4:]
        else:
            splits = _splits(batch, n, x.device)
            span = -(-n // splits)
            partial = torch.empty((batch, splits, 3), dtype=acc_torch, device=x.device)
            _extremes_split[(batch, splits)](x, partial, n, span, splits, BLOCK=BLOCK, ACC=acc)
            hi = partial[..., 0].amax(dim=1)
            lo = partial[..., 1].amin(dim=1)
            count = partial[..., 2].sum(dim=1)
            coef = coefficient(beta, NORMALIZE[mode], hi, lo)
            stats = torch.stack([hi, coef], dim=1).contiguous()
            parts = torch.empty((batch, splits, 8), dtype=acc_torch, device=x.device)
            _sums_split[(batch, splits)](x, stats, parts, n, h, w, span, splits, BLOCK=BLOCK, ACC=acc)
            sums = parts.sum(dim=1)
        total = sums[:, 0]
        coords = sums[:, 1:4] / total[:, None]
        ctx.save_for_backward(x, hi, lo, coef, total, coords, sums[:, 4], sums[:, 5:8])
        ctx.mode, ctx.n, ctx.h, ctx.w, ctx.ndim = mode, n, h, w, ndim
        return coords[:, 3 - ndim :], count

    @staticmethod
    def backward(ctx, grad_coords, grad_count):
        x, hi, lo, coef, total, coords, m1, m2 = ctx.saved_tensors
        ndim, n, h, w = ctx.ndim, ctx.n, ctx.h, ctx.w
        batch = x.shape[0]
        acc = tl.float64 if x.dtype == torch.float64 else tl.float32
        g = torch.zeros((batch, 3), dtype=coords.dtype, device=x.device)
        g[:, 3 - ndim :] = grad_coords.to(coords.dtype)
        c = (coords * g).sum(dim=1)
        per_map = torch.cat([torch.stack([hi, coef, total], 1), g, c[:, None]], dim=1).contiguous()
        grad = torch.empty_like(x)
        splits = _splits(batch, n, x.device)
        span = -(-n // splits)
        _backward_split[(batch, splits)](x, grad, per_map, n, h, w, span, BLOCK=BLOCK, ACC=acc)
        # Through the normalisation: coef depends on the maximum (and minimum); their points get T * dcoef.
        t = ((g * m2).sum(dim=1) - c * m1) / total
        if ctx.mode != 2:
            finite = torch.isfinite(x)
            flat = grad.view(batch, n)
            if ctx.mode == 0:
                span_hl = hi - lo
                safe = torch.where(span_hl > 0, span_hl, torch.ones_like(span_hl))
                d_hi = torch.where(span_hl > 0, -coef / safe, torch.zeros_like(coef)) * t
                d_lo = -d_hi
                at_lo = x.masked_fill(~finite, float("inf")).argmin(dim=1)
                flat.scatter_add_(1, at_lo[:, None], d_lo[:, None].to(flat.dtype))
            else:
                safe = torch.where(hi > 0, hi, torch.ones_like(hi))
                d_hi = torch.where(hi > 0, -coef / safe, torch.zeros_like(coef)) * t
            at_hi = x.masked_fill(~finite, float("-inf")).argmax(dim=1)
            flat.scatter_add_(1, at_hi[:, None], d_hi[:, None].to(flat.dtype))
        return grad, None, None, None, None, None, None


def fused_soft_argmax(t: torch.Tensor, beta: float, ndim: int, normalize: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused soft-argmax of ``t`` (``(..., *spatial)``, float16/bfloat16/float32/float64), unguarded.

    Returns the coordinates ``(..., ndim)`` (float32, float64 for float64 input) and the per-map count of
    finite values ``(B,)``.
    """
    n, h, w = _layout(tuple(t.shape), ndim)
    batch_shape = t.shape[: t.ndim - ndim]
    x = t.reshape(-1, n)
    if not x.is_contiguous():
        x = x.contiguous()
    coords, count = _FusedSoftArgmax.apply(x, float(beta), MODES[normalize], ndim, n, h, w)
    return coords.reshape(batch_shape + (ndim,)), count


#: Maps of the first call compared with eager torch.
CHECK_MAPS = 4
#: Largest disagreement with eager torch the check accepts: pixels, and relative to the largest gradient.
CHECK_ATOL = 1e-3
CHECK_GRAD_RTOL = 1e-3


class _Guard:
    """Per process: ``None`` until the kernel passed its check, then ``"ok"``; or why it was given up."""

    state: str | None = None


def reset_guard() -> None:
    """Forget the first-call check and any failure, so that the next call checks the kernel again."""
    _Guard.state = None


def _give_up(reason: str) -> None:
    _Guard.state = reason
    warnings.warn(
        f"the fused Triton soft-argmax is off for this process ({reason}); eager torch is used instead",
        PeaklocWarning,
        stacklevel=4,
    )


def _check(t: torch.Tensor, beta: float, ndim: int, normalize: str) -> str | None:
    """Compare the kernel with eager torch on the first few finite maps of ``t``: ``None`` if they agree."""
    maps = t.detach().reshape((-1,) + tuple(t.shape[t.ndim - ndim :]))[:CHECK_MAPS]
    maps = maps[torch.isfinite(maps.reshape(len(maps), -1)).any(dim=1)]
    if not len(maps):
        return None
    weights = torch.linspace(-1.0, 1.0, len(maps) * ndim, device=maps.device).reshape(len(maps), ndim)
    results = []
    for fused in (True, False):
        x = maps.clone().requires_grad_(True)
        with torch.enable_grad():
            if fused:
                coords = fused_soft_argmax(x, beta, ndim, normalize)[0]
            else:
                coords = torch_backend.soft_argmax(x, beta, ndim, normalize)[0]
            (coords * weights.to(coords.dtype)).sum().backward()
        results.append((coords.detach().double(), x.grad.double()))
    (c_fused, g_fused), (c_eager, g_eager) = results
    if not torch.allclose(c_fused, c_eager, rtol=0, atol=CHECK_ATOL):
        gap = float((c_fused - c_eager).abs().max())
        return f"its coordinates differ from eager torch's by {gap:.3g} px on the first maps"
    scale = float(g_eager.abs().max()) or 1.0
    if not torch.allclose(g_fused, g_eager, rtol=0, atol=CHECK_GRAD_RTOL * scale):
        return "its gradients differ from eager torch's on the first maps"
    return None


def soft_argmax(
    t: torch.Tensor, beta: float, ndim: int, normalize: str, threads: int | None = None
) -> tuple[torch.Tensor, int]:
    """The back-end soft-argmax through the fused kernel, guarded (see the module); eager torch once it fails.

    Returns the coordinates ``(..., ndim)`` and the number of non-finite values ignored.
    """
    if _Guard.state not in (None, "ok"):
        return torch_backend.soft_argmax(t, beta, ndim, normalize)
    try:
        if _Guard.state is None:
            problem = _check(t, beta, ndim, normalize)
            if problem is not None:
                _give_up(problem)
                return torch_backend.soft_argmax(t, beta, ndim, normalize)
            _Guard.state = "ok"
        coords, count = fused_soft_argmax(t, beta, ndim, normalize)
    except Exception as exc:  # noqa: BLE001 - any failure to compile or launch on this GPU: fall back
        _give_up(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no message'}")
        return torch_backend.soft_argmax(t, beta, ndim, normalize)
    raise_if_empty(count)
    return coords, int(count.numel() * spatial_size(t, ndim) - count.sum().item())
