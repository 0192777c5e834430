import os

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import settings as hypothesis_settings

try:
    import torch

    _CUDA = torch.cuda.is_available()
except ImportError:
    _CUDA = False
if not _CUDA:
    # Triton reads this once, at its first import: without a GPU, its kernels run in the CPU interpreter.
    os.environ.setdefault("TRITON_INTERPRET", "1")


def reference_soft_argmax(heatmap, beta=100.0, ndim=2, normalize="minmax"):
    """Independent float64 formula: sum_i i * softmax(beta * v)_i, NaN/inf ignored, per map."""
    x = np.asarray(heatmap, dtype=np.float64)
    spatial = x.shape[-ndim:]
    flat = x.reshape(-1, int(np.prod(spatial)))
    out = []
    for row in flat:
        ok = np.isfinite(row)
        v = row[ok]
        if normalize == "minmax":
            v = (v - v.min()) / (v.max() - v.min()) if v.max() > v.min() else np.zeros_like(v)
        elif normalize == "max" and v.max() > 0:
            v = v / v.max()
        w = np.exp(beta * (v - v.max()))
        w /= w.sum()
        grid = np.stack(np.unravel_index(np.flatnonzero(ok), spatial), axis=-1)
        out.append(w @ grid)
    return np.array(out).reshape(x.shape[:-ndim] + (ndim,))


def gaussian(shape, centre, sigma=2.0):
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    return np.exp(-sum((g - c) ** 2 for g, c in zip(grids, centre)) / (2 * sigma**2))


def pixel_gaussian(shape, centre, sigma=2.0):
    """A Gaussian of height 1 integrated over each pixel ``[i - 1/2, i + 1/2]``, as a camera records a spot.

    ``sigma`` one, or one per axis. Each axis's factor is the exact integral, ``s sqrt(pi / 2)`` times a
    difference of ``erf`` (the textbook formula; ``tests/ops/test_subpixel.py`` checks the fit's own profile
    against numerical integration).
    """
    from scipy.special import erf

    sigma = np.broadcast_to(np.asarray(sigma, np.float64), (len(shape),))
    out = np.ones(shape)
    for a, (n, c, s) in enumerate(zip(shape, centre, sigma)):
        x = np.arange(n, dtype=np.float64)
        factor = (
            s * np.sqrt(np.pi / 2) * (erf((x + 0.5 - c) / (np.sqrt(2) * s)) - erf((x - 0.5 - c) / (np.sqrt(2) * s)))
        )
        out = out * factor.reshape((1,) * a + (n,) + (1,) * (len(shape) - a - 1))
    return out


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def _devices():
    cuda = pytest.param("cuda", marks=pytest.mark.skipif(not _CUDA, reason="CUDA is not available"))
    return ["cpu", cuda]


@pytest.fixture(params=_devices())
def device(request):
    """Torch device: CPU always, CUDA where a GPU exists (skipped elsewhere)."""
    return request.param


class StrictRunner(CliRunner):
    """Click's test runner with peakloc's own bugs raised, not turned into an input's error line."""

    def invoke(self, cli, args=None, **kwargs):
        kwargs.setdefault("obj", {"reraise": True})
        return super().invoke(cli, args, **kwargs)


# `make fuzz`: the damaged-file property with many more examples.
hypothesis_settings.register_profile("fuzz", max_examples=3000, deadline=None)
