import importlib.util
from pathlib import Path

import numpy as np
import pytest

from peakloc import io

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_data"


def _generator():
    spec = importlib.util.spec_from_file_location("make_sample_data", ROOT / "tools" / "make_sample_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_reproduces_the_committed_sample_data(tmp_path):
    for path in _generator().write(tmp_path):
        committed = SAMPLES / path.relative_to(tmp_path)
        np.testing.assert_array_equal(io.read(path)[0], io.read(committed)[0], err_msg=str(committed))


def test_sample_data_stays_under_two_megabytes():
    assert sum(p.stat().st_size for p in SAMPLES.rglob("*") if p.is_file()) < 2_000_000


@pytest.mark.parametrize(
    "name,axes,dtype",
    [
        ("fixations.png", "YX", np.uint8),
        ("spots16.png", "YX", np.uint16),
        ("pose/keypoints_17x64x48.npy", "ZYX", np.float32),
        ("volume.tif", "ZYX", np.uint16),
    ],
)
def test_sample_files_have_the_promised_kinds(name, axes, dtype):
    array, got = io.read(SAMPLES / name)
    assert got == axes and array.dtype == dtype


def test_fixation_map_peaks_at_255():
    assert io.read(SAMPLES / "fixations.png")[0].max() == 255
