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


def paths(found):
    return [i.path for i in found.inputs]


def test_a_directory_gives_its_supported_files_by_name(tree):
    found = expand([str(tree)], False, io.StringIO())
    assert found.inputs == [Input(str(tree / "a.npy")), Input(str(tree / "b.png"))] and found.notes == []


def test_recursive_enters_subfolders_in_path_order(tree):
    got = paths(expand([str(tree)], True, io.StringIO()))
    assert got == [str(tree / p) for p in ["a.npy", "b.png", "sub/c.tif", "sub/deeper/d.PNG"]]


def test_files_are_kept_as_given_even_missing_ones(tree):
    got = expand([str(tree / "b.png"), "missing.png", str(tree / "notes.txt")], False, io.StringIO())
    assert paths(got) == [str(tree / "b.png"), "missing.png", str(tree / "notes.txt")]


def test_dash_reads_paths_from_stdin_one_per_line_skipping_blank_lines(tree):
    stdin = io.StringIO(f"{tree / 'b.png'}\n\n{tree}\r\n")
    assert paths(expand(["-"], False, stdin)) == [str(tree / p) for p in ["b.png", "a.npy", "b.png"]]


def test_an_empty_stdin_list_is_a_note():
    assert expand(["-"], False, io.StringIO("\n")).notes == [("-", "standard input lists no path")]


def test_a_folder_without_supported_files_is_a_note(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("x")
    found = expand([str(tmp_path / "empty"), str(tmp_path / "text")], False, io.StringIO())
    assert found.inputs == []
    assert [where for where, _ in found.notes] == [str(tmp_path / "empty"), str(tmp_path / "text")]
    assert found.notes[0][1] == "folder has no supported file (.npy, .png, .tif, .jpg, ...)"


def test_an_unreadable_subfolder_under_recursive_is_a_note(tree, monkeypatch):
    real = os.scandir

    def scandir(path="."):
        if os.path.basename(os.fspath(path)) == "deeper":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found = expand([str(tree)], True, io.StringIO())
    assert str(tree / "sub" / "deeper" / "d.PNG") not in paths(found)
    assert found.notes == [(str(tree / "sub" / "deeper"), "cannot list folder: Permission denied; skipped")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_a_folder_that_cannot_be_listed_is_one_input_with_its_problem(tree):
    locked = tree / "sub"
    locked.chmod(0)
    try:
        got = expand([str(locked)], False, io.StringIO()).inputs
        assert got == [Input(str(locked), "cannot list directory: Permission denied")]
    finally:
        locked.chmod(0o755)
