"""BatchNorm's arithmetic, as Darknet does it: folded into the linear layer before it, or
applied at run time.

At inference a BatchNorm is a per-channel affine map, so it can be merged into the weights and
biases of the convolution (or connected layer) it follows:

    s  = scales / sqrt(rolling_variance + eps)
    w' = w * s              (per output filter)
    b' = biases - rolling_mean * s

Darknet stores BatchNorm's beta in ``biases`` when ``batch_normalize=1``. fold.py decides which
layers fold and rewrites the cfg; the engine folds too, each weight multiplied as it is written
in the order its kernels read (``fold_factors``, ``scale_filters``), or applies the run-time
form (``runtime_batchnorm``) where it does not.
"""

import functools

import numpy as np

from .errors import ModelError
from .layers import BATCHNORM_ARRAYS

# Darknet (AlexeyAB): sqrt(rolling_variance + .00001f) in fuse_conv_batchnorm and in the forward pass.
EPS = 1e-5

# The run-time form of a BatchNorm that is folded (or absent): what the kernels take in its place.
NO_BATCHNORM = (np.empty(0, np.float32),) * 3


def fold_factors(weights, biases, scales, rolling_mean, rolling_variance):
    """The per-filter half of Darknet's fuse_conv_batchnorm (network.c), in double as it is:
    ``(factor, biases)``, the float64 factor that multiplies each filter's weights and the
    folded biases in float32."""
    vectors = [np.asarray(vector, np.float64) for vector in (biases, scales, rolling_mean, rolling_variance)]
    if any(vector.shape != weights.shape[:1] for vector in vectors):
        raise ModelError(f"BatchNorm fold: weights for {weights.shape[0]} filters, but biases, scales, rolling_mean "
                         f"and rolling_variance of shapes {', '.join(str(v.shape) for v in vectors)}",
                         expected=weights.shape[:1], found=[v.shape for v in vectors])
    biases, scales, rolling_mean, rolling_variance = vectors
    # A damaged file's negative variance gives NaN, and a value past float32's range inf, as in
    # Darknet, without warnings: detection names the layer holding them (runtime.check_finite).
    with np.errstate(all="ignore"):
        root = np.sqrt(rolling_variance + EPS)
        return scales / root, (biases - scales * rolling_mean / root).astype(np.float32)


def _scale_filters(weights, factors, out, filters_last):
    """``weights[f] * factors[f]`` into ``out``, compiled by numba (``scale_filters``); the loops
    write ``out`` in its own order, a cache line at a time."""
    filters, channels, taps = weights.shape
    if filters_last:
        for f0 in range(0, filters, _FILTER_BLOCK):
            f1 = min(f0 + _FILTER_BLOCK, filters)
            for c in range(channels):
                for t in range(taps):
                    for f in range(f0, f1):
                        # np.float64, not float(): numba keeps float(float32) in single precision.
                        out[t, c, f] = np.float64(weights[f, c, t]) * factors[f]
    else:
        for f in range(filters):
            factor = factors[f]
            for t in range(taps):
                for c in range(channels):
                    out[t, f, c] = np.float64(weights[f, c, t]) * factor


# Filters-last output is written for this many filters at a time: the rows of weights they
# read stay in cache from one channel to the next.
_FILTER_BLOCK = 32


@functools.cache
def _scale_kernel():
    """``_scale_filters`` compiled, for one signature: read-only C-contiguous weights (a weights
    file's are read-only). numba rather than numpy, whose float32 -> float64 -> float32 round
    trip runs well below memory speed, and whose copies into another order are slower still;
    serial, as it is bound by memory bandwidth and a parallel region stalls badly when the
    CPUs are shared."""
    import numba  # here, on the first fold: importing darkfold (and fold.py, for convert) loads no numba

    weights = numba.types.Array(numba.float32, 3, "C", readonly=True)
    factors = numba.types.Array(numba.float64, 1, "C")
    out = numba.types.Array(numba.float32, 3, "C")
    return numba.njit(numba.void(weights, factors, out, numba.boolean), cache=True)(_scale_filters)


def scale_filters(weights, factors, out, filters_last):
    """``weights`` (filters, channels, taps), filter ``f`` multiplied by ``factors[f]`` (float64),
    written into ``out`` (C-contiguous float32) in another order: (taps, channels, filters) with
    ``filters_last``, else (taps, filters, channels), which is the same order for one tap. Each
    product is computed in double and rounded to float32 once, as Darknet's
    fuse_conv_batchnorm does; a factor of 1 copies a weight exactly."""
    f, c, t = weights.shape
    # The kernel does not check bounds.
    if out.shape != ((t, c, f) if filters_last else (t, f, c)) or factors.shape != (f,):
        raise ValueError(f"scale_filters: weights {weights.shape}, factors {factors.shape}, out {out.shape}")
    _scale_kernel()(_readonly(weights), np.ascontiguousarray(factors, np.float64), out, filters_last)


def fold_arrays(weights, biases, scales, rolling_mean, rolling_variance):
    """Folded ``(weights, biases)`` (Darknet's fuse_conv_batchnorm): new float32 arrays, inputs
    untouched."""
    factors, biases = fold_factors(weights, biases, scales, rolling_mean, rolling_variance)
    out = np.empty(weights.shape, np.float32)
    filters = len(weights)  # as (filters, values, 1) in and (1, filters, values) out: the same order
    scale_filters(weights.reshape(filters, -1, 1), factors, out.reshape(1, filters, -1), filters_last=False)
    return out, biases


def _readonly(array):
    # One array type for every call (read-only, C-contiguous float32), so numba loads and
    # caches a single specialization.
    view = np.ascontiguousarray(array, dtype=np.float32).view()
    view.flags.writeable = False
    return view


def fold_own_batchnorm(arrays):
    """A layer's ``biases`` and ``weights`` with its own BatchNorm arrays folded in."""
    weights, biases = fold_arrays(arrays["weights"], arrays["biases"], *(arrays[n] for n in BATCHNORM_ARRAYS))
    return {"biases": biases, "weights": weights}


def merge_batchnorm(conv, batchnorm):
    """A linear convolution's ``biases`` and ``weights`` with the standalone [batchnorm] after
    it merged in: batchnorm_layer.c's ``scales * (x - mean) / sqrt(var + eps) + biases`` of the
    convolution's output ``x = w * input + conv biases``."""
    scales, mean, variance = (batchnorm[n].astype(np.float64) for n in BATCHNORM_ARRAYS)
    factor = scales / np.sqrt(variance + EPS)
    weights, _ = fold_arrays(conv["weights"], conv["biases"], *(batchnorm[n] for n in BATCHNORM_ARRAYS))
    biases = batchnorm["biases"] + factor * (conv["biases"].astype(np.float64) - mean)
    return {"biases": biases.astype(np.float32), "weights": weights}


def runtime_batchnorm(arrays):
    """``(rolling_mean, deviation, scales)`` float32 for BatchNorm applied as Darknet's forward
    pass applies it, ``(x - rolling_mean) / deviation * scales + biases`` with
    ``deviation = sqrt(rolling_variance + .00001f)`` in float (batchnorm_layer.c)."""
    # copies: writable arrays, the type the kernels are compiled for (a file's are read-only)
    rolling_mean, rolling_variance, scales = (np.array(arrays[name], dtype=np.float32)
                                              for name in ("rolling_mean", "rolling_variance", "scales"))
    return rolling_mean, np.sqrt(rolling_variance + np.float32(EPS)), scales
