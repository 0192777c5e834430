"""Failures and limits at the command line: every input fails alone, outputs land safely, nothing is silent."""

import os
import signal
import stat
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from peakloc.cli import main
from peakloc.run import batch

from .conftest import StrictRunner, gaussian
from .io.test_probe import png_header


def find(*args, runner=None, input=None):
    return (runner or StrictRunner()).invoke(main, ["find", *map(str, args)], input=input)


def lines(text):
    return text.splitlines()


@pytest.fixture
def good(tmp_path):
    heat = np.zeros((20, 30), np.uint8)
    heat[5, 7] = 200
    cv2.imwrite(str(tmp_path / "good.png"), heat)
    return tmp_path / "good.png"


def test_an_internal_error_is_one_line_that_says_so_and_other_rows_are_kept(tmp_path, good, monkeypatch):
    np.save(tmp_path / "bug.npy", np.eye(5, dtype=np.float32))
    real = batch.locate

    def buggy(heatmaps, layout, settings, budget=None, slabs=None):
        if heatmaps.dtype == np.float32:
            raise TypeError("unsupported operand\nsecond line")
        return real(heatmaps, layout, settings, budget, slabs)

    monkeypatch.setattr(batch, "locate", buggy)
    result = find(good, tmp_path / "bug.npy", "-q", runner=CliRunner())  # production: no re-raising
    assert result.exit_code == 1
    assert lines(result.stderr) == [
        f"peakloc: error: {tmp_path / 'bug.npy'}: internal error (TypeError: unsupported operand); "
        "please report it with --debug"
    ]
    assert [r.split(",")[0] for r in lines(result.stdout)[1:]] == [str(good)] * 2


def test_debug_prints_the_traceback_after_the_error_line(tmp_path, monkeypatch):
    np.save(tmp_path / "bug.npy", np.eye(5, dtype=np.float32))
    monkeypatch.setattr(batch, "locate", lambda *a: 1 / 0)
    result = find(tmp_path / "bug.npy", "-q", "--debug", runner=CliRunner())
    err = lines(result.stderr)
    assert err[0].endswith("internal error (ZeroDivisionError: division by zero); please report it with --debug")
    assert err[1] == "Traceback (most recent call last):" and err[-1] == "ZeroDivisionError: division by zero"


def test_the_test_suite_sees_internal_errors_raised(tmp_path, monkeypatch):
    np.save(tmp_path / "bug.npy", np.eye(5, dtype=np.float32))
    monkeypatch.setattr(batch, "locate", lambda *a: 1 / 0)
    assert isinstance(find(tmp_path / "bug.npy").exception, ZeroDivisionError)


def test_memory_error_fails_its_input_alone(tmp_path, good, monkeypatch):
    np.save(tmp_path / "big.npy", np.eye(5, dtype=np.float32))
    real = batch.locate

    def exhausted(heatmaps, layout, settings, budget=None, slabs=None):
        if heatmaps.dtype == np.float32:
            raise MemoryError
        return real(heatmaps, layout, settings, budget, slabs)

    monkeypatch.setattr(batch, "locate", exhausted)
    result = find(tmp_path / "big.npy", good, "-q")
    assert result.exit_code == 1 and len(lines(result.stdout)) == 3
    assert "big.npy: out of memory" in result.stderr


def test_a_bomb_fails_before_it_is_decoded_with_its_size(tmp_path, good):
    (tmp_path / "bomb.png").write_bytes(png_header(30000, 30000))
    result = find(tmp_path / "bomb.png", good, "--max-memory", "256MiB", "-q")
    assert result.exit_code == 1 and len(lines(result.stdout)) == 3
    assert lines(result.stderr) == [
        f"peakloc: error: {tmp_path / 'bomb.png'}: needs about 4.2 GiB of memory (30000x30000 uint8, 858.3 MiB as "
        "stored), more than the memory budget of 256.0 MiB (--max-memory)"
    ]


def test_an_image_larger_than_opencv_decodes_says_so(tmp_path):
    (tmp_path / "huge.png").write_bytes(png_header(60000, 60000))
    result = find(tmp_path / "huge.png", "-q")
    assert lines(result.stderr) == [
        f"peakloc: error: {tmp_path / 'huge.png'}: image of 60000x60000 pixels is larger than OpenCV decodes (2^30)"
    ]


@pytest.mark.parametrize("size", ["0", "-1GiB", "12 parsecs", "150%", "0%"])
def test_a_bad_budget_is_a_usage_error(good, size):
    result = find(good, "--max-memory", size)
    assert result.exit_code == 2 and "--max-memory" in result.stderr


def test_budget_sizes_and_default_are_in_help():
    result = StrictRunner().invoke(main, ["find", "--help"])
    assert "--max-memory SIZE" in result.stdout and "50% of this machine's memory" in result.stdout


@pytest.mark.parametrize("width", ["0.01", "0.49", "-1"])
def test_smoothing_narrower_than_half_a_pixel_is_a_usage_error(good, width):
    result = find(good, "--smooth", width)
    assert result.exit_code == 2 and "--smooth" in result.stderr


def test_decoder_noise_becomes_warning_lines_of_its_input(tmp_path):
    img = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "a.jpg"), img)
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "short.jpg").write_bytes(data[:-200] + b"\xff\xd9")
    out = subprocess.run(
        [sys.executable, "-m", "peakloc", "find", str(tmp_path / "short.jpg"), "-q"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert lines(out.stderr) == [
        f"peakloc: warning: {tmp_path / 'short.jpg'}: Corrupt JPEG data: premature end of data segment"
    ]


def test_a_corrupt_png_is_one_error_line_and_no_libpng_text(tmp_path, good):
    data = bytearray(good.read_bytes())
    data[60:70] = b"\0" * 10
    (tmp_path / "bad.png").write_bytes(bytes(data))
    out = subprocess.run(
        [sys.executable, "-m", "peakloc", "find", str(tmp_path / "bad.png"), str(good), "-q"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1 and len(lines(out.stdout)) == 3
    assert lines(out.stderr) == [
        f"peakloc: error: {tmp_path / 'bad.png'}: cannot decode image (corrupt, truncated, or not a PNG file)"
    ]


# ------------------------------------------------------------------------------------------ outputs


def test_output_through_a_symlink_replaces_the_target_and_keeps_the_link(tmp_path, good):
    (tmp_path / "real.csv").write_text("old\n")
    (tmp_path / "link.csv").symlink_to(tmp_path / "real.csv")
    assert find(good, "-o", tmp_path / "link.csv", "-q").exit_code == 0
    assert (tmp_path / "link.csv").is_symlink()
    assert (tmp_path / "real.csv").read_text().startswith("path,index,peak")


def test_output_to_a_fifo_is_written_straight_through(tmp_path, good):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE, text=True)
    out = subprocess.run([sys.executable, "-m", "peakloc", "find", str(good), "-o", str(fifo), "-q"])
    assert out.returncode == 0 and reader.communicate(timeout=30)[0].startswith("path,index,peak")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_output_to_dev_stdout_and_dev_null_never_replaces_them(good):
    before = os.stat("/dev/null")
    out = subprocess.run(
        [sys.executable, "-m", "peakloc", "find", str(good), "-o", "/dev/stdout", "-q"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("path,index,peak")
    assert subprocess.run([sys.executable, "-m", "peakloc", "find", str(good), "-o", "/dev/null", "-q"]).returncode == 0
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino


def test_output_to_process_substitution_is_written_through(tmp_path, good):
    script = f"{sys.executable} -m peakloc find {good} -q -o >(cat > {tmp_path / 't.csv'}); sleep 0.5"
    assert subprocess.run(["bash", "-c", script]).returncode == 0
    assert (tmp_path / "t.csv").read_text().startswith("path,index,peak")


def test_an_output_folder_that_is_missing_or_read_only_is_a_usage_error_before_reading(tmp_path, good):
    result = find(good, "-o", tmp_path / "missing" / "t.csv")
    assert result.exit_code == 2 and "does not exist" in result.stderr
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("root writes into read-only folders")
        result = find(good, "-o", locked / "t.csv")
        assert result.exit_code == 2 and "Permission denied" in result.stderr
    finally:
        locked.chmod(0o700)


def _slow_run(tmp_path, count=2000):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(count):
        np.save(folder / f"m{i:04d}.npy", gaussian((96, 96), (40, 50), 3.0))
    return folder


@pytest.mark.parametrize("signum,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_signal_removes_the_partial_table_and_exits_with_its_status(tmp_path, signum, status):
    folder = _slow_run(tmp_path)
    table = tmp_path / "t.csv"
    process = subprocess.Popen(
        [sys.executable, "-m", "peakloc", "find", str(folder), "-m", "all", "--peaks", "3", "-o", str(table)],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while not any(p.name.startswith(".t.csv.") for p in tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    os.killpg(process.pid, signum)  # the whole group, as a terminal's ^C reaches every process of the job
    _, err = process.communicate(timeout=30)
    assert process.returncode == status
    assert [p.name for p in tmp_path.iterdir() if p.name != "many"] == []
    assert "Traceback" not in err and "ForkPoolWorker" not in err and "KeyboardInterrupt" not in err


# ----------------------------------------------------------------------------------- nothing silent


def test_inputs_that_name_no_file_exit_1_with_a_line(tmp_path):
    (tmp_path / "empty").mkdir()
    result = find(tmp_path / "empty")
    assert result.exit_code == 1
    assert lines(result.stderr) == [
        f"peakloc: warning: {tmp_path / 'empty'}: folder has no supported file (.npy, .png, .tif, .jpg, ...)",
        f"peakloc: error: no input file: {tmp_path / 'empty'} names no file to read",
    ]


def test_an_empty_stdin_list_warns(good):
    result = find("-", good, input="\n")
    assert result.exit_code == 0 and "peakloc: warning: -: standard input lists no path" in result.stderr


def test_no_input_argument_stays_a_usage_error():
    assert StrictRunner().invoke(main, ["find"]).exit_code == 2


def test_no_peak_above_the_threshold_warns(tmp_path):
    np.save(tmp_path / "c.npy", np.stack([gaussian((20, 20), (5, 5)), 0.2 * gaussian((20, 20), (9, 9))]))
    result = find(tmp_path / "c.npy", "--axes", "CYX", "--threshold", "0.5", "-q")
    assert result.exit_code == 0
    assert lines(result.stderr) == [
        f"peakloc: warning: {tmp_path / 'c.npy'}: no peak above the threshold 0.5 in heatmap C=1"
    ]
    result = find(tmp_path / "c.npy", "--axes", "CYX", "--threshold", "150%", "-q")
    assert "no peak above the threshold 150% in heatmaps C=0, C=1" in result.stderr and result.stdout.count("\n") == 1


# ------------------------------------------------------------------------------------- what users feed


@pytest.mark.parametrize("compression", ["lzw", "jpeg", "zstd", "deflate", "zlib"])
def test_compressed_tiffs_are_read(tmp_path, compression):
    heat = np.zeros((32, 48), np.uint8)
    heat[10:13, 20:23] = 250
    tifffile.imwrite(tmp_path / "c.tif", heat, compression=compression)
    result = find(tmp_path / "c.tif", "-m", "argmax", "-q")
    assert result.exit_code == 0, result.stderr
    assert lines(result.stdout)[1].split(",")[4:6] == ["20", "10"] or compression == "jpeg"  # lossy


def test_axes_override_a_planar_rgba_guess(tmp_path):
    stack = np.zeros((4, 16, 16), np.uint8)
    for z in range(4):
        stack[z, 3 + z, 5 + 2 * z] = 200
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="rgb", planarconfig="separate", extrasamples=[2])
    rows = lines(find(tmp_path / "s.tif", "--axes", "ZYX", "-m", "argmax", "-q").stdout)
    assert len(rows) == 2 and rows[1].split(",")[4:7] == ["5", "3", "0"]
    rows = lines(find(tmp_path / "s.tif", "--axes", "CYX", "-m", "argmax", "-q").stdout)
    assert [r.split(",")[1] for r in rows[1:]] == ["C=0", "C=1", "C=2", "C=3"]


@pytest.fixture
def jet(tmp_path):
    values = np.round(255 * gaussian((256, 256), (136, 209), 20)).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "jet.png"), cv2.applyColorMap(values, cv2.COLORMAP_JET))
    return tmp_path / "jet.png"


def test_a_jet_coloured_heatmap_is_decoded_by_its_colour_map(jet):
    result = find(jet, "--decode-colormap", "jet", "-m", "argmax,gaussian", "-q")
    assert result.exit_code == 0 and result.stderr == ""
    argmax, gaussian_row = (r.split(",") for r in lines(result.stdout)[1:])
    assert abs(int(argmax[4]) - 209) <= 1 and abs(int(argmax[5]) - 136) <= 1  # grey gave x 205, y 117
    assert abs(float(gaussian_row[4]) - 209) < 0.05 and abs(float(gaussian_row[5]) - 136) < 0.05


def test_without_the_option_a_colour_mapped_image_warns(jet):
    result = find(jet, "-m", "argmax", "-q")
    assert lines(result.stderr) == [
        f"peakloc: warning: {jet}: its colours lie on OpenCV's jet colour map: read as grey (luminance), which is "
        "not the heatmap's values; pass --decode-colormap jet to decode them"
    ]


def test_an_unknown_colour_map_is_a_usage_error(jet):
    assert find(jet, "--decode-colormap", "rainbowish").exit_code == 2


# ------------------------------------------------------------------------------------- text stays text


def test_csv_quotes_carriage_returns_and_reads_back(tmp_path):
    import csv

    name = tmp_path / "a\rb.png"
    heat = np.zeros((8, 8), np.uint8)
    heat[2, 3] = 9
    cv2.imwrite(str(tmp_path / "x.png"), heat)
    os.rename(tmp_path / "x.png", name)
    for fmt, delimiter in (("csv", ","), ("tsv", "\t")):
        out = find(name, "-f", fmt, "-q").stdout
        rows = list(csv.reader(out.splitlines(keepends=True), delimiter=delimiter))
        assert [r[0] for r in rows] == ["path", str(name), str(name)]


def test_overlay_names_keep_letters_of_any_script_and_never_start_with_a_dot(tmp_path):
    heat = np.zeros((8, 8), np.uint8)
    heat[2, 3] = 9
    for name in ["Zürich.png", "日本.png"]:
        cv2.imwrite(str(tmp_path / "x.png"), heat)
        os.rename(tmp_path / "x.png", tmp_path / name)
    np.save(tmp_path / ".png.npy", heat)
    result = find(
        tmp_path / "Zürich.png", tmp_path / "日本.png", tmp_path / ".png.npy", "--overlay", tmp_path / "ov", "-q"
    )
    assert result.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "ov").iterdir()) == ["Zürich.png", "index.html", "png.png", "日本.png"]


def test_a_sigint_whose_interrupt_a_finaliser_swallows_still_ends_the_run_with_130(tmp_path):
    # Python raises ^C's KeyboardInterrupt wherever the main thread is; raised inside a finaliser it is
    # printed and dropped ("Exception ignored in"), and the run would go on to its end with status 0. The
    # handler arms the watchdog first, as for SIGTERM: the run ends with 130, its partial table removed.
    partial = tmp_path / ".t.csv.partial"
    partial.write_text("path\n")
    code = (
        "import os, signal, threading, peakloc.cli as c\n"
        "c.SIGNAL_GRACE = 0.2\n"
        "class Finalised:\n"
        "    def __del__(self):\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        sum(range(1000))  # the handler runs here, inside the finaliser\n"
        f"with c._signals_end_the_run(lambda: os.unlink({str(partial)!r})):\n"
        "    Finalised()\n"
        "    stuck = threading.Lock()\n"
        "    stuck.acquire()\n"
        "    stuck.acquire(timeout=10)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 130 and not partial.exists(), done.stderr


def test_signals_that_the_caller_ignores_stay_ignored_during_a_run():
    from peakloc import cli

    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        with cli._signals_end_the_run():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)


def test_a_signalled_run_whose_main_thread_is_stuck_still_ends_with_its_status(tmp_path):
    # The main thread waits on a lock nobody will release (as on a pool's lock that the signal broke): the
    # watchdog armed by the signal removes the partial table and ends the process with the signal's status.
    partial = tmp_path / ".t.csv.partial"
    partial.write_text("path\n")
    code = (
        "import os, threading, peakloc.cli as c\n"
        "c.SIGNAL_GRACE = 0.2\n"
        f"c._watchdog(15, lambda: os.unlink({str(partial)!r}))\n"
        "stuck = threading.Lock()\n"
        "stuck.acquire()\n"
        "stuck.acquire()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 143 and not partial.exists(), done.stderr
