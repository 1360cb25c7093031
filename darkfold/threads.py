"""Worker threads for the engine, and keeping BLAS out of their way.

The engine splits each layer into independent parts (tiles of GEMM rows, blocks of
output channels, bands of output lines) and runs them on a few worker threads;
the numba kernels release the GIL and so does numpy's matrix product. Each
worker asks BLAS to stay single-threaded: BLAS threads that spin after a call
stall the next layer's workers (measured in PERF-NOTES.md: 3x slower).
"""

import contextlib
import threading

import numpy as np

from . import blas
from .options import default_threads
from .thread_flags import CALLER_ASLEEP, DONE, JOB, SPINNING, STARTED, spin_until, worker_wait

# Handing a part to a worker and waiting for it costs more than pooling, upsampling or copying
# fewer values takes (the README's engine section has the figures behind this bound).
MIN_SPLIT_VALUES = 1 << 17


_set_blas_threads = blas.set_threads
CAN_SET_BLAS_THREADS = _set_blas_threads is not None


@contextlib.contextmanager
def blas_threads(threads):
    """numpy's BLAS on ``threads`` threads in the calling thread while the block runs (None,
    or a BLAS that cannot be told: as it is)."""
    if threads is None or _set_blas_threads is None:
        yield
        return
    previous = _set_blas_threads(threads)
    try:
        yield
    finally:
        _set_blas_threads(previous)


def _single_threaded_blas():
    if _set_blas_threads is not None:
        _set_blas_threads(1)


class Workers:
    """The calling thread and ``threads - 1`` worker threads, which run the parts of one layer
    and wait for all of them. The caller takes part 0 itself.

    Inside ``spinning()`` (a forward pass) a thread that waits, for the next layer or for the
    others to finish, first spins on the flags (thread_flags.py) without the GIL: waking a
    sleeping thread costs 30-60 us on this project's VMs, and a forward pass waits ~25 times.
    Outside it, and after ~1 ms without work, they sleep on a condition. A spinning worker
    takes the GIL for a new job only once the caller's kernel has started (``started``, which
    the kernels set: thread_flags.announce), and marks its job done without it (worker_wait).
    """

    SPINS = 2_000_000  # ~1 ms
    START_SPINS = 100_000  # ~50 us, in case task(0) fails before its kernel starts

    def __init__(self, threads):
        self.threads = threads
        self.scratch = threading.local()  # per-thread reusable buffers
        self._shared = np.empty(0, np.float32)
        self._flags = np.zeros(DONE + threads, np.int64)
        self.started = self._flags[STARTED:STARTED + 1]  # for thread_flags.announce
        self._wake = threading.Condition()
        self._job = (0, None, 0)  # (job number, task, parts): read as one, so never mixed
        self._errors = [None] * threads
        self._closed = False
        for worker in range(1, threads):
            threading.Thread(target=self._serve, args=(worker,), name=f"darkfold-{worker}", daemon=True).start()

    def _serve(self, worker):
        _single_threaded_blas()
        flags, done = self._flags, 0
        while True:
            if not worker_wait(flags, worker, done, self.SPINS, self.START_SPINS):
                with self._wake:
                    self._wake.notify_all()  # a caller asleep in _wait_for
                    while flags[JOB] == done and not self._closed:
                        self._wake.wait()
            if self._closed:
                return
            # A worker that the last job did not need may wake late, when a newer job is
            # posted: it then does that one (taking the number and the task together).
            done, task, parts = self._job
            try:
                if worker < parts:
                    task(worker)
            except BaseException as error:  # noqa: BLE001 -- re-raised by run() in the calling thread
                self._errors[worker] = error

    @contextlib.contextmanager
    def spinning(self):
        """Waiting threads spin instead of sleeping while the block runs, unless there are more
        threads than CPUs: a spinning thread would then hold a CPU that a working one needs."""
        self._flags[SPINNING] = self.threads <= default_threads()
        try:
            yield
        finally:
            self._flags[SPINNING] = 0

    def run(self, task, parts, announces=False):
        """Call ``task(part)`` for ``part`` in ``range(parts)`` (at most ``threads``) across the
        threads; then raise the first error any part raised. ``announces``: task(0) calls a
        kernel that sets ``started`` as it starts, and spinning workers wait for it."""
        if parts <= 1:
            if parts == 1:
                task(0)
            return
        if self._closed:
            raise RuntimeError("darkfold: these worker threads were closed")
        if parts > self.threads:
            raise ValueError(f"{parts} parts for {self.threads} threads")
        flags = self._flags
        with self._wake:
            job = self._job[0] + 1
            self._job = (job, task, parts)
            flags[STARTED] = not announces
            flags[JOB] = job
            self._wake.notify_all()
        errors = []
        try:
            task(0)
        except BaseException as error:  # noqa: BLE001 -- raised below, once the others are done
            errors.append(error)
        for worker in range(1, parts):  # the next layer must not start while a part of this one runs
            self._wait_for(worker, job)
            errors.append(self._errors[worker])
            self._errors[worker] = None
        error = next((error for error in errors if error is not None), None)
        if error is not None:
            raise error

    def _wait_for(self, worker, job):
        flags = self._flags
        if flags[SPINNING] and spin_until(flags, DONE + worker, job, self.SPINS):
            return
        # Asleep, the caller needs a notify: a spinning worker that sees CALLER_ASLEEP leaves
        # its spin to give one (marking its job done came first, so a late one is not missed).
        with self._wake:
            flags[CALLER_ASLEEP] = 1
            try:
                while flags[DONE + worker] != job:
                    self._wake.wait()
            finally:  # also on KeyboardInterrupt: set, it would keep the workers from spinning
                flags[CALLER_ASLEEP] = 0

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
        with self._wake:
            self._closed = True
            self._wake.notify_all()
