import logging
import os
import subprocess
import sys
import warnings

import numpy as np

from peakloc.errors import PeaklocWarning
from peakloc.run.capture import captured


def test_user_warnings_become_notes_and_numerical_noise_does_not():
    with captured() as notes:
        warnings.warn("its colours lie on a map", PeaklocWarning, stacklevel=1)
        with np.errstate(all="warn"):
            np.log(np.zeros(1))
        warnings.warn("deprecated", DeprecationWarning, stacklevel=1)
    assert notes == ["its colours lie on a map"]


def test_what_c_libraries_write_to_fd_2_becomes_notes():
    with captured() as notes:
        os.write(2, b"libpng error: IDAT: incorrect data check\n\n")
        os.write(2, b"Corrupt JPEG data: premature end of data segment\n")
    assert notes == ["libpng error: IDAT: incorrect data check", "Corrupt JPEG data: premature end of data segment"]


def test_tifffiles_log_records_become_notes_and_never_reach_stderr(capfd):
    with captured() as notes:
        logging.getLogger("tifffile").warning("<TiffPage 0> invalid tag")
    assert notes == ["<TiffPage 0> invalid tag"] and capfd.readouterr().err == ""


def test_repeated_notes_appear_once():
    with captured() as notes:
        for _ in range(3):
            os.write(2, b"same line\n")
    assert notes == ["same line"]


def test_log_records_of_a_library_imported_inside_the_capture_become_notes():
    # A start imports no logging; a library that brings it inside a capture still has its records caught.
    code = (
        "import sys\n"
        "from peakloc.run.capture import captured\n"
        "assert 'logging' not in sys.modules\n"
        "with captured() as notes:\n"
        "    import logging\n"
        "    logging.getLogger('tifffile').warning('<TiffPage 0> invalid tag')\n"
        "print(notes)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (out.returncode, out.stdout, out.stderr) == (0, "['<TiffPage 0> invalid tag']\n", "")


def test_each_capture_gets_only_what_its_own_block_wrote_as_the_sink_fills_and_empties():
    lines = [(b"%d " % k) * 9000 for k in range(4)]  # 18 to 36 KB each: the sink is emptied between them
    for line in lines:
        with captured() as notes:
            os.write(2, line + b"\n")
        assert notes == [line.decode().strip()]
        with captured() as notes:
            pass
        assert notes == []


def test_a_capture_inside_another_gets_its_own_lines_and_the_outer_one_keeps_its_own():
    with captured() as outer:
        os.write(2, b"before\n")
        with captured() as inner:
            os.write(2, b"inside\n")
        os.write(2, b"after\n")
    assert (outer, inner) == (["before", "after"], ["inside"])


def test_stderr_and_the_warning_filters_come_back_when_the_block_raises(capfd):
    filters = list(warnings.filters)
    try:
        with captured():
            os.write(2, b"lost with the failure\n")
            raise ValueError("the block failed")
    except ValueError:
        pass
    os.write(2, b"to the terminal\n")
    assert capfd.readouterr().err == "to the terminal\n" and warnings.filters == filters
