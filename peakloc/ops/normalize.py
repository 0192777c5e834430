"""The normalisation rule of the soft-argmax, written once for NumPy arrays and torch tensors.

Every back end turns ``beta`` and a map's extremes into one coefficient ``c`` so that the logits are
``c * (v - max v)``. The fused Triton kernel repeats this rule inside the kernel (a kernel cannot call
Python); a test holds the two to the same values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends import is_tensor

#: How each heatmap is scaled before ``beta`` applies.
NORMALIZE_MODES = ("minmax", "max", "none")
DEFAULT_NORMALIZE = "minmax"
#: Default sharpness of the soft-argmax: weights are ``exp(beta * (v - max v))`` on normalised values.
DEFAULT_BETA = 100.0
#: Largest coefficient: a tiny span must not make it inf, since inf * 0 at the maximum would be NaN.
COEFFICIENT_MAX = float(np.finfo(np.float32).max)


def coefficient(beta: float, normalize: str, hi: Any, lo: Any) -> Any:
    """Per map, ``c`` such that the logits are ``c * (v - max v)``: beta times the normalisation scale.

    Parameters
    ----------
    beta : float
        Sharpness, > 0.
    normalize : {"minmax", "max", "none"}
        ``minmax`` divides by ``max - min`` (a constant map gets 0: uniform weights, the centre); ``max``
        divides by the maximum when it is positive (dividing by a negative maximum would turn the map upside
        down, so such a map is left unscaled); ``none`` leaves values raw.
    hi, lo : ndarray or torch.Tensor, shape ``(B,)`` (or any shape, element-wise)
        Each map's finite maximum and minimum. NumPy extremes of any dtype are taken as float64 (an
        integer ``hi - lo`` would wrap); tensors must already be floating point.

    Returns
    -------
    ndarray of float64 or torch.Tensor of ``hi``'s dtype, shape of ``hi``
        Divisions are guarded so that gradients stay finite where a branch is not taken.

    Examples
    --------
    >>> coefficient(10.0, "minmax", np.array([4.0, 2.0]), np.array([2.0, 2.0]))
    array([5., 0.])
    """
    if is_tensor(hi):
        import torch as xp
    else:
        xp = np
        hi = np.asarray(hi, dtype=np.float64)
        lo = np.asarray(lo, dtype=np.float64)
    if normalize == "none":
        return xp.full_like(hi, beta)
    scale, fallback = (hi - lo, 0.0) if normalize == "minmax" else (hi, beta)
    positive = scale > 0
    coef = xp.where(positive, beta / xp.where(positive, scale, 1.0), fallback)
    return xp.where(coef > COEFFICIENT_MAX, COEFFICIENT_MAX, coef)


def logit_floor(dtype) -> float:
    """The least logit whose weight ``exp`` is a normal float: -87 for float32, -708 for float64.

    ``dtype`` is a NumPy or torch float32 or float64 type (both give their ``itemsize``).
    """
    return float(np.ceil(np.log(np.finfo(np.dtype(f"f{dtype.itemsize}")).tiny)))


def exp_logits(logits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``exp(logits)`` of floating logits ``<= 0``, each below :func:`logit_floor` taken at the floor.

    NumPy's SIMD ``exp`` leaves its vector loop for each vector with a subnormal result: float32 logits
    between -104 and -87 cost 13x the others on AVX-512 and 8x on AVX2, float64 ones near -710 up to 160x.
    The soft-argmax at the default beta (logits down to -100 on every map) spent most of its time there. At
    the floor a weight is the dtype's smallest normal number (1e-38 in float32): beside the maximum's weight
    of 1 it changes no sum, as the subnormal or 0 it stands for did not. NaN stays NaN. ``out`` may be
    ``logits``.
    """
    floored = np.maximum(logits, logit_floor(logits.dtype), out=out)
    return np.exp(floored, out=floored)
