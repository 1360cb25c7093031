"""File access with the errors a user can act on, and atomic writes."""

import os
import tempfile
from contextlib import contextmanager

from .errors import DarkfoldError


def check_readable(path, kind):
    """Raise a DarkfoldError naming ``path`` unless it is a readable file."""
    if not os.path.exists(path):
        raise DarkfoldError(f"{path}: {kind} file not found")
    if os.path.isdir(path):
        raise DarkfoldError(f"{path}: is a directory, expected a {kind} file")
    if not os.access(path, os.R_OK):
        raise DarkfoldError(f"{path}: {kind} file is not readable (permission denied)")


def read_bytes(path, kind):
    check_readable(path, kind)
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise DarkfoldError(f"{path}: cannot read {kind} file: {error.strerror}") from None


@contextmanager
def atomic_output(path):
    """Yield a temporary path beside ``path``; rename it into place on success.

    An interrupted or failed write leaves ``path`` as it was and no temporary
    file behind, so a reader never sees a half-written model.
    """
    folder = os.path.dirname(os.path.abspath(path))
    try:
        handle, temporary = tempfile.mkstemp(prefix=".darkfold-", suffix=".tmp", dir=folder)
    except OSError as error:
        raise DarkfoldError(f"{path}: cannot write here: {error.strerror}") from None
    os.close(handle)
    try:
        yield temporary
        os.chmod(temporary, _new_file_mode())
        os.replace(temporary, path)
    except OSError as error:
        os.unlink(temporary)
        raise DarkfoldError(f"{path}: cannot write: {error.strerror}") from None
    except BaseException:
        os.unlink(temporary)
        raise


def _new_file_mode():
    # mkstemp creates 0600 files; give the output the mode open() would.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
