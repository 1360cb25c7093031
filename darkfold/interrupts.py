"""SIGINT and SIGTERM during a command: remove what is half-written, then exit at once.

Python's default SIGTERM ends the process on the spot, leaving temporary files
behind, and its KeyboardInterrupt can land anywhere: inside a ``__del__``
(where Python drops it), or inside llvmlite between taking and releasing its
lock, which then deadlocks the engine's worker threads. So the CLI does not
raise from a signal: ``handled()`` installs a handler that deletes the
temporary files and the empty folders this run made (``track``), and ends the
process with 130 or 143, as a shell reports those signals. Putting finished
outputs in place is ``critical()``: a signal then waits for it to end, so the
outputs of one step appear together or not at all.
"""

import contextlib
import os
import signal
import sys
import threading

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal number
_MESSAGES = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}

_temporaries = {}  # path -> True: files to delete on a signal
_folders = []  # folders this run created, outermost first: removed if empty
_state = {"critical": 0, "pending": None}


@contextlib.contextmanager
def handled():
    """While the block runs, SIGINT and SIGTERM clean up and exit (main thread only: where
    Python runs signal handlers; elsewhere the block runs as it is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _temporaries.clear()
    _folders.clear()
    _state.update(critical=0, pending=None)
    previous = {signum: signal.signal(signum, _handle) for signum in EXIT_CODES}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def track(path):
    """Delete ``path`` if a signal ends the run before ``untrack(path)``."""
    _temporaries[os.fspath(path)] = True


def untrack(path):
    _temporaries.pop(os.fspath(path), None)


def track_folder(path):
    """Remove the folder ``path`` if a signal ends the run while it is empty."""
    _folders.append(os.fspath(path))


def untrack_folder(path):
    with contextlib.suppress(ValueError):
        _folders.remove(os.fspath(path))


@contextlib.contextmanager
def critical():
    """A step that must not be cut in two: a signal during it takes effect at its end."""
    _state["critical"] += 1
    try:
        yield
    finally:
        _state["critical"] -= 1
        if not _state["critical"] and _state["pending"] is not None:
            _exit(_state["pending"])


def _handle(signum, frame):
    if _state["critical"]:
        _state["pending"] = signum
        return
    _exit(signum)


def _exit(signum):
    for path in list(_temporaries):
        with contextlib.suppress(OSError):
            os.unlink(path)
    for folder in reversed(_folders):
        with contextlib.suppress(OSError):
            os.rmdir(folder)  # only if empty
    with contextlib.suppress(Exception):
        sys.stdout.flush()  # what was printed so far (JSON lines of finished inputs) stays
    os.write(2, f"darkfold: {_MESSAGES[signum]}; nothing half-written was left\n".encode())
    os._exit(EXIT_CODES[signum])
