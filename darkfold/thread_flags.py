"""The flags threads.Workers' threads share, and the numba functions that read and write them
without the GIL: a worker's wait for the next job, the caller's wait for a worker, and a
kernel's word that it has started.
"""

import numba
from numba.core import cgutils
from numba.extending import intrinsic

from .jit import kernel

# Indices into the flags: spinning allowed (1) or not (0); the job number; the calling thread's
# kernel started (announce); the calling thread asleep, waiting for a worker; then, for each
# worker, the last job it finished.
SPINNING, JOB, STARTED, CALLER_ASLEEP, DONE = range(5)


@intrinsic
def _load_acquire(typingctx, array, index):
    """``array[index]`` as an atomic load with acquire order: a plain load in a loop may be
    read once and hoisted out of it, and would never see another thread's store."""
    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        handle = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, handle, [args[1]])
        return builder.load_atomic(pointer, ordering="acquire", align=array_type.dtype.bitwidth // 8)

    return array.dtype(array, index), codegen


@intrinsic
def _store_release(typingctx, array, index, value):
    """``array[index] = value`` as an atomic store with release order: the store is neither
    delayed nor moved after the code that follows it."""
    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        handle = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, handle, [args[1]])
        item = context.cast(builder, args[2], signature.args[2], array_type.dtype)
        builder.store_atomic(item, pointer, ordering="release", align=array_type.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return numba.types.none(array, index, value), codegen


@kernel
def announce(started):
    """``started[0] = 1``, from a kernel that runs without the GIL. A worker thread that waits for
    the calling thread's kernel to start before it takes the GIL does not queue for the GIL
    behind the caller (threads.Workers.run)."""
    _store_release(started, 0, 1)


@numba.njit(cache=True, nogil=True)
def worker_wait(flags, worker, done, spins, start_spins):
    """A worker's end of job ``done`` and its wait for the next one (threads.Workers), without
    the GIL. Marks ``done`` finished, then reads the job number up to ``spins`` times while
    spinning is allowed and the caller is not asleep. Once a new job is posted, it waits up to
    ``start_spins`` reads more for the caller's kernel to start. True on a new job; False if the
    worker must take the slow path: sleep, and wake a caller that is asleep.

    One call from the end of a job to the start of the next: a worker that went back to Python
    in between would ask for the GIL while the calling thread held it, and waking from that
    wait takes longer than the whole hand-off this makes."""
    _store_release(flags, DONE + worker, done)
    for _ in range(spins):
        if _load_acquire(flags, SPINNING) == 0 or _load_acquire(flags, CALLER_ASLEEP) != 0:
            return False
        if _load_acquire(flags, JOB) != done:
            for _ in range(start_spins):
                if _load_acquire(flags, STARTED) != 0 or _load_acquire(flags, SPINNING) == 0:
                    break
            return True
    return False


@numba.njit(cache=True, nogil=True)
def spin_until(flags, index, value, spins):
    """Read ``flags[index]`` up to ``spins`` times, without the GIL, until it is ``value``;
    False if it is not by then, or if spinning is no longer allowed."""
    for _ in range(spins):
        if _load_acquire(flags, index) == value:
            return True
        if _load_acquire(flags, SPINNING) == 0:
            return False
    return False
