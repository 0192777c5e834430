import io
import os

import pytest

from peakloc.io.inputs import Input, expand


@pytest.fixture
def tree(tmp_path):
    for name in ["b.png", "a.npy", "notes.txt", "sub/c.tif", "sub/deeper/d.PNG"]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return tmp_path


def test_a_directory_gives_its_supported_files_by_name(tree):
    assert expand([str(tree)], False, io.StringIO()) == [Input(str(tree / "a.npy")), Input(str(tree / "b.png"))]


def test_recursive_enters_subfolders_in_path_order(tree):
    paths = [i.path for i in expand([str(tree)], True, io.StringIO())]
    assert paths == [str(tree / p) for p in ["a.npy", "b.png", "sub/c.tif", "sub/deeper/d.PNG"]]


def test_files_are_kept_as_given_even_missing_ones(tree):
    got = expand([str(tree / "b.png"), "missing.png", str(tree / "notes.txt")], False, io.StringIO())
    assert [i.path for i in got] == [str(tree / "b.png"), "missing.png", str(tree / "notes.txt")]


def test_dash_reads_paths_from_stdin_one_per_line_skipping_blank_lines(tree):
    stdin = io.StringIO(f"{tree / 'b.png'}\n\n{tree}\r\n")
    assert [i.path for i in expand(["-"], False, stdin)] == [str(tree / p) for p in ["b.png", "a.npy", "b.png"]]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_a_folder_that_cannot_be_listed_is_one_input_with_its_problem(tree):
    locked = tree / "sub"
    locked.chmod(0)
    try:
        assert expand([str(locked)], False, io.StringIO()) == [
            Input(str(locked), "cannot list directory: Permission denied")
        ]
    finally:
        locked.chmod(0o755)
