"""Running a model: its engine for each set of options, built once and shared by threads.

A ``Model`` is data (cfg, layers, parameters); the engines that run it live
here, in a cache keyed by the model (weakly: an engine goes with its model) and
by the options, behind a lock, so that threads whose first calls arrive
together build one engine, not one each.
"""

import contextlib
import logging
import math
import operator
import threading
import time
import warnings
import weakref

import numpy as np

from .engine import Engine
from .errors import ModelError, shortened
from .batchnorm import EPS
from .kernels import cache
from .options import NUMBA, thread_count

log = logging.getLogger("darkfold")

_engines = weakref.WeakKeyDictionary()  # model -> {(fold, threads, fuse): Engine}
_building = threading.Lock()
_warming = threading.Lock()  # one warm_up at a time: threads arriving together on a cold cache compile once


def engine_for(model, *, fold=True, threads=None, fuse=True):
    """The engine that runs ``model`` (built on first use, then reused). ``fold=False`` applies
    each BatchNorm as Darknet does at run time; with ``fuse``, convolutions apply the 2x2
    [maxpool] after them and do not keep their own output. Raises ``UnsupportedError`` for a
    layer the engine does not run. More ``threads`` than CPUs run on the CPUs, with a warning."""
    threads, capped = thread_count(threads)
    if capped:
        warnings.warn(f"darkfold: threads={capped}", RuntimeWarning, stacklevel=3)
    key = (fold, threads, fuse)
    with _building:
        engines = _engines.setdefault(model, {})
        if key not in engines:
            model.check_complete("run it")
            engines[key] = Engine(model, fold=fold, threads=threads, fuse=fuse)
        return engines[key]


def release(model):
    """Stop the worker threads of every engine built for ``model`` and forget them (they also
    stop when the model is garbage-collected)."""
    with _building:
        engines = _engines.pop(model, {})
    for engine in engines.values():
        engine.close()


def warm_up(model, *, fold=True, threads=None, everything=False, first_calls=()):
    """Build ``model``'s engine and have numba compile the kernels it runs, or load them from
    numba's cache, before its first input, and log the compile (logger ``darkfold``, INFO).
    Returns the seconds it took when it compiled, else 0.

    On a cold cache (kernels.cache.cache_is_cold: the first run after installing), a helper
    process compiles half of the heaviest kernels while this one compiles the other half and
    makes ``first_calls`` (callables: the first calls of the caller's own kernels, such as
    detection's); then one forward pass on zeros compiles whatever else the model runs. With
    ``everything``, that pass runs on a warm cache too: a model may run kernels that the
    bundled model, which filled the cache, never ran.
    """
    with _warming:
        started = time.perf_counter()
        compiled = cache.compiled_seconds()
        cold = cache.cache_is_cold()
        with cache.Helper() if cold else contextlib.nullcontext():
            engine = engine_for(model, fold=fold, threads=threads)
            cache.compile_kernels(cache.OWN_SHARE if cold else cache.SIGNATURES)
            for call in first_calls:
                call()
        if cold or everything:
            net = model.net
            engine.forward(np.zeros((1, net.channels, net.height, net.width), np.float32), ())
    if not cold and cache.compiled_seconds() == compiled:
        return 0
    seconds = time.perf_counter() - started
    log.info("compiled kernels in %.1f s (once per install)", seconds)
    return seconds


def forward(model, x, layers=None, *, fold=True, threads=None):
    """``Model.forward``: raw outputs of the head inputs, or of ``layers``, for NCHW float32 ``x``."""
    wanted = model.head_inputs if layers is None else check_indices(model, layers)
    x = check_input(model, x)
    if cache.cache_is_cold():  # the first run after installing: compile as warm_up does, faster
        warm_up(model, fold=fold, threads=threads)
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
    last = len(model.layers) - 1
    if isinstance(indices, (str, bytes)) or not hasattr(indices, "__iter__"):
        raise ModelError(f"{model.cfg.path}: layers={shortened(repr(indices))}: expected a list of layer "
                         f"indices (0 to {last})", path=model.cfg.path, expected="a list of layer indices",
                         found=shortened(repr(indices)))
    checked = set()
    for index in indices:
        try:
            if isinstance(index, (bool, np.bool_)):  # True is 1 to Python, and no layer's name
                raise TypeError
            number = operator.index(index)  # int and numpy's integers; not 1.7 (int() would take 1)
        except TypeError:
            raise ModelError(f"{model.cfg.path}: layers: {shortened(repr(index))} is not a layer index; "
                             f"expected whole numbers from 0 to {last}", path=model.cfg.path,
                             expected="a whole number", found=shortened(repr(index))) from None
        if not 0 <= number <= last:
            raise ModelError(f"{model.cfg.path}: layer {number} does not exist (layers 0 to {last})",
                             path=model.cfg.path, expected=f"0 to {last}", found=number)
        checked.add(number)
    return sorted(checked)


def check_finite(model, x, outputs, *, fold=True, threads=None, backend=NUMBA):
    """Raise a ModelError if any of ``outputs`` (``forward(model, x, ...)``'s on ``backend``)
    holds NaN or inf.

    The error names where they come from: the first layer holding a NaN, an inf or a
    negative variance among its parameters (a damaged weights file), or, when all are
    sound, the first layer whose output on ``x`` is not finite (values past float32); or,
    when the engine's outputs on ``x`` are finite, the backend that gave the non-finite ones.
    """
    if all(np.isfinite(output).all() for output in outputs.values()):
        return
    damaged = damaged_parameters(model)
    if damaged is not None:
        raise damaged
    index = engine_for(model, fold=fold, threads=threads, fuse=False).first_nonfinite(x)
    if index is None:  # finite when run again layer by layer: name the output that was not
        index = next(i for i, output in outputs.items() if not np.isfinite(output).all())
        if backend != NUMBA:
            raise ModelError.at_layer(
                model.layers[index], f": backend={backend!r} outputs NaN or inf here on this input, where "
                "darkfold's numba engine's outputs are finite: a fault of that backend, not of the model; "
                "use backend='numba'", expected="finite outputs", found=f"NaN or inf from {backend}")
    raise ModelError.at_layer(
        model.layers[index], " is the first layer to output NaN or inf on this input, though every parameter "
        "is finite: its values grow past float32's range (about 3.4e38), which takes weights or inputs far "
        "larger than a trained model's (a damaged file, or weights for another cfg?)",
        expected="finite outputs", found="NaN or inf")


def damaged_parameters(model, huge=math.inf):
    """A ModelError naming the first layer of ``model`` that holds a parameter no trained model
    holds: NaN, inf, a variance BatchNorm cannot take the square root of, or one larger than
    ``huge`` in size. None if there is none. Reads every parameter: for explaining a failure."""
    for layer, arrays in zip(model.layers, model.params):
        for name, array in (arrays or {}).items():
            with np.errstate(invalid="ignore"):  # NaN compared
                bad = ~np.isfinite(array) | (np.abs(array) > huge)
                if name == "rolling_variance":  # BatchNorm divides by sqrt(rolling_variance + EPS)
                    bad |= array + np.float32(EPS) <= 0
            count = np.count_nonzero(bad)
            if not count:
                continue
            note = ""
            if not np.isfinite(array).all():
                what = "NaN" if np.isnan(array).any() else "inf"
            elif (np.abs(array) > huge).any():
                what, note = f"values up to {float(np.abs(array).max()):.3g}", ", far past any trained model's"
            else:
                what = "negative variances"
            return ModelError.at_layer(
                layer, f" holds {what} in its {name} ({count:,} of {array.size:,}){note}: the weights file is "
                "damaged (or its exporter wrote them); get it again", expected=f"sound {name}",
                found=f"{count} {what}")
    return None
