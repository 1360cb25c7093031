"""BatchNorm's arithmetic, as Darknet does it: folded into the linear layer before it, or
applied at run time.

At inference a BatchNorm is a per-channel affine map, so it can be merged into the weights and
biases of the convolution (or connected layer) it follows:

    s  = scales / sqrt(rolling_variance + eps)
    w' = w * s              (per output filter)
    b' = biases - rolling_mean * s

Darknet stores BatchNorm's beta in ``biases`` when ``batch_normalize=1``. fold.py decides which
layers fold and rewrites the cfg; the engine folds too (``fold_own_batchnorm``), or applies the
run-time form (``runtime_batchnorm``) where it does not.
"""

import functools
import math

import numpy as np

from .errors import ModelError
from .layers import BATCHNORM_ARRAYS

# Darknet (AlexeyAB): sqrt(rolling_variance + .00001f) in fuse_conv_batchnorm and in the forward pass.
EPS = 1e-5

# The run-time form of a BatchNorm that is folded (or absent): what the kernels take in its place.
NO_BATCHNORM = (np.empty(0, np.float32),) * 3


def _fold_filters(weights, biases, scales, rolling_mean, rolling_variance, eps, out_weights, out_biases):
    """The fold per output filter, compiled by numba (``_fold_kernel``): ``weights`` is (filters,
    k) float32, the others (filters,). Matches Darknet's fuse_conv_batchnorm (network.c): the
    factor and the bias are computed in double, and each weight is multiplied in double and
    rounded to float32 once."""
    filters, k = weights.shape
    for f in range(filters):
        # np.float64, not float(): numba keeps float(float32) in single precision.
        scale = np.float64(scales[f])
        root = math.sqrt(np.float64(rolling_variance[f]) + eps)
        factor = scale / root
        out_biases[f] = np.float64(biases[f]) - scale * np.float64(rolling_mean[f]) / root
        for i in range(k):
            out_weights[f, i] = np.float64(weights[f, i]) * factor


@functools.cache
def _fold_kernel():
    """``_fold_filters`` compiled. numba rather than numpy, whose float32 -> float64 -> float32
    round trip runs well below memory speed; serial, as the fold is bound by memory bandwidth
    and a parallel region stalls badly when the CPUs are shared."""
    import numba  # here, on the first fold: importing darkfold (and fold.py, for convert) loads no numba

    return numba.njit(cache=True)(_fold_filters)


def fold_arrays(weights, biases, scales, rolling_mean, rolling_variance):
    """Folded ``(weights, biases)`` (Darknet's fuse_conv_batchnorm): new float32 arrays, inputs
    untouched."""
    # One array type for every call (read-only, C-contiguous float32), so numba
    # compiles and caches a single specialization.
    flat, biases, scales, rolling_mean, rolling_variance = (
        _readonly(a) for a in (weights.reshape(weights.shape[0], -1), biases, scales, rolling_mean,
                               rolling_variance))
    # The kernel does not check bounds: one value per filter in each vector, or no call.
    vectors = (biases, scales, rolling_mean, rolling_variance)
    if any(vector.shape != (flat.shape[0],) for vector in vectors):
        raise ModelError(f"BatchNorm fold: weights for {flat.shape[0]} filters, but biases, scales, rolling_mean "
                         f"and rolling_variance of shapes {', '.join(str(v.shape) for v in vectors)}",
                         expected=(flat.shape[0],), found=[v.shape for v in vectors])
    out_weights = np.empty(flat.shape, np.float32)
    out_biases = np.empty(biases.shape, np.float32)
    _fold_kernel()(flat, biases, scales, rolling_mean, rolling_variance, EPS, out_weights, out_biases)
    return out_weights.reshape(weights.shape), out_biases


def _readonly(array):
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
