"""Whole outputs of ``peakloc find``, compared exactly: the table in every format, and every stderr line."""

import cv2
import numpy as np
import pytest

from peakloc.cli import main

from .conftest import StrictRunner


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    """A PNG with one bright pixel, a float map with a NaN, a pickled NPY, and a 4-D NPY without axes."""
    monkeypatch.chdir(tmp_path)
    png = np.zeros((40, 64), np.uint8)
    png[12, 30] = 250
    cv2.imwrite("a.png", png)
    heat = np.zeros((6, 7), np.float32)
    heat[2, 3], heat[4, 1], heat[0, 0] = 1.0, 2.0, np.nan
    np.save("b.npy", heat)
    np.save("objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save("d.npy", np.zeros((2, 2, 3, 3)))
    return ["a.png", "b.npy", "objects.npy", "d.npy"]


STDERR = (
    "peakloc: warning: b.npy: 1 non-finite value ignored\n"
    "peakloc: error: objects.npy: holds Python objects (pickled data); peakloc never unpickles\n"
    "peakloc: error: d.npy: cannot tell the axes of a 4-d array: pass --axes with 4 letters, e.g. CZYX\n"
)

TABLES = {
    "csv": (
        "path,index,peak,method,x,y,z,value\n"
        "a.png,,1,argmax,30,12,,250\n"
        "a.png,,1,softargmax,30.0,12.0,,250.0\n"
        "b.npy,,1,argmax,1,4,,2.0\n"
        "b.npy,,1,softargmax,1.0,4.0,,2.0\n"
    ),
    "tsv": (
        "path\tindex\tpeak\tmethod\tx\ty\tz\tvalue\n"
        "a.png\t\t1\targmax\t30\t12\t\t250\n"
        "a.png\t\t1\tsoftargmax\t30.0\t12.0\t\t250.0\n"
        "b.npy\t\t1\targmax\t1\t4\t\t2.0\n"
        "b.npy\t\t1\tsoftargmax\t1.0\t4.0\t\t2.0\n"
    ),
    "json": (
        "[\n"
        '  {"path": "a.png", "index": null, "peak": 1, "method": "argmax", "x": 30, "y": 12, "z": null, '
        '"value": 250},\n'
        '  {"path": "a.png", "index": null, "peak": 1, "method": "softargmax", "x": 30.0, "y": 12.0, "z": null, '
        '"value": 250.0},\n'
        '  {"path": "b.npy", "index": null, "peak": 1, "method": "argmax", "x": 1, "y": 4, "z": null, "value": 2.0},\n'
        '  {"path": "b.npy", "index": null, "peak": 1, "method": "softargmax", "x": 1.0, "y": 4.0, "z": null, '
        '"value": 2.0}\n'
        "]\n"
    ),
    "jsonl": (
        '{"path": "a.png", "index": null, "peak": 1, "method": "argmax", "x": 30, "y": 12, "z": null, "value": 250}\n'
        '{"path": "a.png", "index": null, "peak": 1, "method": "softargmax", "x": 30.0, "y": 12.0, "z": null, '
        '"value": 250.0}\n'
        '{"path": "b.npy", "index": null, "peak": 1, "method": "argmax", "x": 1, "y": 4, "z": null, "value": 2.0}\n'
        '{"path": "b.npy", "index": null, "peak": 1, "method": "softargmax", "x": 1.0, "y": 4.0, "z": null, '
        '"value": 2.0}\n'
    ),
}


@pytest.mark.parametrize("fmt", sorted(TABLES))
def test_whole_table_and_stderr_on_standard_output(inputs, fmt):
    result = StrictRunner().invoke(main, ["find", *inputs, "-f", fmt, "-q"])
    assert result.exit_code == 1
    assert result.stdout == TABLES[fmt]
    assert result.stderr == STDERR


@pytest.mark.parametrize("fmt", sorted(TABLES))
def test_whole_table_written_to_a_file_by_its_extension(inputs, fmt, tmp_path):
    result = StrictRunner().invoke(main, ["find", *inputs, "-o", f"peaks.{fmt}", "-q"])
    assert result.exit_code == 1 and result.stdout == "" and result.stderr == STDERR
    assert (tmp_path / f"peaks.{fmt}").read_text() == TABLES[fmt]


def test_summary_is_the_last_stderr_line(inputs):
    result = StrictRunner().invoke(main, ["find", *inputs])
    lines = result.stderr.splitlines()
    assert lines[:-1] == STDERR.splitlines()
    assert lines[-1].startswith("peakloc: 4 files, 2 heatmaps, 2 failed, ") and lines[-1].endswith(" s")


def test_extra_columns_table(inputs):
    result = StrictRunner().invoke(main, ["find", "a.png", "-m", "argmax,quadratic", "--extra", "-q"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        "path,index,peak,method,x,y,z,value,sigma,amplitude,snr,fallback,x_err,y_err,z_err,split\n"
        "a.png,,1,argmax,30,12,,250,0.5,250.0,1.79769313486e+308,False,,,,False\n"
        "a.png,,1,quadratic,30.0,12.0,,250.0,0.5,250.0,1.79769313486e+308,True,,,,False\n"
    )
    assert result.stderr == (
        "peakloc: warning: a.png: quadratic kept the integer peak for 1 peak "
        "(border, flat or non-positive neighbourhood, or failed fit)\n"
    )


def test_library_messages_name_the_options_that_set_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save("v.npy", np.zeros((3, 8, 8), np.float32))
    cv2.imwrite("photo.png", np.zeros((16, 16, 3), np.uint8))
    result = StrictRunner().invoke(main, ["find", "v.npy", "--overlay", "ov", "--background", "photo.png", "-q"])
    assert (
        result.exit_code == 1 and result.stderr == "peakloc: error: v.npy: --background works with 2-D heatmaps only\n"
    )
    np.save("ov.npy", np.zeros((8, 8), np.float32))
    result = StrictRunner().invoke(main, ["find", "ov.npy", "--overlay", ".", "-m", "argmax", "-q"])
    assert result.exit_code == 0  # ov.png is no input; now make the overlay land on one
    cv2.imwrite("in.png", np.zeros((8, 8), np.uint8))
    result = StrictRunner().invoke(main, ["find", "in.png", "--overlay", ".", "-m", "argmax", "-q"])
    assert result.stderr == (
        "peakloc: error: in.png: overlay ./in.png would overwrite an input; choose another --overlay folder\n"
    )
