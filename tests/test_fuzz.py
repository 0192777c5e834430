"""Damaged files never cost a traceback, a good file's rows, or a line of stray stderr.

``make test`` runs a fixed seeded corpus of 320 damaged files with the good ones; ``make fuzz`` runs the
hypothesis property below with many more examples (``--hypothesis-profile=fuzz``).
"""

import csv
import io
import subprocess
import sys
from collections import Counter

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peakloc.io.inputs import Input
from peakloc.run.batch import Job, run_chunk
from peakloc.run.settings import Settings

from .fuzz_corpus import KINDS, corpus, mutate, seeds

BUDGET = ["--max-memory", "512MiB"]


def _write(folder, files):
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def _find(*args):
    return subprocess.run(
        [sys.executable, "-m", "peakloc", "find", *map(str, args), "-m", "all", "-q", *BUDGET],
        capture_output=True,
        text=True,
    )


def test_a_damaged_corpus_fails_file_by_file_and_keeps_every_good_row(tmp_path):
    damaged = corpus()
    assert len(damaged) >= 300 and {name.split("_")[1] for name in damaged} == set(KINDS)
    good = _write(tmp_path / "good", seeds())
    bad = _write(tmp_path / "bad", damaged)
    clean = _find(good)
    assert clean.returncode == 0, clean.stderr
    mixed = _find(good, bad)
    assert mixed.returncode == 1
    assert "Traceback" not in mixed.stderr and "internal error" not in mixed.stderr
    assert all(line.startswith("peakloc: ") for line in mixed.stderr.splitlines())
    errors = Counter(line.split(": ")[2] for line in mixed.stderr.splitlines() if line.startswith("peakloc: error: "))
    assert max(errors.values()) == 1 and all(path.startswith(str(bad)) for path in errors)
    rows = list(csv.DictReader(io.StringIO(mixed.stdout)))
    assert [r for r in rows if r["path"].startswith(str(good))] == list(csv.DictReader(io.StringIO(clean.stdout)))


_SEEDS = seeds()
_CLEAN: dict[str, list] = {}


def _rows_alone(name, folder):
    if name not in _CLEAN:
        path = folder / f"clean_{name}"
        path.write_bytes(_SEEDS[name])
        _CLEAN[name] = run_chunk(
            Job(Settings(methods=("argmax", "softargmax", "gaussian")), reraise=True), [Input(str(path))]
        )[0].rows
    return _CLEAN[name]


# No max_examples here: hypothesis's profile sets it (100 by default, 3000 under `make fuzz`).
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(sorted(_SEEDS)),
    kind=st.sampled_from(KINDS),
    seed=st.integers(0, 2**32 - 1),
    neighbour=st.sampled_from(sorted(_SEEDS)),
)
def test_any_damage_is_one_error_or_rows_and_never_an_internal_error(tmp_path_factory, name, kind, seed, neighbour):
    folder = tmp_path_factory.mktemp("fuzz")
    bad = folder / f"bad_{name}"
    bad.write_bytes(mutate(name, _SEEDS[name], kind, np.random.default_rng(seed)))
    good = folder / f"good_{neighbour}"
    good.write_bytes(_SEEDS[neighbour])
    job = Job(Settings(methods=("argmax", "softargmax", "gaussian"), max_memory=512 * 1024**2), reraise=True)
    damaged, kept = run_chunk(job, [Input(str(bad)), Input(str(good))], 512 * 1024**2)  # bugs raise here
    assert len(damaged.errors) <= 1 and (damaged.errors or damaged.rows)
    assert kept.errors == [] and [{**r, "path": ""} for r in kept.rows] == [
        {**r, "path": ""} for r in _rows_alone(neighbour, folder)
    ]
