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

A camera or a live stream has no end but the one its user gives it with Ctrl-C, so it runs
``finishing()``: the first signal asks it to stop reading and finish its annotated copy, and the
run then exits with that signal's code; a second signal ends the run at once, as elsewhere.
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
_state = {"installed": False, "critical": 0, "pending": None, "finishing": None, "stop": None}


@contextlib.contextmanager
def handled():
    """While the block runs, SIGINT and SIGTERM clean up and exit (main thread only: where
    Python runs signal handlers; elsewhere the block runs as it is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _temporaries.clear()
    _folders.clear()
    _state.update(installed=True, critical=0, pending=None, finishing=None, stop=None)
    previous = {signum: signal.signal(signum, _handle) for signum in EXIT_CODES}
    try:
        yield
    finally:
        _state["installed"] = False
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


@contextlib.contextmanager
def finishing(what):
    """While the block runs, the first signal only sets ``stop_requested()``: the block winds
    down and, once it has ended normally, the run exits with that signal's code, saying that
    ``what`` was finished. Without ``handled()`` (darkfold as a library) the block runs as it is."""
    if not _state["installed"]:
        yield
        return
    _state.update(finishing=what, stop=None)
    try:
        yield
    except BaseException:
        if _state["stop"] is not None:  # it could not finish: what it wrote is half-written
            _exit(_state["stop"])
        raise
    finally:
        _state["finishing"] = None
    if _state["stop"] is not None:
        _exit(_state["stop"], f"{what} was finished")


def stop_requested():
    """True once a signal asked the ``finishing()`` block to wind down."""
    return _state["stop"] is not None


def _handle(signum, frame):
    if _state["finishing"] is not None and _state["stop"] is None:
        _state["stop"] = signum
        os.write(2, f"darkfold: stopping: finishing {_state['finishing']} (again to abandon it)\n".encode())
        return
    if _state["critical"]:
        _state["pending"] = signum
        return
    _exit(signum)


def _exit(signum, outcome="nothing half-written was left"):
    for path in list(_temporaries):
        with contextlib.suppress(OSError):
            os.unlink(path)
    for folder in reversed(_folders):
        with contextlib.suppress(OSError):
            os.rmdir(folder)  # only if empty
    with contextlib.suppress(Exception):
        sys.stdout.flush()  # what was printed so far (JSON lines of finished inputs) stays
    os.write(2, f"darkfold: {_MESSAGES[signum]}; {outcome}\n".encode())
    os._exit(EXIT_CODES[signum])
