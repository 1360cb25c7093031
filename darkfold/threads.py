"""Worker threads for the engine, and keeping BLAS out of their way.

The engine splits each layer into independent parts (tiles of GEMM rows, blocks of
output channels, bands of output lines) and runs them on a few worker threads;
the numba kernels release the GIL and so does numpy's matrix product. Each
worker asks BLAS to stay single-threaded: BLAS threads that spin after a call
stall the next layer's workers (measured in PERF-NOTES.md: 3x slower).
"""

import contextlib
import ctypes
import glob
import os
import threading
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor

import numpy as np


# Waking a worker and waiting for it costs 30-60 us on this project's VMs: more than pooling,
# upsampling or adding 100K values takes (measured: 13x13x512 maxpool 0.06 ms alone, 0.10 split).
MIN_SPLIT_VALUES = 1 << 17


def default_threads():
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _openblas_thread_setter():
    """numpy's bundled OpenBLAS call that sets the calling thread's BLAS threads, or None.

    ``openblas_set_num_threads_local`` (OpenBLAS >= 0.3.27) affects only the calling
    thread, so the user's own numpy calls keep their threads. With another BLAS, or an
    older OpenBLAS, the engine still works; the workers' products may just contend.
    """
    folder = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for path in sorted(glob.glob(os.path.join(folder, "*openblas*"))):
        try:
            setter = ctypes.CDLL(path).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        setter.argtypes = [ctypes.c_int]
        setter.restype = ctypes.c_int  # the thread's previous setting
        return setter
    return None


_set_blas_threads = _openblas_thread_setter()


def _single_threaded_blas():
    if _set_blas_threads is not None:
        _set_blas_threads(1)


class Workers:
    """The calling thread and ``threads - 1`` pool threads, which run the parts of one layer
    and wait for all of them. The caller takes part 0 itself: waking one thread fewer per
    layer saves ~35 us, a few percent of a small model's forward pass."""

    def __init__(self, threads):
        self.threads = threads
        self.scratch = threading.local()  # per-thread reusable buffers
        self._shared = np.empty(0, np.float32)
        self._pool = None
        if threads > 1:
            self._pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="darkfold",
                                            initializer=_single_threaded_blas)

    @contextlib.contextmanager
    def single_threaded_blas(self):
        """BLAS single-threaded in the calling thread too, for the length of the block."""
        previous = _set_blas_threads(1) if _set_blas_threads is not None else None
        try:
            yield
        finally:
            if previous is not None:
                _set_blas_threads(previous)

    def run(self, task, parts):
        """Call ``task(part)`` for ``part`` in ``range(parts)`` across the threads; re-raise errors."""
        others = [self._pool.submit(task, part) for part in range(1, parts)] if parts > 1 else []
        try:
            if parts > 0:
                task(0)
        finally:
            futures.wait(others)  # the next layer must not start while one of these runs
        for other in others:
            other.result()

    def split(self, task, count, values):
        """Call ``task(start, stop)`` over ``range(count)`` cut into one band per thread; for a
        task that touches fewer than MIN_SPLIT_VALUES ``values`` in all, one band in this thread."""
        parts = min(self.threads, count) if values >= MIN_SPLIT_VALUES else min(1, count)
        bounds = [count * i // parts for i in range(parts + 1)]
        self.run(lambda part: task(bounds[part], bounds[part + 1]), parts)

    def buffer(self, name, size):
        """A float32 scratch array of ``size`` values owned by the calling thread (reused)."""
        array = getattr(self.scratch, name, None)
        if array is None or array.size < size:
            array = np.empty(size, np.float32)
            setattr(self.scratch, name, array)
        return array[:size]

    def shared(self, size):
        """A float32 scratch array of ``size`` values that all threads of one layer share."""
        if self._shared.size < size:
            self._shared = np.empty(size, np.float32)
        return self._shared[:size]

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=False)
