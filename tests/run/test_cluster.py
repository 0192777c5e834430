"""`peakloc find --dask` on a real cluster on loopback: the local run's table, faults survived.

Each cluster is a `dask scheduler` and `dask worker` processes started here on 127.0.0.1, each in its own
session so that a test can kill one whole worker; every wait is bounded.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest

distributed = pytest.importorskip("distributed", reason="the test install includes peakloc[dask]")

DASK = str(Path(sys.executable).parent / "dask")
PEAKLOC = [sys.executable, "-m", "peakloc", "find"]
#: Seconds any start, stop or run may take before the test fails.
WAIT = 60


def _until(condition, what: str, seconds: float = WAIT):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _start(args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [DASK, *args],
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )


def _stop(process: subprocess.Popen) -> None:
    for signum, seconds in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            return
        try:
            process.wait(seconds)
            return
        except subprocess.TimeoutExpired:
            continue


class Cluster:
    """A scheduler and its workers, with a client of our own to watch them."""

    def __init__(self, folder: Path, env: dict | None = None) -> None:
        self.folder, self.env = folder, env or {}
        self.file = folder / "scheduler.json"
        self.workers: list[subprocess.Popen] = []
        self.scheduler = _start(
            ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(self.file)],
            folder / "scheduler.log",
            self.env,
        )
        _until(lambda: self.file.exists() and self.file.stat().st_size, "the scheduler file")
        self.client = distributed.Client(scheduler_file=str(self.file), timeout=WAIT)
        self.address = self.client.scheduler.address

    def add_worker(self, *args: str) -> tuple[subprocess.Popen, str]:
        """Start one worker process (one thread); its process and address once it has joined."""
        before = set(self.client.scheduler_info()["workers"])
        log = self.folder / f"worker{len(self.workers)}.log"
        process = _start(
            ["worker", "--scheduler-file", str(self.file), "--nthreads", "1", "--host", "127.0.0.1"]
            + ["--no-dashboard", *args],
            log,
            self.env,
        )
        self.workers.append(process)
        joined = _until(lambda: set(self.client.scheduler_info()["workers"]) - before, "a worker to join")
        return process, joined.pop()

    def stop(self) -> None:
        self.client.close(timeout=10)
        for process in [*self.workers, self.scheduler]:
            _stop(process)

    def keys_run(self, prefix: str) -> int:
        """How many tasks whose key starts with ``prefix`` the scheduler has seen."""
        keys = self.client.run_on_scheduler(lambda dask_scheduler: [str(t[0]) for t in dask_scheduler.transition_log])
        return len({k for k in keys if k.startswith(prefix)})

    def keys_done(self, prefix: str) -> int:
        """How many tasks whose key starts with ``prefix`` have their result held by a worker now."""
        keys = self.client.run_on_scheduler(
            lambda dask_scheduler: [str(k) for k, task in dask_scheduler.tasks.items() if task.state == "memory"]
        )
        return sum(k.startswith(prefix) for k in keys)


@contextmanager
def cluster(folder: Path, workers: int = 2, env: dict | None = None, worker_args: tuple[str, ...] = ()):
    folder.mkdir(exist_ok=True)
    started = Cluster(folder, env)
    try:
        for _ in range(workers):
            started.add_worker(*worker_args)
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    with cluster(tmp_path_factory.mktemp("cluster")) as started:
        yield started


def run(args: list, cwd: Path, timeout: float = WAIT) -> subprocess.CompletedProcess:
    return subprocess.run([*PEAKLOC, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _messages(stderr: str) -> list[str]:
    """Stderr lines with the summary's seconds taken out."""
    return [re.sub(r", [0-9.]+ s$", ", S s", line) for line in stderr.splitlines()]


def _mixed_folder(folder: Path) -> None:
    """Good heatmaps of every kind, and bad files of every kind, 42 in all (three chunks)."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    for k in range(30):
        heat = (rng.random((40, 50)) * 50).astype(np.uint8)
        heat[k % 40, (3 * k) % 50] = 255
        cv2.imwrite(str(folder / f"frame{k:02d}.png"), heat)
    np.save(folder / "stack.npy", rng.random((3, 30, 20)).astype(np.float32))
    np.save(folder / "nan.npy", np.full((8, 8), np.nan))
    np.save(folder / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (folder / "truncated.png").write_bytes((folder / "frame00.png").read_bytes()[:60])
    (folder / "empty.tif").write_bytes(b"")
    (folder / "text.npy").write_text("not an array")
    np.save(folder / "int16.npy", (rng.random((64, 64)) * 1000).astype(np.int16))
    (folder / "zeros.png").write_bytes(b"\0" * 100)
    np.save(folder / "volume.npy", rng.random((6, 20, 20)))
    np.save(folder / "inf.npy", np.array([[1.0, np.inf], [2.0, -np.inf]]))
    h5py = pytest.importorskip("h5py")
    with h5py.File(folder / "probabilities.h5", "w") as f:
        f.create_dataset("exported_data", data=rng.random((2, 24, 30)).astype(np.float32), chunks=(1, 8, 10))
    with h5py.File(folder / "two.h5", "w") as f:  # two datasets, none named: an error line
        f["a"], f["b"] = np.eye(4), np.eye(5)


def test_a_folder_of_good_and_bad_files_gives_the_local_table_and_errors(shared, tmp_path):
    _mixed_folder(tmp_path / "data")
    options = ["data", "--peaks", "3", "-m", "all", "--extra"]
    local = run([*options, "-o", "local.csv"], tmp_path)
    remote = run([*options, "-o", "dask.csv", "--dask", shared.address], tmp_path)
    assert local.returncode == remote.returncode == 1
    assert (tmp_path / "dask.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    assert _messages(remote.stderr) == _messages(local.stderr)
    assert len([m for m in _messages(local.stderr) if "error" in m]) == 7
    assert shared.keys_run("peakloc-chunk") >= 3


def test_a_scheduler_file_names_the_cluster(shared, tmp_path):
    np.save(tmp_path / "a.npy", np.eye(6))
    local = run(["a.npy", "-q"], tmp_path)
    remote = run(["a.npy", "-q", "--dask", shared.file], tmp_path)
    assert (remote.returncode, remote.stdout, remote.stderr) == (0, local.stdout, "")


def test_a_volume_larger_than_the_budget_runs_its_slabs_as_tasks(shared, tmp_path):
    rng = np.random.default_rng(1)
    volume = rng.random((96, 128, 128)).astype(np.float32) * 0.1
    for z, y, x in rng.integers(4, 92, (12, 3)):
        volume[z, y, x] += 1 + rng.random()
    # 6 MiB in a 256 KiB budget: slabs of 32 rows (the soft-argmax sums' own slabs), three per pass; one
    # pass (the extremes, the soft-argmax and the local maxima candidates from one read of each slab).
    np.save(tmp_path / "volume.npy", volume)
    options = ["volume.npy", "--peaks", "8", "--min-distance", "3", "-m", "all", "--max-memory", "256KiB"]
    before = shared.keys_run("peakloc-slab")
    local = run([*options, "-o", "local.csv"], tmp_path)
    remote = run([*options, "-o", "dask.csv", "--dask", shared.address], tmp_path)
    assert local.returncode == remote.returncode == 0, remote.stderr
    assert (tmp_path / "dask.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    # The header; argmax, softargmax and 4 refinements of peak 1; argmax and 4 refinements of peaks 2 to 8.
    assert len((tmp_path / "local.csv").read_text().splitlines()) == 1 + 6 + 7 * 5
    assert shared.keys_run("peakloc-slab") - before == 3


def test_an_hdf5_dataset_larger_than_the_budget_runs_on_the_workers_by_its_path(shared, tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(2)
    volume = rng.random((48, 64, 64)).astype(np.float32) * 0.1
    for z, y, x in rng.integers(4, 44, (6, 3)):
        volume[z, y, x] += 1 + rng.random()
    with h5py.File(tmp_path / "run.h5", "w") as f:
        f["raw"] = volume[:4]
        f.create_dataset("maps/volume", data=volume, chunks=(8, 16, 16), compression="gzip")
    options = ["run.h5:/maps/volume", "--peaks", "6", "--min-distance", "3", "-m", "all", "--max-memory", "128KiB"]
    local = run([*options, "-o", "local.csv"], tmp_path)
    remote = run([*options, "-o", "dask.csv", "--dask", shared.address], tmp_path)
    assert local.returncode == remote.returncode == 0, remote.stderr
    assert (tmp_path / "dask.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    assert len((tmp_path / "local.csv").read_text().splitlines()) == 1 + 6 + 5 * 5


def test_overlays_are_written_by_the_workers_into_the_folder_given(shared, tmp_path):
    _mixed_folder(tmp_path / "data")
    local = run(["data", "-q", "--overlay", "local"], tmp_path)
    remote = run(["data", "-q", "--overlay", "remote", "--dask", shared.address], tmp_path)
    assert local.returncode == remote.returncode == 1
    names = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert len(names) >= 30
    assert sorted(p.name for p in (tmp_path / "remote").iterdir()) == names
    for name in names:
        assert (tmp_path / "remote" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name


def test_workers_read_inputs_named_by_url_themselves(shared, tmp_path):
    _mixed_folder(tmp_path / "data")
    urls = [p.as_uri() for p in sorted((tmp_path / "data").iterdir())]
    local = run([*urls, "-m", "all"], tmp_path)
    remote = run([*urls, "-m", "all", "--dask", shared.address], tmp_path)
    assert local.returncode == remote.returncode == 1
    assert remote.stdout == local.stdout
    assert _messages(remote.stderr) == _messages(local.stderr)


def _slow_inputs(folder: Path, count: int = 144) -> None:
    rng = np.random.default_rng(2)
    folder.mkdir()
    for k in range(count):
        np.save(folder / f"map{k:02d}.npy", rng.random((700, 700)))


def test_a_worker_killed_mid_run_loses_no_row(shared, tmp_path):
    _slow_inputs(tmp_path / "data")
    options = ["data", "--peaks", "20", "-m", "all", "-q"]
    local = run([*options, "-o", "local.csv"], tmp_path)
    victim, address = shared.add_worker()
    with (tmp_path / "err.txt").open("w") as err:
        remote = subprocess.Popen(
            [*PEAKLOC, *options, "-o", "dask.csv", "--dask", shared.address], cwd=tmp_path, stderr=err
        )
        _until(
            lambda: any(k.startswith("peakloc-chunk") for k in shared.client.processing().get(address, ())),
            "the worker to take a chunk",
        )
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(WAIT)
        assert remote.wait(WAIT * 2) == 0, (tmp_path / "err.txt").read_text()
    assert (tmp_path / "dask.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    assert local.returncode == 0


def test_an_input_that_kills_every_worker_it_reaches_fails_alone(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    good = np.zeros((30, 40), np.uint8)
    good[12, 30] = 200
    cv2.imwrite(str(data / "a_good.png"), good)
    # 12000^2 bytes decoded from a few KiB: far more than the workers' 200 MB memory limit, within the run's
    # budget, so the worker is killed by its nanny rather than the input refused.
    cv2.imwrite(str(data / "b_huge.png"), np.zeros((12000, 12000), np.uint8))
    cv2.imwrite(str(data / "c_good.png"), good.T.copy())
    local = run(["data/a_good.png", "data/c_good.png", "-q"], tmp_path)
    env = {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
    with cluster(tmp_path / "cluster", 1, env, ("--memory-limit", "200MB")) as small:
        remote = run(["data", "-q", "--max-memory", "20GiB", "--dask", small.address], tmp_path, WAIT * 2)
    assert remote.returncode == 1, remote.stderr
    assert remote.stdout == local.stdout, remote.stderr
    assert remote.stderr.splitlines() == [
        "peakloc: error: data/b_huge.png: killed every Dask worker that read it (out of memory, or a crash)"
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:{port}", "{folder}/no-such-scheduler.json", "not a cluster"])
def test_a_scheduler_that_cannot_be_reached_is_one_usage_line_within_15_s(tmp_path, address):
    np.save(tmp_path / "a.npy", np.eye(4))
    address = address.format(port=_free_port(), folder=tmp_path)
    started = time.monotonic()
    out = run(["a.npy", "--dask", address, "-o", "t.csv"], tmp_path)
    assert time.monotonic() - started < 15
    assert out.returncode == 2
    assert out.stderr.splitlines()[-1].startswith("Error: Invalid value for '--dask': ")
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "t.csv").exists()


#: `peakloc find` whose client waits 3 s before each fetch of results from the scheduler: a scheduler
#: killed once a chunk is done goes away while the client fetches that chunk's rows.
_SLOW_FETCH = """
import asyncio, runpy, sys
from distributed import Client

fetch = Client._gather_remote

async def slow_fetch(self, *args, **kwargs):
    await asyncio.sleep(3)
    return await fetch(self, *args, **kwargs)

Client._gather_remote = slow_fetch
sys.argv = ["peakloc", *sys.argv[1:]]
runpy.run_module("peakloc", run_name="__main__")
"""


@pytest.mark.parametrize("when", ["while a chunk runs", "while a chunk's rows are fetched"])
def test_a_scheduler_lost_mid_run_keeps_the_rows_done_and_says_so(tmp_path, when):
    # Losing it while rows were fetched left the run waiting for them forever.
    _slow_inputs(tmp_path / "data", 64)
    fetching = when == "while a chunk's rows are fetched"
    peakloc = [sys.executable, "-c", _SLOW_FETCH, "find"] if fetching else PEAKLOC
    with cluster(tmp_path / "cluster", 1) as doomed:
        with (tmp_path / "err.txt").open("w") as err:
            remote = subprocess.Popen(
                [*peakloc, "data", "-o", "dask.csv", "--dask", doomed.address], cwd=tmp_path, stderr=err
            )
            if fetching:
                _until(lambda: doomed.keys_done("peakloc-chunk"), "the first chunk's rows")
            else:
                _until(lambda: doomed.keys_run("peakloc-chunk"), "the first chunk")
            os.killpg(doomed.scheduler.pid, signal.SIGKILL)
            assert remote.wait(WAIT) == 1
    messages = (tmp_path / "err.txt").read_text().splitlines()
    assert re.fullmatch(r"peakloc: error: lost the Dask scheduler \(\w+\); \d+ inputs not run", messages[0])
    assert re.fullmatch(r"peakloc: 64 files, \d+ heatmaps, \d+ failed, [0-9.]+ s", messages[1])
    assert len(messages) == 2
    done = int(messages[1].split()[3])
    assert len((tmp_path / "dask.csv").read_text().splitlines()) == 1 + 2 * done


_LOG_PROBE = """
import logging, sys
import distributed  # its configuration gives Tornado's and its own loggers their handlers and levels
if sys.argv[1] == "quiet":
    from peakloc.run.cluster import quiet_dask_logs
    quiet_dask_logs()
logging.getLogger("tornado.application").error("Exception in callback: connection reset")
logging.getLogger("distributed.comm.tcp").error("connection closed")
"""


@pytest.mark.parametrize("mode", ["loud", "quiet"])
def test_dask_and_tornado_log_no_line_once_quietened(mode):
    # A lost scheduler had Tornado log a connection reset on stderr beside the run's one-line error.
    done = subprocess.run([sys.executable, "-c", _LOG_PROBE, mode], capture_output=True, text=True, timeout=WAIT)
    lines = done.stderr.splitlines()
    if mode == "loud":  # the premise: unquietened, both reach stderr
        assert any("tornado.application" in line for line in lines)
        assert any("distributed.comm.tcp" in line for line in lines)
    else:
        assert lines == []


def test_the_run_layer_takes_a_client(shared, tmp_path):
    from peakloc.io.inputs import Input
    from peakloc.run import batch
    from peakloc.run.settings import Settings

    _mixed_folder(tmp_path / "data")
    inputs = [Input(str(p)) for p in sorted((tmp_path / "data").iterdir())]
    job = batch.Job(Settings(methods=("argmax", "softargmax", "dark")))
    with batch.outcomes(job, inputs, shared.client) as results:
        remote = list(results)
    local = batch.run_chunk(job, inputs)
    assert [(o.path, o.rows, o.errors, o.warnings) for o in remote] == [
        (o.path, o.rows, o.errors, o.warnings) for o in local
    ]


_HEAP_PROBE = """
import resource, numpy as np
from peakloc.run.cluster import heap_kept

def faults(times=20, size=16 << 20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(times):
        np.ones(size, np.uint8)  # allocated, every page touched, freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

plain = faults()
with heap_kept() as kept:
    inside = faults()
after = faults()
print(kept, plain, inside, after)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_task_in_a_worker_whose_nanny_returns_freed_memory_at_once_keeps_its_heap_while_it_runs():
    # Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536: every 16 MiB array is mapped afresh and
    # its pages faulted in (fewer faults with transparent huge pages, but each time) unless heap_kept holds;
    # afterwards the nanny's thresholds are back.
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-c", _HEAP_PROBE], capture_output=True, text=True, env=env, timeout=WAIT)
    kept, plain, inside, after = out.stdout.split()
    assert kept == "True"
    assert int(inside) * 5 < int(plain) and int(after) * 2 > int(plain)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_worker_without_a_nanny_keeps_glibcs_own_adaptive_heap():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", _HEAP_PROBE], capture_output=True, text=True, env=env, timeout=WAIT)
    assert out.stdout.split()[0] == "False"


def test_a_run_taken_up_after_its_client_closed_ends_as_a_lost_scheduler(tmp_path, monkeypatch):
    # The next chunk went to the closed client: its ClosedClientError was a traceback, not the run's line.
    from peakloc.io.inputs import Input
    from peakloc.run import batch
    from peakloc.run import cluster as on_dask
    from peakloc.run.settings import Settings

    for name, value in (("MAX_CHUNK", 1), ("MIN_IN_FLIGHT", 1), ("IN_FLIGHT_PER_THREAD", 1)):
        monkeypatch.setattr(on_dask, name, value)
    monkeypatch.setattr(batch, "CHUNK", 1)  # a chunk a map, one in flight: the next is sent as one is taken
    for k in range(3):
        np.save(tmp_path / f"m{k}.npy", np.eye(4))
    inputs = [Input(str(tmp_path / f"m{k}.npy")) for k in range(3)]
    with cluster(tmp_path / "cluster", 1) as doomed:
        client = on_dask.connect(doomed.address, timeout=2)
        try:
            with batch.outcomes(batch.Job(Settings()), inputs, client) as results:
                assert next(results).path == inputs[0].path
                os.killpg(doomed.scheduler.pid, signal.SIGKILL)
                _until(lambda: client.status == "closed", "the client to give its scheduler up")
                with pytest.raises(on_dask.ClusterError, match=r"^lost the Dask scheduler \(\w+\)$"):
                    next(results)
        finally:
            client.close(timeout=5)
