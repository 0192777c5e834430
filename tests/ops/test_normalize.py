import numpy as np
import pytest

from peakloc.ops.normalize import COEFFICIENT_MAX, coefficient, exp_logits, logit_floor


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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logit_floor_is_the_least_whole_logit_with_a_normal_weight(dtype):
    floor, tiny = logit_floor(np.dtype(dtype)), np.finfo(dtype).tiny
    assert floor == int(floor)
    assert np.exp(dtype(floor)) >= tiny > np.exp(dtype(floor - 1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_logits_gives_no_subnormal_weight_and_leaves_the_rest_to_exp(dtype):
    logits = np.array([0, -1.5, -30, -86.5, -90, -100, -705, -710, -800, -np.inf, np.nan], dtype)
    floor = logit_floor(logits.dtype)
    got = exp_logits(logits.copy())
    above = logits >= floor
    np.testing.assert_array_equal(got[above], np.exp(logits[above]))
    np.testing.assert_array_equal(got[:-1][~above[:-1]], np.exp(dtype(floor)))
    assert np.all(got[:-1] >= np.finfo(dtype).tiny)
    assert np.isnan(got[-1])


def test_exp_logits_writes_into_out():
    logits = np.array([-1.0, -200.0], np.float32)
    assert exp_logits(logits, out=logits) is logits
    np.testing.assert_array_equal(logits, np.exp(np.array([-1.0, -87.0], np.float32)))
