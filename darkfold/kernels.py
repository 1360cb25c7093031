"""numba kernels: plain functions over preallocated arrays.

Callers check shapes and dtypes before calling; a kernel never validates.
"""

import math

import numba
import numpy as np


# Serial on purpose: the fold is bound by memory bandwidth, a second thread
# gains little, and a parallel region stalls badly when the CPUs are shared.
@numba.njit(cache=True)
def fold_batchnorm(weights, biases, scales, rolling_mean, rolling_variance, eps, out_weights, out_biases):
    """Fold inference-time BatchNorm into the preceding linear map, per output filter.

    ``weights`` is (filters, k) float32; the others are (filters,). Matches
    Darknet's fuse_conv_batchnorm (network.c): the factor and the bias are
    computed in double, and each weight is multiplied in double and rounded
    to float32 once.
    """
    filters, k = weights.shape
    for f in range(filters):
        # np.float64, not float(): numba keeps float(float32) in single precision.
        scale = np.float64(scales[f])
        root = math.sqrt(np.float64(rolling_variance[f]) + eps)
        factor = scale / root
        out_biases[f] = np.float64(biases[f]) - scale * np.float64(rolling_mean[f]) / root
        for i in range(k):
            out_weights[f, i] = np.float64(weights[f, i]) * factor
