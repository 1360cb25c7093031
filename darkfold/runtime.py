"""Running a model: its engine for each set of options, built once and shared by threads.

A ``Model`` is data (cfg, layers, parameters); the engines that run it live
here, in a cache keyed by the model (weakly: an engine goes with its model) and
by the options, behind a lock, so that threads whose first calls arrive
together build one engine, not one each.
"""

import threading
import weakref

import numpy as np

from .engine import Engine
from .errors import ModelError

_engines = weakref.WeakKeyDictionary()  # model -> {(fold, threads, fuse): Engine}
_building = threading.Lock()


def engine_for(model, *, fold=True, threads=None, fuse=True):
    """The engine that runs ``model`` (built on first use, then reused). ``fold=False`` applies
    each BatchNorm as Darknet does at run time; with ``fuse``, convolutions apply the 2x2
    [maxpool] after them and do not keep their own output. Raises ``UnsupportedError`` for a
    layer the engine does not run."""
    key = (fold, threads, fuse)
    with _building:
        engines = _engines.setdefault(model, {})
        if key not in engines:
            if not model.has_weights:
                raise ModelError(f"{model.cfg.path}: running the model needs its .weights file",
                                 path=model.cfg.path, expected="a model loaded with weights", found="no weights")
            model.check_params()  # the kernels trust these shapes
            engines[key] = Engine(model, fold=fold, threads=threads, fuse=fuse)
        return engines[key]


def release(model):
    """Stop the worker threads of every engine built for ``model`` and forget them (they also
    stop when the model is garbage-collected)."""
    with _building:
        engines = _engines.pop(model, {})
    for engine in engines.values():
        engine.close()


def forward(model, x, layers=None, *, fold=True, threads=None):
    """``Model.forward``: raw outputs of the head inputs, or of ``layers``, for NCHW float32 ``x``."""
    wanted = model.head_inputs if layers is None else check_indices(model, layers)
    x = check_input(model, x)
    engine = engine_for(model, fold=fold, threads=threads)
    if engine.fused.intersection(wanted):  # an output that a fused [maxpool] never stores
        engine = engine_for(model, fold=fold, threads=threads, fuse=False)
    return engine.forward(x, wanted)


def check_input(model, x):
    """``x`` as the engine takes it (C-contiguous, writable), or a ModelError saying what is wrong."""
    expected = (model.net.channels, model.net.height, model.net.width)
    if not isinstance(x, np.ndarray):
        raise ModelError(f"input: expected a numpy array (batch, {', '.join(map(str, expected))}), "
                         f"got {type(x).__name__}", expected="a numpy array", found=type(x).__name__)
    if x.dtype != np.float32:
        raise ModelError(f"input: expected float32 values, got {x.dtype}; use x.astype(np.float32)",
                         expected="float32", found=str(x.dtype))
    if x.ndim != 4 or x.shape[1:] != expected or x.shape[0] < 1:
        raise ModelError(f"input: expected shape (batch, {', '.join(map(str, expected))}) as "
                         f"{model.cfg.path} [net] says, got {x.shape}", expected=("batch", *expected),
                         found=x.shape)
    x = np.ascontiguousarray(x)
    return x if x.flags.writeable else x.copy()  # a read-only array would compile the kernels again


def check_indices(model, indices):
    """``indices`` sorted, without repeats, each a layer of ``model``; else a ModelError."""
    indices = sorted({int(i) for i in indices})
    for index in indices:
        if not 0 <= index < len(model.layers):
            raise ModelError(f"{model.cfg.path}: layer {index} does not exist "
                             f"(layers 0 to {len(model.layers) - 1})", path=model.cfg.path,
                             expected=f"0 to {len(model.layers) - 1}", found=index)
    return indices
