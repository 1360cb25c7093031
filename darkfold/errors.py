"""The exceptions darkfold raises for bad input, one class per kind of input.

Every message starts with the file it is about (and the line, where there is
one) and says what was expected, so the CLI prints it as it is, in one line,
without a traceback. The same facts are fields, for programs:

    try:
        darkfold.load("yolov4.cfg", "yolov4.weights")
    except darkfold.DarkfoldError as error:
        error.path, error.line, error.layer, error.expected, error.found

Anything else darkfold raises is a bug in darkfold.
"""

import os


class DarkfoldError(Exception):
    """A model file, option, image or argument darkfold cannot accept.

    Fields (each ``None`` where it does not apply):

    - ``path``: the file the error is about (an input, or an output for
      ``OutputError``); the message starts with it.
    - ``line``: the 1-based line of ``path`` (cfg files); the message starts
      with ``path:line``.
    - ``layer``: the index of the layer concerned, counted as Darknet does
      (0 is the first section after ``[net]``).
    - ``expected`` and ``found``: what darkfold needed and what it found,
      such as ``"an integer"`` and ``"four"``, or byte counts.

    ``warnings`` lists what looked wrong before the error (an unknown key
    next to a missing one, say), for the reader to see first.
    """

    warnings = ()

    def __init__(self, message, *, path=None, line=None, layer=None, expected=None, found=None):
        self.path = None if path is None else os.fspath(path)
        self.line = line
        self.layer = layer
        self.expected = expected
        self.found = found
        # Messages are written starting with their file; a raise site that
        # gives the path but forgot it in the text still gets it.
        where = self.where
        if where is not None and not message.startswith(self.path):
            message = f"{where}: {message}"
        super().__init__(message)

    @classmethod
    def at_layer(cls, layer, rest, **fields):
        """The error ``file:line: layer N [type]<rest>`` about a layer of a model, fields set."""
        return cls(f"{layer.where}: layer {layer.index} [{layer.type}]{rest}", path=layer.section.path,
                   line=layer.section.line, layer=layer.index, **fields)

    @property
    def where(self):
        """``path:line``, ``path``, or ``None`` when the error is about no file."""
        if self.path is None:
            return None
        return self.path if self.line is None else f"{self.path}:{self.line}"

    def __reduce__(self):
        # Keep the fields when pickled (multiprocessing, pytest-xdist).
        return _rebuild, (type(self), str(self), self.__dict__)


def _rebuild(cls, message, fields):
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(fields)
    return error


class CfgError(DarkfoldError):
    """A .cfg file that is not a valid Darknet network description, or asks for absurd sizes."""


class WeightsError(DarkfoldError):
    """A .weights file that does not match its cfg or is not a weights file."""


class ModelError(DarkfoldError):
    """A request the model cannot serve: folding or saving weights it was loaded without."""


class UnsupportedError(ModelError):
    """A valid layer, option or activation that a runtime (darkfold's engine) does not run."""


class ImageError(DarkfoldError):
    """An image file that cannot be read or decoded."""


class OutputError(DarkfoldError):
    """An output that cannot be written, or would replace an input or an existing file."""


class ClusterError(DarkfoldError):
    """A Dask cluster that cannot be reached or used: no scheduler at the address, no workers,
    workers that cannot see the run's files, or dask not installed."""


def shortened(text, limit=60):
    """``text``, cut in the middle to ``limit`` characters ("start...end") if it is longer.

    Messages quote values from the user's files, and a value can be megabytes
    long (a cfg line of ten million digits); the message must stay one
    readable line.
    """
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit // 2]}...{text[-(limit // 2):]}"


def quoted(text, limit=60):
    """``repr(text)`` for a message; a long text shortened, with its length after it."""
    text = str(text)
    if len(text) <= limit:
        return repr(text)
    return f"{shortened(text, limit)!r} ({len(text):,} characters)"


# The error for an unreadable input file of each kind (see files.check_readable).
INPUT_ERRORS = {"cfg": CfgError, "weights": WeightsError, "image": ImageError, "video": ImageError}
