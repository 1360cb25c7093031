"""File access with the errors a user can act on, and the one way darkfold writes outputs.

Every output goes through ``atomic_outputs``: it is never one of the run's input
files (``InputFiles``: the same path, a link to it, or the same inode), it is
written under a temporary name and checked there, and only then put in place,
all outputs of one step together. A run that fails or is stopped leaves every
file that existed before exactly as it was.
"""

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager

from . import interrupts
from .errors import INPUT_ERRORS, DarkfoldError, OutputError


def check_readable(path, kind):
    """Raise the error for ``kind`` (CfgError for "cfg", ...) unless ``path`` is a readable file."""
    error = INPUT_ERRORS.get(kind, DarkfoldError)
    expected = f"a {kind} file"
    if not os.path.exists(path):
        if os.path.islink(path):
            try:
                os.stat(path)
            except OSError as problem:
                if problem.errno == errno.ELOOP:
                    raise error(f"{path}: a symbolic link loop (the link leads back to itself), expected a {kind} "
                                "file", path=path, expected=expected, found="a symbolic link loop") from None
            raise error(f"{path}: a symbolic link to {os.readlink(path)}, which does not exist", path=path,
                        expected=expected, found="a dangling symbolic link")
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
            f"{path}: cannot read {kind} file: {reason(error)}", path=path, found=reason(error)) from None


def reason(error):
    """What went wrong in an OSError, in words: numpy's I/O raises some without ``strerror``."""
    if error.strerror:
        return error.strerror
    if error.errno:
        return os.strerror(error.errno)
    return str(error) or type(error).__name__


class InputFiles:
    """The files a run reads. No output may be one of them: not the same path, not a link to
    it, not another name of the same file (a hard link, a bind mount), compared by device and
    inode."""

    def __init__(self, paths=()):
        self._paths = {}  # real path -> the path as given
        self._files = {}  # (device, inode) -> the path as given
        for path in paths:
            self.add(path)

    def add(self, path):
        path = os.fspath(path)
        self._paths[os.path.realpath(path)] = path
        try:
            status = os.stat(path)
        except OSError:
            return  # a missing input fails when it is read
        self._files[(status.st_dev, status.st_ino)] = path

    def __contains__(self, path):
        return self.matching(path) is not None

    def matching(self, path):
        """The input that writing ``path`` would replace, or None."""
        real = os.path.realpath(path)
        if real in self._paths:
            return self._paths[real]
        try:
            status = os.stat(path)
        except OSError:
            return None
        return self._files.get((status.st_dev, status.st_ino))

    def check_output(self, path, what="output"):
        """Raise an OutputError if ``path`` is one of the inputs."""
        source = self.matching(path)
        if source is not None:
            raise OutputError(f"{path}: the {what} would overwrite the input {source}; choose another output",
                              path=path, expected="a file that is not an input", found=f"the input {source}")


@contextmanager
def atomic_outputs(*paths, replace=True, inputs=None):
    """Yield one temporary path beside each of ``paths``; put them in place on success.

    The caller writes (and may check) the temporary files; nothing at ``paths``
    changes until the block ends without error, and then all of them change
    together or none does. With ``replace=False`` an existing output is an
    error, found when the files are put in place (by a hard link, which
    fails if the name exists), so two runs cannot both take the same name.
    ``inputs`` (``InputFiles``): files no output may be. A failed or
    interrupted write leaves no temporary file behind.
    """
    inputs = InputFiles() if inputs is None else inputs
    for path in paths:
        inputs.check_output(path)
        if not replace and os.path.lexists(path):
            raise _exists(path)
    temporaries = []
    try:
        for path in paths:
            temporaries.append(temporary_beside(path))
        try:
            yield temporaries
        except OSError as error:
            failed = dict(zip(temporaries, paths)).get(error.filename, ", ".join(map(str, paths)))
            raise OutputError(f"{failed}: cannot write: {reason(error)}", path=failed, found=reason(error)) from None
        for path in paths:  # again: the file at an output's name may have changed meanwhile
            inputs.check_output(path)
        with interrupts.critical():
            if replace:
                _move_all(temporaries, paths)
            else:
                _link_all(temporaries, paths)
    finally:
        for temporary in temporaries:
            discard(temporary)


def discard(temporary):
    """Delete a file made by ``temporary_beside``, if it is still there."""
    if os.path.exists(temporary):
        os.unlink(temporary)
    interrupts.untrack(temporary)


def _exists(path):
    return OutputError(f"{path}: already exists; use --force (force=True) to replace it", path=path,
                       expected="a new file", found="an existing file")


def temporary_beside(path, suffix=".tmp"):
    """A new empty file with a short hidden name in the folder of ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    with interrupts.critical():  # created and tracked, or neither
        try:
            handle, temporary = tempfile.mkstemp(prefix=".darkfold-", suffix=suffix, dir=folder)
        except OSError as error:
            raise OutputError(f"{path}: cannot write here: {reason(error)}", path=path,
                              found=reason(error)) from None
        interrupts.track(temporary)
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
        raise OutputError(f"{path}: cannot write: {reason(error)}", path=path, found=reason(error)) from None
    finally:
        for _, backup in moved:
            if backup is not None and os.path.exists(backup):
                os.unlink(backup)


def _link_all(temporaries, paths):
    """Give each temporary its output name, none of which may exist; all or none."""
    placed = []
    try:
        for temporary, path in zip(temporaries, paths):
            os.chmod(temporary, _new_file_mode())
            _place_new(temporary, path)
            placed.append(path)
    except BaseException as error:
        for path in placed:  # ours: no other run replaces a file it did not create
            os.unlink(path)
        if isinstance(error, FileExistsError):
            raise _exists(error.filename) from None
        if isinstance(error, OSError):
            raise OutputError(f"{error.filename}: cannot write: {reason(error)}", path=error.filename,
                              found=reason(error)) from None
        raise


def _place_new(temporary, path):
    try:
        os.link(temporary, path)  # atomic, and fails if ``path`` exists
        return
    except FileExistsError as error:
        error.filename = path
        raise
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
    # File systems without hard links (FAT, some network shares): claim the name exclusively,
    # then move the finished file over the empty one this run just created.
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError as error:
        error.filename = path
        raise
    os.replace(temporary, path)


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


class OutputFolder:
    """A folder outputs go to, created (with any missing parents) when the first output needs it.

    ``remove_if_unused()`` removes again the folders this run created, if they
    are still empty: a run that wrote nothing leaves no folder behind.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._created = []  # outermost first

    def __fspath__(self):
        return self.path

    def make(self):
        """Create the folder if missing; OutputError if it cannot be, or is a file."""
        if os.path.isdir(self.path):
            return self.path
        missing = []
        folder = os.path.abspath(self.path)
        while not os.path.exists(folder):
            missing.append(folder)
            folder = os.path.dirname(folder)
        if not os.path.isdir(folder):
            raise OutputError(f"{self.path}: output folder is a file", path=self.path, expected="a folder",
                              found="a file")
        for folder in reversed(missing):
            with interrupts.critical():  # created and tracked, or neither
                try:
                    os.mkdir(folder)
                except FileExistsError:
                    continue  # made meanwhile by someone else: not ours to remove
                except OSError as error:
                    raise OutputError(f"{self.path}: cannot create output folder: {reason(error)}",
                                      path=self.path, found=reason(error)) from None
                self._created.append(folder)
                interrupts.track_folder(folder)
        if not os.path.isdir(self.path):
            raise OutputError(f"{self.path}: output folder is a file", path=self.path, expected="a folder",
                              found="a file")
        return self.path

    def remove_if_unused(self):
        for folder in reversed(self._created):
            interrupts.untrack_folder(folder)
            try:
                os.rmdir(folder)  # only if empty
            except OSError:
                break
        self._created = []
