import numpy as np

from peakloc.ops.interpolate import _interpolate_few, interpolate


def test_interpolation_paths_for_few_and_many_points_agree(rng):
    x = rng.random((3, 7, 9))
    x[0, 2, 3] = np.nan
    coords = rng.uniform(-1, 9, size=(3, 2, 2))
    many = np.concatenate([coords] * 5, axis=1)  # more than 8 points: the array path
    np.testing.assert_allclose(interpolate(x, coords), interpolate(x, many)[:, :2])


def test_interpolation_is_exact_at_pixel_centres_and_bilinear_between(rng):
    x = rng.random((2, 5, 6))
    np.testing.assert_allclose(interpolate(x, np.array([[[2, 3]], [[4, 5]]])), [[x[0, 2, 3]], [x[1, 4, 5]]])
    mid = interpolate(x[:1], np.array([[[1.5, 2.25]]]))
    expected = 0.5 * (0.75 * x[0, 1, 2] + 0.25 * x[0, 1, 3]) + 0.5 * (0.75 * x[0, 2, 2] + 0.25 * x[0, 2, 3])
    np.testing.assert_allclose(mid, [[expected]])


def test_a_stack_read_in_pieces_is_interpolated_from_one_box_per_point_as_in_memory(rng):
    from peakloc.ops.lazy import Maps

    x = rng.random((2, 6, 7, 9))
    x[1, 2, 3, 4] = np.nan
    coords = np.concatenate([rng.uniform(-1, 9, size=(2, 12, 3)), [[[5, 6, 8]], [[0, 0, 0]]]], axis=1)
    reads = []
    maps = Maps(np.lib.stride_tricks.as_strided(x), 3)
    real = maps.read
    maps.read = lambda b, box=(), out=None: reads.append(box) or real(b, box, out)
    got = interpolate(maps, coords)
    np.testing.assert_array_equal(got, _interpolate_few(x, coords))  # the same arithmetic, in the same order
    np.testing.assert_allclose(got, interpolate(x, coords), rtol=1e-12)
    assert len(reads) == coords.shape[0] * coords.shape[1]
