import pytest

from peakloc.errors import PeaklocValueError
from peakloc.ops.subpixel import METHODS as REFINE_METHODS
from peakloc.run.settings import METHODS, Settings, parse_methods


def test_methods_list_the_global_two_then_every_registered_refinement():
    assert METHODS == ("argmax", "softargmax", *REFINE_METHODS)


@pytest.mark.parametrize(
    "text,methods",
    [
        ("both", ("argmax", "softargmax")),
        ("gaussian, ARGMAX", ("argmax", "gaussian")),
        ("all", METHODS),
        ("dark,dark", ("dark",)),
    ],
)
def test_parse_methods_gives_row_order_without_repeats(text, methods):
    assert parse_methods(text) == methods


def test_unknown_method_is_refused_with_the_known_ones():
    with pytest.raises(PeaklocValueError, match="unknown method 'nope'; choose from argmax, softargmax, local"):
        parse_methods("argmax,nope")


def test_default_settings_are_the_contracts():
    s = Settings()
    assert (s.methods, s.beta, s.normalize, s.coords, s.device, s.peaks) == (
        ("argmax", "softargmax"),
        100.0,
        "minmax",
        "pixel",
        "cpu",
        1,
    )
