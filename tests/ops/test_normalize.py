import numpy as np
import pytest

from peakloc.ops.normalize import COEFFICIENT_MAX, coefficient


@pytest.mark.parametrize(
    "normalize,expected",
    [("minmax", [5.0, 0.0, 2.5]), ("max", [2.5, 10.0, 10.0 / 3]), ("none", [10.0, 10.0, 10.0])],
)
def test_coefficient_is_beta_over_the_scale_with_guards(normalize, expected):
    hi = np.array([4.0, -1.0, 3.0])
    lo = np.array([2.0, -1.0, -1.0])
    np.testing.assert_allclose(coefficient(10.0, normalize, hi, lo), expected)


def test_integer_extremes_do_not_wrap():
    hi, lo = np.array([250], np.uint8), np.array([5], np.uint8)
    np.testing.assert_allclose(coefficient(245.0, "minmax", hi, lo), [1.0])


def test_a_tiny_span_gives_a_finite_coefficient():
    assert coefficient(100.0, "minmax", np.array([1e-300]), np.array([0.0]))[0] == COEFFICIENT_MAX


@pytest.mark.parametrize("normalize", ["minmax", "max", "none"])
def test_tensors_get_the_same_coefficient_on_their_device(normalize, device):
    torch = pytest.importorskip("torch")
    hi = np.array([4.0, -1.0, 3.0, 1e-300])
    lo = np.array([2.0, -1.0, -1.0, 0.0])
    got = coefficient(7.0, normalize, torch.tensor(hi, device=device), torch.tensor(lo, device=device))
    assert got.device.type == device
    np.testing.assert_allclose(got.cpu().numpy(), coefficient(7.0, normalize, hi, lo))
