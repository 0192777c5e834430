import csv
import io as stdio
import json
import subprocess
import sys

import click
import cv2
import numpy as np
import pytest
import tifffile

from peakloc.cli import find, main

from .conftest import StrictRunner, gaussian, reference_soft_argmax


def run(*args, input=None):
    return StrictRunner().invoke(main, ["find", *map(str, args)], input=input)


def table(text):
    return list(csv.DictReader(stdio.StringIO(text)))


@pytest.fixture
def files(tmp_path):
    """A PNG peak at (y=12, x=30), a CYX NPY with 3 channels, and a ZYX TIFF volume."""
    png = np.zeros((40, 64), np.uint8)
    png[12, 30] = 250
    cv2.imwrite(str(tmp_path / "a.png"), png)
    npy = np.stack([gaussian((20, 24), (5 + c, 7 + 2 * c)) for c in range(3)]).astype(np.float32)
    np.save(tmp_path / "b.npy", npy)
    vol = (gaussian((10, 12, 14), (4.2, 6.5, 9.7)) * 1000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "c.tif", vol, imagej=True, metadata={"axes": "ZYX"})
    return tmp_path


def test_find_writes_one_row_per_method_with_contract_columns(files):
    result = run(files / "a.png")
    assert result.exit_code == 0, result.output
    rows = table(result.stdout)
    assert list(rows[0]) == ["path", "index", "peak", "method", "x", "y", "z", "value"]
    assert [(r["method"], r["x"], r["y"], r["z"], r["index"], r["peak"]) for r in rows] == [
        ("argmax", "30", "12", "", "", "1"),
        ("softargmax", "30.0", "12.0", "", "", "1"),
    ]
    assert rows[0]["value"] == "250"


def test_batch_axes_give_index_labels_in_c_order(files):
    rows = table(run(files / "b.npy", "--axes", "CYX", "-m", "argmax").stdout)
    assert [r["index"] for r in rows] == ["C=0", "C=1", "C=2"]
    assert [(int(r["y"]), int(r["x"])) for r in rows] == [(5, 7), (6, 9), (7, 11)]


def test_softargmax_column_matches_float64_formula(files):
    rows = table(run(files / "b.npy", "--axes", "CYX", "-m", "softargmax", "--beta", "20").stdout)
    ref = reference_soft_argmax(np.load(files / "b.npy"), 20)
    np.testing.assert_allclose([[float(r["y"]), float(r["x"])] for r in rows], ref, atol=1e-6)


def test_volume_rows_have_z(files):
    rows = table(run(files / "c.tif", "-m", "argmax").stdout)
    assert (rows[0]["z"], rows[0]["y"], rows[0]["x"]) == ("4", "6", "10")


def test_directory_is_read_in_name_order_and_other_files_are_skipped(files):
    (files / "notes.txt").write_text("hello")
    (files / "sub").mkdir()
    np.save(files / "sub" / "d.npy", np.eye(4))
    result = run(files, "-m", "argmax", "--axes", "CYX", "--fail-fast")
    assert result.exit_code == 1  # a.png is 2-D: CYX does not fit it
    result = run(files, "-m", "argmax")
    paths = [r["path"] for r in table(result.stdout)]
    assert paths == [str(files / "a.png"), str(files / "b.npy"), str(files / "c.tif")]
    paths = [r["path"] for r in table(run(files, "-m", "argmax", "-r").stdout)]
    assert paths[-1] == str(files / "sub" / "d.npy")


def test_stdin_dash_reads_paths_one_per_line(files):
    result = run("-", "-m", "argmax", input=f"{files / 'c.tif'}\n\n{files / 'a.png'}\n")
    assert result.exit_code == 0
    assert [r["path"] for r in table(result.stdout)] == [str(files / "c.tif"), str(files / "a.png")]


def test_bad_input_is_one_line_and_other_rows_are_kept(files):
    (files / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = run(files / "a.png", files / "broken.png", files / "missing.npy", files / "c.tif", "-m", "argmax")
    assert result.exit_code == 1
    errors = result.stderr.strip().splitlines()
    assert (
        f"peakloc: error: {files / 'broken.png'}: cannot decode image (corrupt, truncated, or not a PNG file)" in errors
    )
    assert f"peakloc: error: {files / 'missing.npy'}: no such file or directory" in errors
    assert "Traceback" not in result.output
    assert [r["path"] for r in table(result.stdout)] == [str(files / "a.png"), str(files / "c.tif")]


def test_fail_fast_stops_at_the_first_failure(files):
    result = run(files / "missing.png", files / "a.png", "--fail-fast", "-q")
    assert result.exit_code == 1 and table(result.stdout) == []


def test_all_nan_heatmap_fails_its_input_naming_the_channel(files):
    x = np.ones((2, 5, 5))
    x[1] = np.nan
    np.save(files / "nan.npy", x)
    result = run(files / "nan.npy", "--axes", "CYX", "-q")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"peakloc: error: {files / 'nan.npy'}: heatmap C=1 has no finite value"


def test_some_nan_values_warn_on_stderr_and_are_ignored(files):
    x = gaussian((9, 9), (4, 6))
    x[0, 0] = np.nan
    np.save(files / "holes.npy", x)
    result = run(files / "holes.npy", "-m", "argmax", "-q")
    assert result.exit_code == 0 and "1 non-finite value ignored" in result.stderr
    assert table(result.stdout)[0]["x"] == "6"


def test_wrong_number_of_axes_is_an_input_error(files):
    result = run(files / "a.png", "--axes", "ZYX", "-q")
    assert result.exit_code == 1 and "names 3 axes but the data has 2" in result.stderr


@pytest.mark.parametrize(
    "args,match",
    [
        (["--beta", "0"], "must be > 0"),
        (["--beta", "-1"], "must be > 0"),
        (["--axes", "QWX"], "unknown axis letter 'W'"),
        (["--method", "median"], "unknown method 'median'"),
        (["--normalize", "l2"], "'l2' is not one of"),
        (["--format", "xml"], "'xml' is not one of"),
        (["--bogus"], "No such option"),
    ],
)
def test_usage_errors_exit_2(files, args, match):
    result = run(files / "a.png", *args)
    assert result.exit_code == 2 and match in result.stderr


def test_no_input_is_a_usage_error():
    assert StrictRunner().invoke(main, ["find"]).exit_code == 2


def test_output_file_json_and_jsonl(files):
    out = files / "t.json"
    assert run(files / "b.npy", "--axes", "CYX", "-o", out).exit_code == 0
    data = json.loads(out.read_text())
    assert len(data) == 6 and data[0]["z"] is None and isinstance(data[1]["x"], float)
    result = run(files / "a.png", "-f", "jsonl")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["x"] == 30 and lines[0]["index"] is None


def test_normalized_coords_map_first_and_last_pixel_to_minus_one_and_one(tmp_path):
    x = np.zeros((5, 9))
    x[4, 0] = 1
    np.save(tmp_path / "n.npy", x)
    rows = table(run(tmp_path / "n.npy", "--coords", "normalized", "-m", "argmax").stdout)
    assert (float(rows[0]["x"]), float(rows[0]["y"])) == (-1.0, 1.0)


def test_output_over_an_input_is_refused(files):
    result = run(files / "a.png", "-o", files / "a.png")
    assert result.exit_code == 2 and "never writes over an input" in result.stderr
    assert cv2.imread(str(files / "a.png")) is not None


def test_stdout_carries_the_table_and_nothing_else(files):
    result = run(files / "a.png", files / "missing.png")
    assert result.stdout.splitlines()[0] == "path,index,peak,method,x,y,z,value"
    assert all("peakloc:" not in line for line in result.stdout.splitlines())
    assert "1 failed" in result.stderr


def test_every_command_and_option_has_help():
    for command in (main, find):
        assert command.help
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, param.name
    assert StrictRunner().invoke(main, ["find", "--help"]).exit_code == 0


def test_version_prints_the_version():
    from peakloc import __version__

    result = StrictRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def _modules_after(args, tmp_path, watch=("torch", "cv2", "tifffile", "rich", "zarr", "dask", "distributed")):
    code = (
        "import sys, runpy; sys.argv = ['peakloc', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('peakloc', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('MODULES', ' '.join(m for m in HEAVY if m in sys.modules))"
    )
    code = code.replace("HEAVY", repr(tuple(watch)))
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=tmp_path)
    return out.stdout.rsplit("MODULES", 1)[1].split()


def test_help_and_version_import_no_heavy_module(tmp_path):
    assert _modules_after(["--help"], tmp_path) == []
    assert _modules_after(["--version"], tmp_path) == []


def test_find_on_npy_with_cpu_device_imports_no_torch_cv2_or_tifffile(tmp_path):
    np.save(tmp_path / "a.npy", np.eye(5))
    assert _modules_after(["find", "a.npy", "--device", "cpu"], tmp_path) == []


def test_find_on_grey_png_imports_no_torch_cv2_or_tifffile(files):
    assert _modules_after(["find", str(files / "a.png")], files) == []


def test_find_on_colour_png_imports_cv2_alone(tmp_path):
    cv2.imwrite(str(tmp_path / "c.png"), np.full((8, 9, 3), 40, np.uint8))
    assert _modules_after(["find", "c.png"], tmp_path) == ["cv2"]


def test_short_options_parse_without_clicks_option_suggestions(tmp_path):
    # Click builds a NoSuchOption, with difflib's close matches, for every short option it first tries as a
    # long one: peakloc hands it the long form instead.
    np.save(tmp_path / "a.npy", np.eye(5))
    args = ["find", "a.npy", "-q", "-m", "argmax", "-o", "out.csv", "--device", "cpu"]
    assert _modules_after(args, tmp_path, watch=("difflib",)) == []
    assert table((tmp_path / "out.csv").read_text())[0]["method"] == "argmax"


def test_short_and_long_options_give_the_same_run(tmp_path):
    np.save(tmp_path / "a.npy", gaussian((20, 30), (8.3, 11.6)))
    short = StrictRunner().invoke(main, ["find", str(tmp_path / "a.npy"), "-q", "-m", "argmax,gaussian", "-o", "-"])
    long = StrictRunner().invoke(
        main, ["find", str(tmp_path / "a.npy"), "--quiet", "--method", "argmax,gaussian", "--output", "-"]
    )
    assert short.exit_code == long.exit_code == 0
    assert short.output == long.output


def test_installed_command_runs_end_to_end(files):
    exe = [sys.executable, "-m", "peakloc"]
    out = subprocess.run(
        [*exe, "find", str(files / "a.png"), str(files / "nope.png"), "-q"], capture_output=True, text=True
    )
    assert out.returncode == 1
    assert out.stderr == f"peakloc: error: {files / 'nope.png'}: no such file or directory\n"
    assert table(out.stdout)[0]["x"] == "30"


def test_several_peaks_give_ranked_rows_and_softargmax_only_at_rank_one(tmp_path):
    heat = gaussian((40, 60), (10.2, 12.7)) + 0.8 * gaussian((40, 60), (30.6, 45.1))
    np.save(tmp_path / "two.npy", heat)
    rows = table(
        run(
            tmp_path / "two.npy",
            "--peaks",
            "3",
            "--min-distance",
            "3",
            "--threshold",
            "20%",
            "-m",
            "argmax,softargmax,gaussian",
        ).stdout
    )
    assert [(r["peak"], r["method"]) for r in rows] == [
        ("1", "argmax"),
        ("1", "softargmax"),
        ("1", "gaussian"),
        ("2", "argmax"),
        ("2", "gaussian"),
    ]
    np.testing.assert_allclose([float(rows[4]["y"]), float(rows[4]["x"])], [30.6, 45.1], atol=1e-3)


def test_extra_columns_come_after_the_contract_columns_only_when_asked(files):
    assert run(files / "a.png").stdout.splitlines()[0] == "path,index,peak,method,x,y,z,value"
    rows = table(run(files / "b.npy", "--axes", "CYX", "-m", "dark", "--extra").stdout)
    assert list(rows[0]) == [
        "path",
        "index",
        "peak",
        "method",
        "x",
        "y",
        "z",
        "value",
        "sigma",
        "amplitude",
        "snr",
        "fallback",
        "x_err",
        "y_err",
        "z_err",
        "split",
    ]
    assert abs(float(rows[0]["sigma"]) - 2) < 0.3 and rows[0]["fallback"] == "False"


def test_fallbacks_are_reported_on_stderr(tmp_path):
    x = np.zeros((10, 10))
    x[0, 0] = 1
    np.save(tmp_path / "corner.npy", x)
    result = run(tmp_path / "corner.npy", "-m", "dark", "-q")
    assert result.exit_code == 0 and "dark kept the integer peak for 1 peak" in result.stderr
    assert table(result.stdout)[0]["x"] == "0.0"


def test_bad_threshold_is_a_usage_error(files):
    assert run(files / "a.png", "--threshold", "lots").exit_code == 2
    result = run(files / "a.png", "--threshold", "5xd")
    assert result.exit_code == 2 and "noise deviations like '5sd'" in result.stderr


def test_a_threshold_in_noise_deviations_keeps_spots_and_drops_the_noise(tmp_path):
    rng = np.random.default_rng(3)
    heat = 100 + rng.normal(0, 2, (60, 80)) + 20 * gaussian((60, 80), (15, 20)) + 30 * gaussian((60, 80), (40, 55))
    np.save(tmp_path / "spots.npy", heat)
    rows = table(run(tmp_path / "spots.npy", "--peaks", "10", "--min-distance", "3", "--threshold", "5sd").stdout)
    found = sorted((int(r["y"]), int(r["x"])) for r in rows if r["method"] == "argmax")
    assert len(found) == 2 and np.abs(np.array(found) - [(15, 20), (40, 55)]).max() <= 1  # noise moves a pixel


@pytest.mark.parametrize("status", [0, 1, 2])
def test_the_command_freezes_the_collector_before_it_exits_with_its_status(monkeypatch, status):
    # The interpreter's last full collection at exit is skipped (frozen objects), whatever the status.
    import gc

    from peakloc import cli

    frozen = []

    def run():
        raise SystemExit(status)

    monkeypatch.setattr(cli, "main", run)
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    with pytest.raises(SystemExit) as exited:
        cli.entry()
    assert exited.value.code == status and frozen == [True]
