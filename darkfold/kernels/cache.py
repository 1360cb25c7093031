"""numba's on-disk cache of the compiled kernels: whether it holds them yet, compiling the ones most
models run ahead of their first call (half of them in a helper process), and noticing when numba
compiles.

numba compiles a kernel on its first call in a process, unless its cache holds the kernel
(``cache=True``: files in the package's ``__pycache__`` folders, or under ``NUMBA_CACHE_DIR``).
That happens once per install and takes seconds, during which nothing else would tell the user
why the first call is slow: the compiles are logged on the ``darkfold`` logger, at INFO.

numba's compiler holds one lock per process, so threads compile one kernel at a time; two
processes compile two. The helper process compiles ``HELPER_SHARE`` into the cache while this
one compiles the rest, and this one then loads the helper's from the cache.
"""

import logging
import os
import subprocess
import sys
import tempfile
import threading
import time

from numba import types
from numba.core import event

from .im2col import conv_rows
from .merge import copy_channels
from .pooling import pool_nhwc
from .resample import upsample_nhwc
from .winograd import winograd_channels, winograd_input, winograd_tiles

log = logging.getLogger("darkfold")

_F1, _F2, _F3, _F4 = (types.Array(types.float32, ndim, "C") for ndim in (1, 2, 3, 4))
_FLAGS = types.Array(types.int64, 1, "C")
_INT, _BOOL = types.int64, types.boolean

# The kernels the bundled model runs, as most YOLO models do, with the argument types the engine
# calls them with (convolution.py, engine.py), so that numba can compile them before that call
# (tests/test_kernels_cache.py checks that a forward pass of the bundled model calls them with
# these and no others).
SIGNATURES = {
    conv_rows: (_F4, _INT, types.UniTuple(_INT, 7), _F2, _F1, types.UniTuple(_F1, 3), _INT, _F2, _INT, _BOOL, _BOOL,
                _INT, _INT, _INT, _F1, _F1, _FLAGS),
    winograd_tiles: (_F4, _INT, _INT, _F2, _F2, _F1, _FLAGS, _BOOL, _F1, _INT, _F4, _INT, _BOOL, _BOOL, _INT, _INT,
                     _INT, _F1, _F1, _FLAGS),
    winograd_channels: (_F3, _INT, _INT, _F2, _F1, _FLAGS, _F1, _INT, _F4, _INT, _BOOL, _BOOL, _INT, _INT, _F1,
                        _FLAGS),
    winograd_input: (_F4, _INT, _INT, _INT, _INT, _F2, _F3, _INT),
    pool_nhwc: (_F4, _INT, _INT, _INT, _INT, _BOOL, _INT, _INT, _F4),
    upsample_nhwc: (_F4, _INT, types.float32, _INT, _INT, _F4),
    copy_channels: (_F2, _INT, _INT, _F2, _INT, _INT, _INT),
}
# The helper's share: about half of the bundled model's compile (winograd_input comes with
# winograd_tiles, which calls it). This process compiles the other half meanwhile, and detection's
# kernels (detect.Detector).
HELPER_SHARE = (winograd_tiles, winograd_channels, winograd_input, pool_nhwc, upsample_nhwc, copy_channels)
OWN_SHARE = tuple(kernel for kernel in SIGNATURES if kernel not in HELPER_SHARE)


def cache_is_cold():
    """True when this process would compile the kernels of ``SIGNATURES``: they are neither
    loaded yet nor in numba's cache (a first run after installing)."""
    for kernel, signature in SIGNATURES.items():
        if signature in kernel.overloads:
            continue
        # numba's on-disk index of compiled copies; private, so look for it carefully
        index = getattr(getattr(getattr(kernel, "_cache", None), "_cache_file", None), "_index_path", None)
        if index is not None and not os.path.exists(index):
            return True
    return False


def cache_folder():
    """The folder numba keeps the compiled kernels under: the package's (in its ``__pycache__``
    folders), or the one that takes its place (NUMBA_CACHE_DIR, or the user's cache folder when
    the package's is not writable); None when numba's cache is off."""
    path = getattr(getattr(conv_rows, "_cache", None), "_cache_path", None)  # private: looked up carefully
    if path is None:
        return None
    if os.path.basename(path) == "__pycache__":  # darkfold/kernels/__pycache__: the package's
        return os.path.dirname(os.path.dirname(path))
    return os.path.dirname(path)  # the folder of numba's kernels_<hash> subfolder


def compile_kernels(kernels):
    """Compile ``kernels`` (of ``SIGNATURES``) for their signatures, or load them from the cache."""
    for kernel in kernels:
        kernel.compile(SIGNATURES[kernel])


class Helper:
    """A Python process compiling ``HELPER_SHARE`` into numba's cache, started at once;
    ``finish()`` waits for it. It stops when this process ends: it watches its stdin, a pipe
    that closes then. Where no process can be started, or it fails, this process compiles
    those kernels itself when it first calls them."""

    # Its Python code: end once stdin closes; import the same darkfold as this process's, whose
    # cache this one reads; compile.
    _WATCH = ("import os, sys, threading\n"
              "threading.Thread(target=lambda: (sys.stdin.read(), os._exit(1)), daemon=True).start()\n"
              "sys.path.insert(0, sys.argv[1])\n")
    _WORK = "from darkfold.kernels import cache\ncache.compile_kernels(cache.HELPER_SHARE)\n"

    def __init__(self):
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.errors = tempfile.TemporaryFile()  # not a pipe: a helper that wrote much to it would wait for us
        self.process = None
        # Where Python is embedded (uWSGI) or frozen (PyInstaller), sys.executable is the app
        # itself, which must not be started again.
        if getattr(sys, "frozen", False) or not os.path.basename(sys.executable or "").lower().startswith("python"):
            log.debug("no helper process to compile kernels: sys.executable is %r", sys.executable)
            return
        try:
            self.process = subprocess.Popen([sys.executable, "-c", self._WATCH + self._WORK, root],
                                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self.errors)
        except OSError as error:
            log.debug("no helper process to compile kernels: %s", error)

    def finish(self):
        """Wait for the helper to end (its kernels then in the cache, unless it failed)."""
        if self.process is not None:
            self.process.wait()  # stdin open meanwhile: its closing stops the helper
            self.process.stdin.close()
            if self.process.returncode:
                self.errors.seek(0)
                log.debug("the helper process compiling kernels failed (this process compiles them):\n%s",
                          self.errors.read().decode(errors="replace"))
        self.errors.close()

    def stop(self):
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process.stdin.close()
        self.errors.close()

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is None:
            self.finish()
        else:
            self.stop()
        return False


class _Compiles(event.Listener):
    """numba's compiles of darkfold's kernels (numba's "numba:compile" events): the seconds they
    took, and a notice on the log when the first starts. A kernel's compile includes those of
    the functions it calls, so only the outermost compile in a thread is timed."""

    def __init__(self):
        self.seconds = 0.0
        self._lock = threading.Lock()
        self._thread = threading.local()
        self._noticed = False

    def on_start(self, ev):
        depth = getattr(self._thread, "depth", 0)
        self._thread.depth = depth + 1
        if depth or not _is_darkfold(ev):
            return
        self._thread.started = time.perf_counter()
        with self._lock:
            noticed, self._noticed = self._noticed, True
        if not noticed:
            log.info("compiling the numba kernels (once per install; `darkfold warmup` compiles them ahead)")

    def on_end(self, ev):
        depth = getattr(self._thread, "depth", 0)  # 0: a compile that began before this listened
        if depth == 0:
            return
        self._thread.depth = depth - 1
        if depth > 1 or not _is_darkfold(ev):
            return
        with self._lock:
            self.seconds += time.perf_counter() - self._thread.started


def _is_darkfold(ev):
    function = getattr(ev.data.get("dispatcher"), "py_func", None)
    return getattr(function, "__module__", "").startswith("darkfold.")


_compiles = _Compiles()
event.register("numba:compile", _compiles)


def compiled_seconds():
    """The seconds numba spent compiling darkfold's kernels in this process so far."""
    return _compiles.seconds
