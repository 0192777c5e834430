import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import peakloc
from peakloc.errors import NoFiniteValueError, NonFiniteWarning

from ..conftest import reference_soft_argmax

torch = pytest.importorskip("torch", reason="torch is part of the test install (make install)")


def test_tensor_in_gives_tensor_out_on_the_same_device(device, rng):
    t = torch.tensor(rng.random((2, 3, 10, 12)), dtype=torch.float32, device=device)
    coords = peakloc.soft_argmax(t)
    assert isinstance(coords, torch.Tensor) and coords.device.type == device and coords.shape == (2, 3, 2)
    index = peakloc.argmax(t)
    assert isinstance(index, torch.Tensor) and index.device.type == device and index.dtype == torch.int64


@pytest.mark.parametrize("normalize", ["minmax", "max", "none"])
@pytest.mark.parametrize("ndim,shape", [(1, (3, 77)), (2, (2, 3, 17, 23)), (3, (2, 5, 6, 7))])
def test_torch_soft_argmax_matches_float64_formula(device, rng, normalize, ndim, shape):
    x = rng.random(shape).astype(np.float32)
    got = peakloc.soft_argmax(torch.tensor(x, device=device), beta=20, ndim=ndim, normalize=normalize)
    np.testing.assert_allclose(got.cpu().numpy(), reference_soft_argmax(x, 20, ndim, normalize), atol=1e-4)


def test_torch_argmax_matches_numpy_including_ties(device):
    x = np.zeros((3, 6, 7), np.float32)
    x[0, 2, 3] = x[0, 4, 1] = 1
    x[1, 5, 6] = 2
    np.testing.assert_array_equal(peakloc.argmax(torch.tensor(x, device=device)).cpu().numpy(), peakloc.argmax(x))


def test_torch_ignores_non_finite_values_like_numpy(device):
    x = np.random.default_rng(0).random((2, 8, 9))
    x[0, 1, 1], x[1, 3, 3], x[1, 0, 0] = np.nan, np.inf, -np.inf
    with pytest.warns(NonFiniteWarning, match="3 non-finite"):
        got = peakloc.soft_argmax(torch.tensor(x, device=device), beta=10)
    with pytest.warns(NonFiniteWarning):
        np.testing.assert_allclose(got.cpu().numpy(), peakloc.soft_argmax(x, beta=10), atol=1e-9)
    with pytest.warns(NonFiniteWarning):
        np.testing.assert_array_equal(
            peakloc.argmax(torch.tensor(x, device=device)).cpu().numpy(),
            peakloc.argmax(np.where(np.isfinite(x), x, -np.inf)),
        )


def test_torch_refuses_an_all_nan_map(device):
    t = torch.full((2, 4, 4), float("nan"), device=device)
    with pytest.raises(NoFiniteValueError, match="heatmap 0 has no finite value"):
        peakloc.soft_argmax(t)


def test_torch_soft_argmax_of_uint8_is_float32():
    t = torch.zeros((5, 5), dtype=torch.uint8)
    t[1, 2] = 200
    out = peakloc.soft_argmax(t, beta=1e30, normalize="none")
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), [1, 2])


def test_torch_probabilities_on_the_cpu_have_no_subnormal_value():
    from peakloc.backends.torch_backend import probabilities

    # beta 100 on a uniform map: logits down to -100, whose probabilities would be subnormal (slow on CPUs).
    t = torch.rand((3, 40, 50), generator=torch.Generator().manual_seed(0))
    p, _ = probabilities(t, 100.0, 2, "minmax")
    assert p.min() >= torch.finfo(torch.float32).tiny
    np.testing.assert_allclose(peakloc.soft_argmax(t).numpy(), reference_soft_argmax(t.numpy()), atol=1e-4)


@pytest.mark.parametrize("normalize", ["minmax", "max", "none"])
def test_torch_soft_argmax_passes_gradcheck_in_float64(normalize):
    g = torch.Generator().manual_seed(0)
    t = torch.rand((2, 5, 6), dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda h: peakloc.soft_argmax(h, beta=3.0, normalize=normalize), (t,))


def test_gradient_is_finite_with_nan_holes_and_constant_maps():
    t = torch.ones((2, 4, 4), dtype=torch.float64)
    t[1, 2, 2] = 5
    t[1, 0, 0] = float("nan")
    t.requires_grad_(True)
    with pytest.warns(NonFiniteWarning):
        peakloc.soft_argmax(t, beta=2.0).sum().backward()
    assert torch.isfinite(t.grad).all()


def test_matches_kornia_spatial_soft_argmax2d_with_temperature_one_over_beta(rng):
    kornia = pytest.importorskip("kornia")
    x = rng.random((2, 3, 16, 20)).astype(np.float32)
    beta = 7.0
    ours = peakloc.soft_argmax(x, beta=beta, normalize="none")
    theirs = kornia.geometry.subpix.spatial_soft_argmax2d(
        torch.tensor(x), temperature=torch.tensor(1.0 / beta), normalized_coordinates=False
    ).numpy()
    np.testing.assert_allclose(ours[..., ::-1], theirs, atol=1e-4)  # kornia returns (x, y)


@settings(max_examples=30, deadline=None)
@given(
    arrays(
        np.float32,
        st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)),
        elements=st.floats(-100, 100, width=32),
    ),
    st.sampled_from(["minmax", "max", "none"]),
)
def test_numpy_and_torch_back_ends_agree(x, normalize):
    np.testing.assert_allclose(
        peakloc.soft_argmax(torch.tensor(x), beta=0.5, normalize=normalize).numpy(),
        peakloc.soft_argmax(x, beta=0.5, normalize=normalize),
        atol=2e-3,
    )
    np.testing.assert_array_equal(peakloc.argmax(torch.tensor(x)).numpy(), peakloc.argmax(x))


@pytest.mark.parametrize("dtype", ["uint16", "uint32", "uint64", "int64", "bool"])
def test_torch_argmax_of_wide_integers_keeps_their_order_and_first_maximum(device, dtype):
    info = np.iinfo(dtype) if dtype != "bool" else None
    top = int(info.max) if info else 1
    x = np.array([[1, top - 1, top, 0, top], [top, 0, 0, top, 1]], dtype=dtype)
    from peakloc.backends import torch_backend

    t = torch_backend.to_device(x, device)  # the path of `--device cuda`: the integer type is kept
    assert (t.dtype == getattr(torch, dtype)) or dtype == "bool"
    np.testing.assert_array_equal(peakloc.argmax(t, ndim=1).cpu().numpy(), np.argmax(x, axis=1)[:, None])


def test_torch_argmax_of_uint64_beyond_float_precision_is_the_issues_example():
    t = torch.tensor([1, 2**64 - 2, 2**64 - 1, 0], dtype=torch.uint64)
    assert peakloc.argmax(t, ndim=1).tolist() == [2]


def test_torch_soft_argmax_of_uint32_matches_numpy(device, rng):
    x = (rng.random((2, 9, 11)) * 4e9).astype(np.uint32)
    got = peakloc.soft_argmax(torch.tensor(x, device=device), beta=5.0)
    np.testing.assert_allclose(got.cpu().numpy(), peakloc.soft_argmax(x, beta=5.0), atol=1e-4)


def test_coordinate_conversions_take_tensors_on_their_device_and_differentiate(device):
    coords = torch.tensor([[0.0, 4.0], [2.0, 1.5]], device=device, requires_grad=True)
    normalized = peakloc.pixel_to_normalized(coords, (5, 7))
    assert isinstance(normalized, torch.Tensor) and normalized.device.type == device
    np.testing.assert_allclose(normalized.detach().cpu().numpy(), [[-1.0, 4 / 3 - 1], [0.0, 0.5 - 1]], rtol=1e-6)
    back = peakloc.normalized_to_pixel(normalized, (5, 7))
    torch.testing.assert_close(back, coords)
    back.sum().backward()
    torch.testing.assert_close(coords.grad, torch.ones_like(coords))


def test_integer_coordinate_tensors_convert_to_float():
    got = peakloc.pixel_to_normalized(torch.tensor([[0, 4]]), (5, 5))
    assert got.dtype == torch.float32 and got.tolist() == [[-1.0, 1.0]]


@pytest.mark.parametrize("with_nan", [False, True])
def test_soft_argmax_compiles_as_one_graph_and_matches_eager(with_nan):
    # aot_eager traces forward and backward as inductor does, without generating code (minutes on a CPU).
    x = torch.rand((2, 3, 16, 20), generator=torch.Generator().manual_seed(0))
    if with_nan:
        x[0, 1, 2, 3] = float("nan")
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    torch._dynamo.reset()
    compiled = torch.compile(lambda h: peakloc.soft_argmax(h, beta=20.0), fullgraph=True, backend="aot_eager")
    got = compiled(a)
    with pytest.warns(NonFiniteWarning) if with_nan else _no_warning():
        expected = peakloc.soft_argmax(b, beta=20.0)
    torch.testing.assert_close(got, expected)
    got.sum().backward()
    expected.sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


def _no_warning():
    import contextlib
    import warnings

    @contextlib.contextmanager
    def strict():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            yield

    return strict()
