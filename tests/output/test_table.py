import csv
import io as stdio
import json

import numpy as np
import pytest

from peakloc.output.table import COLUMNS, ROWS_BY_COLUMN, TableWriter, infer_format, number, numbers, rows
from peakloc.run.locate import MethodPeaks


def _peaks():
    present = np.ones((2, 1), bool)
    return {
        "argmax": MethodPeaks(
            np.array([[[3, 4]], [[1, 2]]]), np.array([[255], [7]], dtype=np.uint8), present, ~present, {}
        ),
        "softargmax": MethodPeaks(
            np.array([[[3.25, 4.5]], [[1.0, 2.0]]]), np.array([[200.5], [6.0]]), present, ~present, {}
        ),
    }


def _rows(path, labels):
    peaks = _peaks()
    return rows(path, labels, "YX", peaks, {m: p.coords for m, p in peaks.items()})


def test_rows_follow_index_then_peak_then_method_order():
    got = list(_rows("a.npy", ["C=0", "C=1"]))
    assert [(r["index"], r["peak"], r["method"]) for r in got] == [
        ("C=0", 1, "argmax"),
        ("C=0", 1, "softargmax"),
        ("C=1", 1, "argmax"),
        ("C=1", 1, "softargmax"),
    ]
    assert got[1] == {
        "path": "a.npy",
        "index": "C=0",
        "peak": 1,
        "method": "softargmax",
        "x": 4.5,
        "y": 3.25,
        "z": None,
        "value": 200.5,
    }


def test_numbers_print_as_the_shortest_exact_form():
    assert number(np.float32(0.1)) == 0.1 and number(np.uint8(255)) == 255 and number(np.float64("nan")) is None


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.uint8, np.int64, bool])
def test_a_column_of_numbers_is_each_number_alone(dtype):
    values = np.array([0.1, 1 / 3, 254.99999999999997, 1e-7, -2.5e4, np.nan, np.inf, -np.inf, 0.0, 7.0])
    if np.dtype(dtype).kind != "f":
        values = np.array([0, 1, 7, 255, 1, 0])
    column = values.astype(dtype)
    got = numbers(column.reshape(2, -1))
    assert got == [number(v) for v in column]
    assert [type(v) for v in got] == [type(number(v)) for v in column]


def test_float64_numbers_are_rounded_to_12_significant_digits():
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(0, 1, 200) * 10.0 ** rng.integers(-320, 300, 200), [5e-324, 1.7e308, 0.0]])
    assert numbers(values) == [float(f"{v:.12g}") for v in values.tolist()]  # the rule, spelled apart


@pytest.mark.parametrize(
    "output,fmt", [("-", "csv"), ("a.TSV", "tsv"), ("a.json", "json"), ("a.jsonl", "jsonl"), ("a.txt", "csv")]
)
def test_format_follows_the_output_extension(output, fmt):
    assert infer_format(output, None) == fmt


def test_csv_file_has_header_and_empty_missing_axes(tmp_path):
    out = tmp_path / "t.csv"
    writer = TableWriter(str(out), "csv")
    writer.write(_rows("a.png", [""]))
    assert not out.exists()  # appears whole at close, not before
    writer.close()
    table = list(csv.DictReader(stdio.StringIO(out.read_text())))
    assert tuple(table[0]) == COLUMNS
    assert table[0]["z"] == "" and table[0]["index"] == "" and table[0]["x"] == "4"


def test_json_is_one_array_with_nulls(tmp_path):
    out = tmp_path / "t.json"
    writer = TableWriter(str(out), "json")
    writer.write(_rows("a.png", ["C=0", "C=1"]))
    writer.close()
    data = json.loads(out.read_text())
    assert len(data) == 4 and data[0]["z"] is None and data[0]["x"] == 4 and data[1]["x"] == 4.5


def test_empty_json_table_is_an_empty_array(tmp_path):
    out = tmp_path / "t.json"
    writer = TableWriter(str(out), "json")
    writer.close()
    assert json.loads(out.read_text()) == []


def test_discarded_file_table_leaves_nothing(tmp_path):
    writer = TableWriter(str(tmp_path / "t.csv"), "csv")
    writer.discard()
    assert list(tmp_path.iterdir()) == []


def test_rows_made_a_column_at_a_time_are_the_rows_made_one_at_a_time():
    from peakloc.output.table import _by_column, _each_row

    rng = np.random.default_rng(5)
    b = 6

    def method(p, dtype, error):
        present = rng.random((b, p)) < 0.7
        coords = rng.random((b, p, 3)) * 50
        coords[0, 0, 1] = np.nan
        shape = {c: rng.random((b, p)) for c in ("sigma", "amplitude", "snr")}
        err = np.where(rng.random((b, p, 3)) < 0.2, np.nan, rng.random((b, p, 3))) if error else None
        return MethodPeaks(
            coords, (rng.random((b, p)) * 200).astype(dtype), present, rng.random((b, p)) < 0.3, shape, err,
            rng.random((b, p)) < 0.1 if error else None,
        )  # fmt: skip

    peaks = {"argmax": method(4, np.uint8, False), "gaussian": method(3, np.float32, True)}
    coords = {m: p.coords for m, p in peaks.items()}
    labels = [f"T={t}" for t in range(b - 1)] + [""]
    for spatial, paths in (("ZYX", ["a.tif"] * b), ("YX", [f"m{k}.png" for k in range(b)])):
        expected = list(_each_row(paths, labels, spatial, peaks, coords, True))
        assert len(expected) > 20
        assert list(_by_column(paths, labels, spatial, peaks, coords, True)) == expected
        assert list(_by_column(paths, labels, spatial, peaks, coords, False)) == list(
            _each_row(paths, labels, spatial, peaks, coords, False)
        )


def test_rows_of_a_stack_with_a_path_per_heatmap_are_each_heatmaps_rows_in_turn():
    rng = np.random.default_rng(9)
    b, p = 20, 2
    present = rng.random((b, p)) < 0.8
    peaks = {
        m: MethodPeaks(rng.random((b, p, 2)) * 30, rng.random((b, p)), present, rng.random((b, p)) < 0.2, {})
        for m in ("argmax", "quadratic")
    }
    coords = {m: q.coords for m, q in peaks.items()}
    paths = [f"f{k}.png" for k in range(b)]
    together = list(rows(paths, [""] * b, "YX", peaks, coords))
    assert len(together) >= ROWS_BY_COLUMN  # built a column at a time; each map alone, a row at a time
    alone = []
    for k in range(b):
        one = {m: q.rows(k, k + 1) for m, q in peaks.items()}
        alone += rows(paths[k], [""], "YX", one, {m: q.coords for m, q in one.items()})
    assert together == alone


@pytest.mark.parametrize("fmt", ["csv", "tsv", "json", "jsonl"])
def test_rows_held_a_column_at_a_time_are_written_as_the_same_rows_as_dicts(tmp_path, monkeypatch, fmt):
    # Blocks of 3 rows; one path holds a line break, so that its block is written row by row (quoted).
    from peakloc.output import table as table_module
    from peakloc.output.table import Rounded, Rows

    monkeypatch.setattr(table_module, "WRITE_BLOCK", 3)
    n = 10
    columns = {c: [None] * n for c in COLUMNS}
    columns.update(
        path=[f"a{k}.png" if k != 4 else "line\nbreak.png" for k in range(n)],
        peak=list(range(1, n + 1)),
        method=["gaussian"] * n,
        x=[k / 3 for k in range(n)],
        y=[float(k) for k in range(n)],
        value=[k if k % 2 else None for k in range(n)],
    )
    held = Rows({**columns, "z": Rounded(np.array([k / 7 if k % 3 else np.nan for k in range(n)]))})
    assert len(held) == n and held[2]["x"] == 2 / 3 and list(held[1:3]) == list(held)[1:3]
    assert held[1]["z"] == 0.142857142857 and held[3]["z"] is None
    written = {}
    for name, given in (("columns", held), ("dicts", list(held))):
        out = tmp_path / f"{name}.{fmt}"
        writer = TableWriter(str(out), fmt)
        writer.write(given)
        writer.close()
        written[name] = out.read_bytes()
    assert written["columns"] == written["dicts"]
    assert written["columns"].count(b"a9.png") == 1


def test_rounded_numbers_are_written_as_the_text_of_the_numbers_rounded_to_12_digits():
    # The reference: the float nearest the 12-digit text, then its shortest form (str), as a CSV writer
    # writes a number; across magnitudes, with whole numbers, 1e12 and past, subnormals, zeros and NaN.
    from peakloc.output.table import Rounded

    rng = np.random.default_rng(11)
    with np.errstate(over="ignore"):
        values = np.concatenate(
            [
                rng.normal(50, 30, 2000),
                rng.normal(0, 1, 2000) * 10.0 ** rng.integers(-320, 300, 2000),
                np.round(rng.normal(0, 1e6, 500)),
                rng.integers(-(10**15), 10**15, 500).astype(float),
                [254.99999999999997, -0.0, 0.0, 1e12, 1e16, 5e-324, 0.30000000000000004, 0.9999999999999],
                [99999999999.99999, np.nan, np.inf, -np.inf],
            ]
        )
    expected = [str(float(format(v, ".12g"))) if np.isfinite(v) else None for v in values.tolist()]
    assert Rounded(values).text() == expected
    assert Rounded(np.full(3, np.nan)).text() == [None] * 3
