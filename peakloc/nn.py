"""``torch.nn`` modules: :func:`peakloc.soft_argmax` as a layer inside a network. Imports torch."""

from __future__ import annotations

import torch

from .errors import PeaklocValueError
from .ops.api import soft_argmax
from .ops.coords import pixel_to_normalized, validate_beta, validate_normalize
from .ops.normalize import DEFAULT_BETA, DEFAULT_NORMALIZE
from .run.settings import COORDS


class SoftArgmax(torch.nn.Module):
    """Differentiable peak coordinates of heatmaps: a shell around :func:`peakloc.soft_argmax`.

    Parameters
    ----------
    beta : float
        Sharpness, > 0 (see :func:`peakloc.soft_argmax`).
    ndim : {1, 2, 3}
        Number of trailing spatial axes.
    normalize : {"minmax", "max", "none"}
    coords : {"pixel", "normalized"}
        Pixel indices, or [-1, 1] from the first pixel centre to the last
        (:func:`peakloc.pixel_to_normalized`), as ``torch.nn.functional.grid_sample`` with
        ``align_corners=True`` reads them.

    Examples
    --------
    >>> layer = SoftArgmax(beta=50.0, coords="normalized")
    >>> layer(torch.zeros(2, 3, 5, 7)).shape
    torch.Size([2, 3, 2])
    """

    def __init__(
        self, beta: float = DEFAULT_BETA, ndim: int = 2, normalize: str = DEFAULT_NORMALIZE, coords: str = "pixel"
    ) -> None:
        super().__init__()
        if coords not in COORDS:
            raise PeaklocValueError(f"`coords` must be one of {', '.join(COORDS)}. Got: {coords!r}")
        if ndim not in (1, 2, 3):
            raise PeaklocValueError(f"`ndim` must be 1, 2 or 3. Got: {ndim!r}")
        self.beta = validate_beta(beta)
        self.ndim = int(ndim)
        self.normalize = validate_normalize(normalize)
        self.coords = coords

    def forward(self, heatmap: torch.Tensor) -> torch.Tensor:
        """``(..., *spatial)`` -> ``(..., ndim)`` coordinates in array-axis order ``(..., z, y, x)``."""
        out = soft_argmax(heatmap, beta=self.beta, ndim=self.ndim, normalize=self.normalize)
        if self.coords == "normalized":
            out = pixel_to_normalized(out, tuple(heatmap.shape[heatmap.ndim - self.ndim :]))
        return out

    def extra_repr(self) -> str:
        """The arguments, as ``print(model)`` shows them."""
        return f"beta={self.beta}, ndim={self.ndim}, normalize={self.normalize!r}, coords={self.coords!r}"
