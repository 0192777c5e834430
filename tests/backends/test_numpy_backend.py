import threading

import numpy as np

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
