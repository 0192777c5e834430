"""The fused Triton soft-argmax: on the GPU where CUDA exists, else in Triton's CPU interpreter."""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton", reason="Triton is part of the test install on Linux x86-64 (make install)")

from peakloc import backends  # noqa: E402
from peakloc.backends import torch_backend, triton_backend  # noqa: E402
from peakloc.errors import NoFiniteValueError, PeaklocWarning  # noqa: E402
from peakloc.ops.normalize import coefficient  # noqa: E402

from ..conftest import reference_soft_argmax  # noqa: E402

# Without a GPU, conftest set TRITON_INTERPRET=1 before Triton's first import: the kernels run on CPU tensors.
CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"


@pytest.fixture
def fused():
    """Triton for every float tensor (CPU ones in the interpreter), with a fresh first-call check."""
    previous = backends.use_triton("always")
    triton_backend.reset_guard()
    yield
    backends.use_triton(previous)
    triton_backend.reset_guard()


@pytest.mark.parametrize("normalize", ["minmax", "max", "none"])
@pytest.mark.parametrize(
    "shape,ndim",
    [((3, 5, 40, 50), 2), ((2, 70), 1), ((2, 9, 10, 11), 3), ((1, 150, 130), 2), ((2, 30, 30, 30), 3)],
    ids=["2d-tile", "1d-tile", "3d-tile", "2d-split", "3d-split"],
)
def test_fused_forward_matches_float64_formula(rng, fused, normalize, shape, ndim):
    x = rng.random(shape).astype(np.float32)
    coords, count = triton_backend.fused_soft_argmax(torch.tensor(x, device=DEVICE), 20.0, ndim, normalize)
    assert bool((count == np.prod(shape[-ndim:])).all()) and coords.dtype == torch.float32
    np.testing.assert_allclose(coords.cpu().numpy(), reference_soft_argmax(x, 20.0, ndim, normalize), atol=5e-5)


@pytest.mark.parametrize("normalize", ["minmax", "max", "none"])
def test_fused_backward_passes_gradcheck_in_float64(fused, normalize):
    t = torch.rand((2, 5, 6), dtype=torch.float64, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    t.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda h: triton_backend.fused_soft_argmax(h, 3.0, 2, normalize)[0], (t,))


@pytest.mark.parametrize("normalize", ["minmax", "none"])
def test_fused_split_backward_matches_eager_autograd(fused, normalize):
    x = torch.rand((2, 130, 131), dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    weights = torch.tensor([[0.3, -1.2], [2.0, 0.7]], dtype=torch.float64, device=DEVICE)
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (triton_backend.fused_soft_argmax(a, 5.0, 2, normalize)[0] * weights).sum().backward()
    (torch_backend.soft_argmax(b, 5.0, 2, normalize)[0] * weights).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-10, rtol=1e-8)


def test_fused_ignores_nan_and_refuses_an_all_nan_map(fused):
    x = torch.rand((2, 8, 9), device=DEVICE)
    x[0, 1, 1] = float("nan")
    x[1, 2, 2] = float("inf")
    coords, nonfinite = triton_backend.soft_argmax(x, 10.0, 2, "minmax")
    assert nonfinite == 2 and torch.isfinite(coords).all()
    x[1] = float("nan")
    with pytest.raises(NoFiniteValueError, match="heatmap 1 has no finite value"):
        triton_backend.soft_argmax(x, 10.0, 2, "minmax")


@pytest.mark.parametrize("normalize", ["minmax", "max", "none"])
def test_kernel_coefficient_equals_the_shared_rule(fused, normalize):
    # Maps with a span, a constant map, a negative maximum: the kernel's _coef against ops.normalize.
    x = torch.tensor([[0.0, 0.5, 2.0, 1.0], [3.0, 3.0, 3.0, 3.0], [-4.0, -1.0, -2.0, -3.0]], dtype=torch.float64)
    _, _, coef, _ = _tile_stats(x, 7.0, normalize)
    expected = coefficient(7.0, normalize, x.amax(dim=1), x.amin(dim=1))
    torch.testing.assert_close(coef, expected)


def _tile_stats(x, beta, normalize):
    out = torch.empty((x.shape[0], 12), dtype=torch.float64)
    triton_backend._fused_tile[(x.shape[0],)](
        x,
        out,
        x.shape[1],
        1,
        x.shape[1],
        beta,
        MODE=triton_backend.MODES[normalize],
        TILE=4,
        ACC=triton_backend.tl.float64,
    )
    return out[:, 0], out[:, 1], out[:, 2], out[:, 3]


def test_triton_serves_cuda_float_tensors_and_can_be_turned_off():
    cpu = torch.zeros((2, 3))
    previous = backends.use_triton("auto")
    try:
        assert backends.for_array(cpu) is torch_backend
        backends.use_triton("always")
        assert backends.for_array(cpu) is triton_backend
        assert backends.for_array(cpu.to(torch.int64)) is torch_backend
        backends.use_triton("never")
        assert backends.for_array(cpu) is torch_backend
    finally:
        backends.use_triton(previous)
    assert triton_backend.TILE_MAX >= 64 * 48  # a pose map is one tile: one read


def test_an_unknown_triton_mode_is_refused():
    with pytest.raises(ValueError, match="`mode` must be one of auto, never, always. Got: 'sometimes'"):
        backends.use_triton("sometimes")


def _eager(x):
    return torch_backend.soft_argmax(x, 10.0, 2, "minmax")[0]


def test_a_kernel_that_fails_to_launch_falls_back_to_eager_with_one_warning(fused, monkeypatch):
    def broken(*args):
        raise RuntimeError("PTX JIT compilation failed\nmore detail")

    monkeypatch.setattr(triton_backend, "fused_soft_argmax", broken)
    x = torch.rand((3, 8, 9), generator=torch.Generator().manual_seed(2))
    with pytest.warns(PeaklocWarning, match=r"off for this process \(RuntimeError: PTX JIT compilation failed\)"):
        coords, _ = triton_backend.soft_argmax(x, 10.0, 2, "minmax")
    torch.testing.assert_close(coords, _eager(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning: the process stays on eager torch
        torch.testing.assert_close(triton_backend.soft_argmax(x, 10.0, 2, "minmax")[0], _eager(x))


def test_a_kernel_that_disagrees_with_eager_on_its_first_call_is_given_up(fused, monkeypatch):
    real = triton_backend.fused_soft_argmax

    def wrong(t, beta, ndim, normalize):
        coords, count = real(t, beta, ndim, normalize)
        return coords + 0.5, count

    monkeypatch.setattr(triton_backend, "fused_soft_argmax", wrong)
    x = torch.rand((3, 8, 9), generator=torch.Generator().manual_seed(3))
    with pytest.warns(PeaklocWarning, match="coordinates differ from eager torch's by 0.5 px"):
        coords, _ = triton_backend.soft_argmax(x, 10.0, 2, "minmax")
    torch.testing.assert_close(coords, _eager(x))


def test_a_kernel_whose_gradients_disagree_is_given_up(fused, monkeypatch):
    real = triton_backend.fused_soft_argmax

    def wrong_backward(t, beta, ndim, normalize):
        coords, count = real(t, beta, ndim, normalize)
        return coords + 0.01 * (
            t.reshape(t.shape[0], -1)[:, :ndim] - t.reshape(t.shape[0], -1)[:, :ndim].detach()
        ), count

    monkeypatch.setattr(triton_backend, "fused_soft_argmax", wrong_backward)
    x = torch.rand((2, 8, 9), generator=torch.Generator().manual_seed(4))
    with pytest.warns(PeaklocWarning, match="gradients differ"):
        triton_backend.soft_argmax(x, 10.0, 2, "minmax")


def test_a_kernel_that_passes_its_check_is_used_without_warning(fused):
    x = torch.rand((3, 8, 9), generator=torch.Generator().manual_seed(5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        coords, _ = triton_backend.soft_argmax(x, 10.0, 2, "minmax")
    torch.testing.assert_close(coords, _eager(x), atol=1e-4, rtol=0)
    assert triton_backend._Guard.state == "ok"
