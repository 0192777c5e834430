import math

import cv2
import numpy as np
import pytest

from peakloc.errors import PeaklocError
from peakloc.output import overlay

from ..conftest import gaussian

WHITE = (255, 255, 255)
MAGENTA = (255, 0, 255)


def centroid(image, colour, near=None, radius=15):
    """Mean position of the pixels of exactly `colour`, optionally only within `radius` of `near` (x, y)."""
    mask = np.all(image == colour, axis=-1)
    if near is not None:  # keep panel labels (white text) out of the measurement
        ys, xs = np.indices(mask.shape)
        mask &= (np.abs(xs - near[0]) <= radius) & (np.abs(ys - near[1]) <= radius)
    ys, xs = np.nonzero(mask)
    assert ys.size, f"no pixel of colour {colour}"
    return xs.mean(), ys.mean()


def test_small_heatmaps_are_scaled_up_to_about_256_px_with_whole_factors():
    image = overlay.render(np.zeros((64, 48)), {})
    factor = math.ceil(256 / 48)
    legend_height = image.shape[0] - 64 * factor
    assert image.shape[1] == 48 * factor and 0 < legend_height < 40


def test_argmax_dot_sits_on_the_pixel_centre():
    heat = np.zeros((64, 48))
    heat[20, 30] = 1
    image = overlay.render(heat, {"argmax": np.array([[20.0, 30.0]])})
    f = math.ceil(256 / 48)
    x, y = centroid(image[: 64 * f], WHITE)
    assert abs(x - ((30 + 0.5) * f - 0.5)) < 0.5 and abs(y - ((20 + 0.5) * f - 0.5)) < 0.5


def test_subpixel_marker_is_drawn_at_subpixel_precision():
    heat = gaussian((64, 48), (20.3, 30.7))
    image = overlay.render(heat, {"softargmax": np.array([[20.3, 30.7]])}, scale=8)
    x, y = centroid(image[: 64 * 8], MAGENTA)
    assert abs(x - (31.2 * 8 - 0.5)) < 0.6 and abs(y - (20.8 * 8 - 0.5)) < 0.6


def test_nan_is_drawn_in_neutral_grey():
    heat = gaussian((32, 32), (10, 10))
    heat[25:, 25:] = np.nan
    image = overlay.render(heat, {}, scale=8)
    assert tuple(image[28 * 8, 28 * 8]) == overlay.NAN_COLOUR


def test_colour_scale_spans_the_finite_values(tmp_path):
    heat = np.array([[0.0, 5.0], [10.0, np.nan]])
    coloured = overlay.colorize(heat, "jet")
    jet = cv2.applyColorMap(np.array([[0, 128, 255]], np.uint8), cv2.COLORMAP_JET)[0]
    np.testing.assert_array_equal(coloured[0, 0], jet[0])
    np.testing.assert_array_equal(coloured[1, 0], jet[2])


def test_volume_shows_three_projections_with_the_peak_on_each():
    vol = np.zeros((10, 20, 30))
    vol[3, 12, 25] = 1
    f = 4
    image = overlay.render(vol, {"argmax": np.array([[3.0, 12.0, 25.0]])}, scale=f)
    gap = 6
    assert image.shape[1] == 30 * f + gap + 30 * f + gap + 10 * f
    body = image[: 20 * f]
    c = lambda i: (i + 0.5) * f - 0.5  # noqa: E731
    xy = centroid(body[:, : 30 * f], WHITE, near=(c(25), c(12)))
    xz = centroid(body[: 10 * f, 30 * f + gap : 60 * f + gap], WHITE, near=(c(25), c(3)))
    yz = centroid(body[:, 60 * f + 2 * gap :], WHITE, near=(c(3), c(12)))
    np.testing.assert_allclose(xy, (c(25), c(12)), atol=0.5)
    np.testing.assert_allclose(xz, (c(25), c(3)), atol=0.5)
    np.testing.assert_allclose(yz, (c(3), c(12)), atol=0.5)


def test_background_photo_sets_the_size_and_peaks_map_onto_it():
    photo = np.full((256, 192, 3), 90, np.uint8)
    heat = np.zeros((64, 48))
    heat[10, 40] = 1
    image = overlay.render(heat, {"argmax": np.array([[10.0, 40.0]])}, background=photo)
    assert image.shape[1] == 192
    x, y = centroid(image[:256], WHITE)
    assert abs(x - (40.5 * 4 - 0.5)) < 0.5 and abs(y - (10.5 * 4 - 0.5)) < 0.5


def test_several_peaks_are_numbered_by_rank():
    heat = np.zeros((40, 40))
    with_ranks = overlay.render(heat, {"argmax": np.array([[10.0, 10.0], [30.0, 30.0]])}, scale=8)
    assert np.all(with_ranks[: 40 * 8][np.all(with_ranks[: 40 * 8] == WHITE, axis=-1)] == 255)
    # the rank label "2" is drawn up-right of the second marker
    region = with_ranks[30 * 8 - 30 : 30 * 8, 30 * 8 + 5 : 30 * 8 + 30]
    assert np.all(region == WHITE, axis=-1).any()


def test_unknown_colormap_is_refused():
    with pytest.raises(PeaklocError, match="unknown colour map"):
        overlay.colorize(np.zeros((2, 2)), "nope")
