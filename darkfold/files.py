"""File access with the errors a user can act on, and atomic writes."""

import os
import shutil
import tempfile
from contextlib import contextmanager

from .errors import INPUT_ERRORS, DarkfoldError, OutputError


def check_readable(path, kind):
    """Raise the error for ``kind`` (CfgError for "cfg", ...) unless ``path`` is a readable file."""
    error = INPUT_ERRORS.get(kind, DarkfoldError)
    expected = f"a {kind} file"
    if not os.path.exists(path):
        raise error(f"{path}: {kind} file not found", path=path, expected=expected, found="nothing")
    if os.path.isdir(path):
        raise error(f"{path}: is a directory, expected a {kind} file", path=path, expected=expected,
                    found="a directory")
    if not os.path.isfile(path):
        raise error(f"{path}: not a regular file (a device or pipe?), expected a {kind} file", path=path,
                    expected=expected, found="not a regular file")
    if not os.access(path, os.R_OK):
        raise error(f"{path}: {kind} file is not readable (permission denied)", path=path,
                    expected="read permission", found="permission denied")


def read_bytes(path, kind, limit=None):
    """The bytes of ``path``; with ``limit``, at most limit + 1 of them (more means too big)."""
    check_readable(path, kind)
    try:
        with open(path, "rb") as file:
            return file.read() if limit is None else file.read(limit + 1)
    except OSError as error:
        raise INPUT_ERRORS.get(kind, DarkfoldError)(
            f"{path}: cannot read {kind} file: {error.strerror}", path=path, found=error.strerror) from None


@contextmanager
def atomic_outputs(*paths):
    """Yield one temporary path beside each of ``paths``; move them into place on success.

    Nothing is replaced until every temporary file is complete, and if one
    move fails the outputs already moved are put back, so the files change
    together or not at all. A failed or interrupted write leaves no
    temporary file behind.
    """
    temporaries = []
    try:
        for path in paths:
            temporaries.append(_temporary_beside(path))
        try:
            yield temporaries
        except OSError as error:
            failed = dict(zip(temporaries, paths)).get(error.filename, ", ".join(map(str, paths)))
            raise OutputError(f"{failed}: cannot write: {error.strerror}", path=failed,
                              found=error.strerror) from None
        _move_all(temporaries, paths)
    finally:
        for temporary in temporaries:
            if os.path.exists(temporary):
                os.unlink(temporary)


def _temporary_beside(path):
    folder = os.path.dirname(os.path.abspath(path))
    try:
        handle, temporary = tempfile.mkstemp(prefix=".darkfold-", suffix=".tmp", dir=folder)
    except OSError as error:
        raise OutputError(f"{path}: cannot write here: {error.strerror}", path=path, found=error.strerror) from None
    os.close(handle)
    return temporary


def _move_all(temporaries, paths):
    moved = []  # (path, backup of what it held, or None if it did not exist)
    try:
        for temporary, path in zip(temporaries, paths):
            os.chmod(temporary, _new_file_mode())
            backup = _backup(path, temporary + ".old") if os.path.exists(path) else None
            try:
                os.replace(temporary, path)
            except OSError:
                if backup is not None:
                    os.unlink(backup)
                raise
            moved.append((path, backup))
    except OSError as error:
        for moved_path, backup in reversed(moved):
            if backup is None:
                os.unlink(moved_path)
            else:
                os.replace(backup, moved_path)
        raise OutputError(f"{path}: cannot write: {error.strerror}", path=path, found=error.strerror) from None
    finally:
        for _, backup in moved:
            if backup is not None and os.path.exists(backup):
                os.unlink(backup)


def _backup(path, backup):
    try:
        os.link(path, backup)  # instant, and the old file never leaves its name
    except OSError:
        shutil.copyfile(path, backup)  # file systems without hard links (FAT)
    return backup


def _new_file_mode():
    # mkstemp creates 0600 files; give the output the mode open() would.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
