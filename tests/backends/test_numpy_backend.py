import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from peakloc.backends import numpy_backend


def test_scratch_is_reused_by_its_thread_for_its_slot_only():
    first = numpy_backend.scratch("test-a", (100,), np.float32)
    again = numpy_backend.scratch("test-a", (10, 5), np.float64)  # a new shape and dtype, no larger: the same memory
    other_slot = numpy_backend.scratch("test-b", (100,), np.float32)
    assert again.shape == (10, 5) and again.dtype == np.float64
    assert np.shares_memory(first, again)
    assert not np.shares_memory(first, other_slot)
    elsewhere = []
    thread = threading.Thread(target=lambda: elsewhere.append(numpy_backend.scratch("test-a", (100,), np.float32)))
    thread.start()
    thread.join()
    assert not np.shares_memory(first, elsewhere[0])


def test_scratch_larger_than_the_limit_is_new_each_time():
    size = numpy_backend.SCRATCH_MAX_BYTES + 1
    first = numpy_backend.scratch("test-large", (size,), np.uint8)
    assert first.shape == (size,)
    assert not np.shares_memory(first, numpy_backend.scratch("test-large", (size,), np.uint8))


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="the platform has no CPU affinity to follow")
def test_default_threads_follow_the_cores_the_process_may_run_on():
    # A container, taskset or a cluster job's cpuset allows fewer cores than the machine has: threads for
    # every core of the machine would queue on the allowed ones.
    code = (
        "import os\n"
        "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "from peakloc.backends import numpy_backend\n"
        "print(numpy_backend.cores(), numpy_backend.DEFAULT_THREADS)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.split() == ["1", "1"]
