import numpy as np
import pytest

from peakloc.errors import AxesError
from peakloc.io.axes import Layout, default_axes, to_heatmaps, validate_axes


def test_validate_axes_upper_cases_letters():
    assert validate_axes("tczyx") == "TCZYX"


@pytest.mark.parametrize("axes,match", [("YW", "unknown axis letter 'W'"), ("YXY", "repeated"), ("TC", "no spatial")])
def test_validate_axes_refuses_bad_letters(axes, match):
    with pytest.raises(AxesError, match=match):
        validate_axes(axes)


def test_default_axes_by_number_of_dimensions():
    assert [default_axes(n) for n in (1, 2, 3)] == ["X", "YX", "ZYX"]
    with pytest.raises(AxesError, match="pass `axes`"):
        default_axes(4)


def test_to_heatmaps_moves_batch_axes_first_and_spatial_to_zyx_order():
    array = np.zeros((5, 2, 3, 4))  # X, T, Y, C
    moved, layout = to_heatmaps(array, "XTYC")
    assert moved.shape == (2, 4, 3, 5)
    assert layout == Layout("TC", (2, 4), "YX", (3, 5))


def test_to_heatmaps_refuses_wrong_number_of_axes():
    with pytest.raises(AxesError, match="name 3 axes but the array has 2"):
        to_heatmaps(np.zeros((4, 4)), "CYX")


def test_index_labels_are_c_order():
    assert Layout("TC", (2, 2), "YX", (3, 3)).index_labels() == ["T=0;C=0", "T=0;C=1", "T=1;C=0", "T=1;C=1"]
    assert Layout("", (), "YX", (3, 3)).index_labels() == [""]
