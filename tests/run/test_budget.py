import numpy as np
import pytest

from peakloc.errors import InputError, PeaklocValueError
from peakloc.io.probe import Probe
from peakloc.run.budget import OVERLAY_BYTES, check, describe, parse_size, working_bytes
from peakloc.run.settings import Settings


@pytest.mark.parametrize(
    "text,size",
    [("512MiB", 512 * 1024**2), ("4GiB", 4 * 1024**3), ("512MB", 512 * 10**6), ("4gb", 4 * 10**9), ("1.5KiB", 1536)],
)
def test_sizes_in_powers_of_1024_and_of_1000(text, size):
    assert parse_size(text) == size


def test_a_share_is_of_the_machines_memory():
    assert parse_size("25%", total=8 * 1024**3) == 2 * 1024**3
    assert 0 < parse_size("50%") <= parse_size("100%")


@pytest.mark.parametrize("text", ["", "0", "-5MB", "12 parsecs", "0%", "101%", "MiB"])
def test_bad_sizes_are_refused_by_name(text):
    with pytest.raises(PeaklocValueError, match="`max_memory`"):
        parse_size(text)


def test_working_memory_grows_with_what_the_run_computes():
    plain = working_bytes(10**6, Settings())
    assert working_bytes(10**6, Settings(peaks=3)) > working_bytes(10**6, Settings(methods=("gaussian",))) > plain
    assert working_bytes(10**6, Settings(overlay=object())) == plain + OVERLAY_BYTES


def test_check_refuses_before_decoding_and_lets_small_inputs_through():
    small = Probe((100, 100), np.dtype("uint8"))
    check(small, "image", Settings(), 10**6)
    big = Probe((20000, 20000, 3), np.dtype("uint8"), 3)
    with pytest.raises(InputError, match=r"20000x20000x3 uint8, 1.1 GiB as stored\), more than the memory budget"):
        check(big, "image", Settings(), 10**9)


def test_a_memory_mapped_npy_counts_its_working_memory_only():
    probe = Probe((1000, 1000), np.dtype("float64"))
    check(probe, "npy", Settings(), 5 * 10**6)  # 8 MB as stored, mapped: 4 MB of working memory fits
    with pytest.raises(InputError):
        check(probe, "tiff", Settings(), 5 * 10**6)


def test_describe_uses_powers_of_1024():
    assert describe(1024**3) == "1.0 GiB" and describe(10) == "10 B"
