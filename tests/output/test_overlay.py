import math

import cv2
import numpy as np
import pytest

from peakloc.errors import PeaklocError
from peakloc.output import overlay

from ..conftest import gaussian

WHITE = (255, 255, 255)
PURPLE = overlay.MARKERS["softargmax"].colour


def centroid(image, colour, near=None, radius=15, tolerance=40):
    """Mean position of the pixels within `tolerance` of `colour`, optionally only within `radius` of `near`."""
    mask = np.all(np.abs(image.astype(int) - colour) <= tolerance, axis=-1)
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


def test_argmax_circle_is_centred_on_the_pixel_centre():
    heat = np.zeros((64, 48))
    heat[20, 30] = 1
    image = overlay.render(heat, {"argmax": np.array([[20.0, 30.0]])})
    f = math.ceil(256 / 48)
    x, y = centroid(image[: 64 * f], WHITE)
    assert abs(x - ((30 + 0.5) * f - 0.5)) < 0.5 and abs(y - ((20 + 0.5) * f - 0.5)) < 0.5


def test_subpixel_marker_is_drawn_at_subpixel_precision():
    heat = gaussian((64, 48), (20.3, 30.7))
    image = overlay.render(heat, {"softargmax": np.array([[20.3, 30.7]])}, scale=8)
    x, y = centroid(image[: 64 * 8], PURPLE, tolerance=10)
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
    vol = np.zeros((20, 24, 30))
    vol[3, 12, 25] = 1
    f = 4
    image = overlay.render(vol, {"argmax": np.array([[3.0, 12.0, 25.0]])}, scale=f)
    gap = 6
    assert image.shape[1] == 30 * f + gap + 30 * f + gap + 20 * f
    body = image[: 24 * f]
    c = lambda i: (i + 0.5) * f - 0.5  # noqa: E731
    xy = centroid(body[:, : 30 * f], WHITE, near=(c(25), c(12)))
    xz = centroid(body[: 20 * f, 30 * f + gap : 60 * f + gap], WHITE, near=(c(25), c(3)))
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


def test_background_keeps_the_photos_aspect_with_the_map_fitted_and_centred():
    photo = np.full((512, 512, 3), 90, np.uint8)
    heat = np.zeros((64, 48))
    heat[10, 10] = 1
    image = overlay.render(heat, {"argmax": np.array([[10.0, 10.0]])}, background=photo)
    assert image.shape[1] == 512
    # 64x48 fits as 512 rows x 384 columns, centred: 64 px of photo on each side
    x, y = centroid(image[:512], WHITE)
    assert abs(x - (64 + 10.5 * 8 - 0.5)) < 0.6 and abs(y - (10.5 * 8 - 0.5)) < 0.6


def test_background_shows_the_photo_unchanged_where_the_map_is_at_its_lowest():
    photo = np.random.default_rng(0).integers(0, 256, (128, 96, 3), dtype=np.uint8)
    heat = np.zeros((64, 48))
    heat[30:34, 20:24] = 1
    image = overlay.render(heat, {}, background=photo)[:128]
    np.testing.assert_array_equal(image[:40, :40], photo[:40, :40])
    assert not np.array_equal(image[62:66, 42:46], photo[62:66, 42:46])


def test_several_peaks_are_numbered_by_rank(monkeypatch):
    texts = _record_text(monkeypatch)
    overlay.render(np.zeros((40, 40)), {"argmax": np.array([[10.0, 10.0], [30.0, 30.0]])}, scale=8)
    labels = [(t, x, y) for t, x, y in texts if t in ("1", "2")]
    assert [t for t, _, _ in labels] == ["1", "2"]
    # each beside its own marker
    assert all(abs(x - (c + 0.5) * 8) < 40 and abs(y - (c + 0.5) * 8) < 40 for (_, x, y), c in zip(labels, (10, 30)))


def _record_text(monkeypatch):
    """Record every text drawn on the picture (not in bands): (text, x, baseline y)."""
    texts = []
    real = overlay._put_text

    def spy(image, text, x, y, outline=True):
        if outline:
            texts.append((text, x, y))
        real(image, text, x, y, outline)

    monkeypatch.setattr(overlay, "_put_text", spy)
    return texts


def _spots(shape, count, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(2, np.array(shape) - 3, (count, len(shape)))
    heat = sum(gaussian(shape, c, sigma=1.2) * rng.uniform(0.3, 1) for c in centres)
    return heat + rng.normal(0, 0.01, shape)


def test_the_pixel_at_every_marked_peak_keeps_its_heatmap_colour_on_a_dense_field():
    import peakloc

    heat = _spots((120, 160), 150)
    found = peakloc.find_peaks(heat, num_peaks=100).astype(float)
    refined = peakloc.refine(heat, found.astype(np.int64), method="gaussian")
    peaks = {"argmax": found, "gaussian": refined, "softargmax": found[:1] + 0.3}
    for scale in (1, 2, 5):
        image = overlay.render(heat, peaks, scale=scale)
        plain = cv2.resize(overlay.colorize(heat, "jet"), (160 * scale, 120 * scale), interpolation=cv2.INTER_NEAREST)
        for coords in peaks.values():
            for y, x in coords:
                dy, dx = round((y + 0.5) * scale - 0.5), round((x + 0.5) * scale - 0.5)
                np.testing.assert_array_equal(image[dy, dx], plain[dy, dx])


def test_no_rank_label_leaves_the_picture_nor_overlaps_another(monkeypatch):
    texts = _record_text(monkeypatch)
    heat = _spots((100, 100), 80, seed=1)
    edge = np.array([[0.0, 0.0], [0.0, 99.0], [99.0, 0.0], [99.0, 99.0], [0.0, 50.0]])
    import peakloc

    found = np.concatenate([edge, peakloc.find_peaks(heat, num_peaks=60).astype(float)])
    image = overlay.render(heat, {"argmax": found}, scale=3)
    boxes = []
    for text, x, y in texts:
        width, height = overlay._text_size(text)
        boxes.append((x - 1, y - height, x - 1 + width, y + 2))
    assert len(boxes) > 20
    for left, top, right, bottom in boxes:
        assert 0 <= left and right < 300 and 0 <= top and bottom < 300  # the picture, not the bands
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1], (a, b)
    assert image.shape[1] == 300


def test_markers_of_each_method_differ_in_shape_and_grey_level():
    shapes = {m.shape for m in overlay.MARKERS.values()}
    assert len(shapes) == len(overlay.MARKERS)
    greys = [cv2.cvtColor(np.uint8([[m.colour]]), cv2.COLOR_BGR2GRAY)[0, 0] for m in overlay.MARKERS.values()]
    assert len(set(greys)) == len(greys)


def test_thin_projections_are_stretched_to_at_least_48_px():
    vol = _spots((9, 300, 400), 40)
    image = overlay.render(vol, {"argmax": np.array([[4.0, 150.0, 200.0]])})
    body = image[overlay.LINE_HEIGHT + 6 : -40] if False else image
    band = (image[:, :, 0] == overlay.BAND_COLOUR[0]) & (image[:, :, 1] == overlay.BAND_COLOUR[1])
    # XZ: rows below the XY panel's 300 are band colour under the XZ panel; its height is Z's on screen
    xz_column = band[:300, 400 + 6 + 200]
    xz_height = int(np.argmax(xz_column)) if xz_column.any() else 300
    assert xz_height >= 48
    yz_width = image.shape[1] - (400 + 6 + 400 + 6)
    assert yz_width >= 48
    del body


def test_spacing_gives_the_volume_its_true_aspect():
    vol = np.zeros((10, 20, 30))
    vol[5, 10, 15] = 1
    flat = overlay.render(vol, {}, scale=4, with_legend=False)
    deep = overlay.render(vol, {}, scale=4, spacing=(5.0, 1.0, 1.0), with_legend=False)
    gap = 6
    assert flat.shape[1] == 30 * 4 + gap + 30 * 4 + gap + 64  # 10 slices x 4 = 40 px, stretched to 64
    assert deep.shape[1] == 30 * 4 + gap + 30 * 4 + gap + 10 * 5 * 4
    assert deep.shape[0] == 10 * 5 * 4 > 20 * 4


def test_colour_range_percentiles_set_the_colour_bar_ends(monkeypatch):
    heat = np.arange(10000, dtype=float).reshape(100, 100)
    lo, hi = overlay.ColourRange.parse("1%,99%").limits([heat])
    np.testing.assert_allclose((lo, hi), np.percentile(heat, [1, 99]))
    texts = []
    real = overlay._put_text
    monkeypatch.setattr(
        overlay, "_put_text", lambda im, t, x, y, outline=True: (texts.append(t), real(im, t, x, y, outline))
    )
    image = overlay.render(heat, {}, value_range=overlay.ColourRange.parse("1%,99%"))
    assert overlay.number(lo) in texts and overlay.number(hi) in texts
    # values below LO take the colour map's first colour
    first = cv2.applyColorMap(np.uint8([[0]]), cv2.COLORMAP_JET)[0, 0]
    np.testing.assert_array_equal(image[0, 0], first)


@pytest.mark.parametrize("text", ["1,2,3", "5%,3", "a,b", "3,1", "-1%,50%", "0.5%,101%", "nan,1"])
def test_colour_range_refuses_what_is_not_lo_hi(text):
    with pytest.raises(ValueError):
        overlay.ColourRange.parse(text)


def test_legend_band_holds_the_marker_key_and_a_colour_bar_in_one_line():
    band = overlay.legend(400, ["argmax", "gaussian"], "jet", (0.0, 1.0))
    assert band.shape[0] == overlay.LINE_HEIGHT + 6
    jet = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[None], cv2.COLORMAP_JET)[0]
    row = band[band.shape[0] - 9]
    ramp = [tuple(p) for p in row if any(np.all(p == jet, axis=1))]
    assert len(ramp) >= overlay.COLOUR_BAR_WIDTH - 2


def test_lower_maxima_are_drawn_faintly():
    heat = np.zeros((40, 40))
    heat[10, 10], heat[30, 30] = 1.0, 0.5
    plain = overlay.render(heat, {"argmax": np.array([[10.0, 10.0]])}, scale=4, with_legend=False)
    faint = overlay.render(
        heat, {"argmax": np.array([[10.0, 10.0]])}, scale=4, others=np.array([[30.0, 30.0]]), with_legend=False
    )
    ring = faint[110:134, 110:134].astype(int) - plain[110:134, 110:134].astype(int)
    assert ring.any()
    changed = faint[110:134, 110:134][ring.any(axis=-1)]
    assert (changed < 250).any(axis=-1).all()  # blended, never pure white


def test_contact_sheet_has_one_legend():
    tiles = [overlay.render(np.eye(8), {"argmax": np.array([[1.0, 1.0]])}, with_legend=False) for _ in range(4)]
    key = lambda width: overlay.legend(width, ["argmax"], "jet", (0.0, 1.0))  # noqa: E731
    sheet = overlay.contact_sheet(tiles, title="x", key=key)
    tile_height = tiles[0].shape[0]
    assert sheet.shape[0] == (overlay.LINE_HEIGHT + 6) + 2 * (tile_height + 4) + 4 + (overlay.LINE_HEIGHT + 6)


def test_unknown_colormap_is_refused():
    with pytest.raises(PeaklocError, match="unknown colour map"):
        overlay.colorize(np.zeros((2, 2)), "nope")
