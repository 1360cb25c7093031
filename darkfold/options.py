"""Option values that the CLI and the API take alike, checked in one place.

Light on purpose: the CLI checks its arguments with these before it loads numba.
"""

import math
import numbers
import os

from .errors import ModelError


def check_probability(name, value):
    """``value`` as a float if it is a number from 0 to 1 (not NaN); else a ModelError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ModelError(f"{name}={value!r}: expected a number from 0 to 1", expected="a number from 0 to 1",
                         found=repr(value))
    return float(value)


def check_tolerance(tolerance):
    """``tolerance`` as a float, if it is a finite number of at least 0; else a ModelError."""
    if (isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real) or not math.isfinite(tolerance)
            or tolerance < 0):
        raise ModelError(f"tolerance={tolerance!r}: expected a finite number of at least 0",
                         expected="a finite number >= 0", found=repr(tolerance))
    return float(tolerance)


def default_threads():
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def thread_count(threads):
    """The worker threads to run for a ``threads=`` argument: every CPU for None, else ``threads``
    capped at the CPUs this process may use. Returns ``(count, note)``, ``note`` saying why
    ``threads`` was capped (None if it was not).

    More threads than CPUs only wait for one another (see ``Workers.spinning``), and each is
    an OS thread with its own stack: 100000 of them took 50 s to fail to start.
    """
    cpus = default_threads()
    if threads is None:
        return cpus, None
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise ModelError(f"threads={threads!r}: expected a whole number of at least 1 (or None: every CPU)",
                         expected="a whole number >= 1", found=repr(threads))
    if threads > cpus:
        return cpus, f"{threads} is more than the {cpus} CPUs this process may use; running {cpus} threads"
    return int(threads), None


NUMBA = "numba"
BACKENDS = (NUMBA, "onnxruntime", "openvino")  # backends.BACKENDS, and darkfold's own engine
AUTO = "auto"
F32, BF16 = "f32", "bf16"
PRECISIONS = (F32, BF16)
BATCH = 4  # images per forward pass when detecting on a list (detect.py), a batch size backends prepare for


def check_backend(backend, precision=F32):
    """``(backend, precision)`` if ``backend`` is one of ``BACKENDS`` or "auto" and ``precision``
    one of ``PRECISIONS``, bf16 only where OpenVINO may run; else a ModelError."""
    if backend not in (*BACKENDS, AUTO):
        raise ModelError(f"backend={backend!r}: expected one of {', '.join(map(repr, (*BACKENDS, AUTO)))}",
                         expected=f"one of {', '.join((*BACKENDS, AUTO))}", found=repr(backend))
    if precision not in PRECISIONS:
        raise ModelError(f"precision={precision!r}: expected 'f32' or 'bf16'", expected="'f32' or 'bf16'",
                         found=repr(precision))
    if precision == BF16 and backend not in ("openvino", AUTO):
        raise ModelError(f"precision='bf16' runs on backend='openvino'; backend={backend!r} computes in float32",
                         expected="backend='openvino'", found=repr(backend))
    return backend, precision
