"""The fused Triton soft-argmax: on the GPU where CUDA exists, else in Triton's CPU interpreter."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton", reason="Triton is part of the test install on Linux x86-64 (make install)")

from peakloc.backends import _torch, _triton  # noqa: E402

from .conftest import reference_soft_argmax  # noqa: E402

# Without a GPU, conftest set TRITON_INTERPRET=1 before Triton's first import: the kernels run on CPU tensors.
CUDA = torch.cuda.is_available()

DEVICE = "cuda" if CUDA else "cpu"


@pytest.fixture
def fused(monkeypatch):
    monkeypatch.setenv("PEAKLOC_TRITON", "1")


def _eager(t, beta, ndim, normalize, monkeypatch):
    monkeypatch.setenv("PEAKLOC_TRITON", "0")
    out = _torch.soft_argmax(t, beta, ndim, normalize)
    monkeypatch.setenv("PEAKLOC_TRITON", "1")
    return out


@pytest.mark.parametrize("normalize", ["minmax", "max", "none"])
@pytest.mark.parametrize(
    "shape,ndim",
    [((3, 5, 40, 50), 2), ((2, 70), 1), ((2, 9, 10, 11), 3), ((1, 150, 130), 2), ((2, 30, 30, 30), 3)],
    ids=["2d-tile", "1d-tile", "3d-tile", "2d-split", "3d-split"],
)
def test_fused_forward_matches_float64_formula(rng, fused, normalize, shape, ndim):
    x = rng.random(shape).astype(np.float32)
    coords, nonfinite = _torch.soft_argmax(torch.tensor(x, device=DEVICE), 20.0, ndim, normalize)
    assert nonfinite == 0 and coords.dtype == torch.float32
    np.testing.assert_allclose(coords.cpu().numpy(), reference_soft_argmax(x, 20.0, ndim, normalize), atol=5e-5)


@pytest.mark.parametrize("normalize", ["minmax", "max", "none"])
def test_fused_backward_passes_gradcheck_in_float64(fused, normalize):
    t = torch.rand((2, 5, 6), dtype=torch.float64, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    t.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda h: _torch.soft_argmax(h, 3.0, 2, normalize)[0], (t,))


@pytest.mark.parametrize("normalize", ["minmax", "none"])
def test_fused_split_backward_matches_eager_autograd(fused, monkeypatch, normalize):
    x = torch.rand((2, 130, 131), dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    weights = torch.tensor([[0.3, -1.2], [2.0, 0.7]], dtype=torch.float64, device=DEVICE)
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (_torch.soft_argmax(a, 5.0, 2, normalize)[0] * weights).sum().backward()
    (_eager(b, 5.0, 2, normalize, monkeypatch)[0] * weights).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-10, rtol=1e-8)


def test_fused_ignores_nan_and_refuses_an_all_nan_map(fused):
    x = torch.rand((2, 8, 9), device=DEVICE)
    x[0, 1, 1] = float("nan")
    x[1, 2, 2] = float("inf")
    coords, nonfinite = _torch.soft_argmax(x, 10.0, 2, "minmax")
    assert nonfinite == 2 and torch.isfinite(coords).all()
    x[1] = float("nan")
    with pytest.raises(Exception, match="heatmap 1 has no finite value"):
        _torch.soft_argmax(x, 10.0, 2, "minmax")


def test_fused_path_is_chosen_for_cuda_and_can_be_turned_off(monkeypatch):
    cpu = torch.zeros((2, 3))
    monkeypatch.delenv("PEAKLOC_TRITON", raising=False)
    assert _torch._use_fused(cpu) is False
    monkeypatch.setenv("PEAKLOC_TRITON", "1")
    assert _torch._use_fused(cpu) is True
    assert _torch._use_fused(cpu.to(torch.int64)) is False
    monkeypatch.setenv("PEAKLOC_TRITON", "0")
    assert _torch._use_fused(cpu) is False
    assert _triton.TILE_MAX >= 64 * 48  # a pose map is one tile: one read
