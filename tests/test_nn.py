"""peakloc.SoftArgmax: the soft-argmax as a torch module."""

import subprocess
import sys

import numpy as np
import pytest

import peakloc

torch = pytest.importorskip("torch", reason="torch is part of the test install (make install)")


def test_module_returns_what_the_function_returns(device, rng):
    x = torch.tensor(rng.random((2, 4, 12, 15)), dtype=torch.float32, device=device)
    layer = peakloc.SoftArgmax(beta=30.0, normalize="max")
    torch.testing.assert_close(layer(x), peakloc.soft_argmax(x, beta=30.0, normalize="max"))


def test_module_gives_normalized_coordinates_as_grid_sample_reads_them(rng):
    x = torch.zeros((1, 9, 13))
    x[0, 6, 3] = 1.0
    got = peakloc.SoftArgmax(beta=1e4, coords="normalized")(x)
    # grid_sample with align_corners=True reads (x, y) in [-1, 1]: sampling there returns the peak.
    grid = got.flip(-1).reshape(1, 1, 1, 2)
    sampled = torch.nn.functional.grid_sample(x[None], grid, align_corners=True)
    assert float(sampled) == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(got.numpy(), [[6 / 8 * 2 - 1, 3 / 12 * 2 - 1]], atol=1e-5)


def test_module_trains_inside_a_network():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, padding=1), peakloc.SoftArgmax(beta=10.0, ndim=2))
    x = torch.rand((4, 1, 10, 10))
    loss = net(x).square().mean()
    loss.backward()
    assert net[0].weight.grad is not None and torch.isfinite(net[0].weight.grad).all()
    assert "beta=10.0, ndim=2, normalize='minmax', coords='pixel'" in repr(net[1])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"coords": "pixels"}, "`coords` must be one of pixel, normalized. Got: 'pixels'"),
        ({"beta": -1.0}, r"`beta` must be > 0 and finite. Got: -1.0"),
        ({"ndim": 4}, "`ndim` must be 1, 2 or 3. Got: 4"),
        ({"normalize": "z"}, "`normalize` must be one of minmax, max, none. Got: 'z'"),
    ],
)
def test_module_refuses_bad_arguments_by_their_names(kwargs, message):
    with pytest.raises(ValueError, match=message):
        peakloc.SoftArgmax(**kwargs)


def test_import_peakloc_imports_no_torch_until_the_module_is_used():
    code = (
        "import sys, peakloc; assert 'torch' not in sys.modules; "
        "peakloc.SoftArgmax; assert 'torch' in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr
