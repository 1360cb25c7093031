"""Darknet's activations compiled, and what runs with them on a GEMM result: the bias, or the
run-time BatchNorm (batchnorm.py's form), then the activation, in place.

The formulas are activations.py's plain functions; registered here, numba compiles them into
every kernel that calls them. The kernels dispatch on activations.py's codes.
"""

from numba.extending import register_jitable

from ..activations import (
    ACTIVATIONS,
    ELU,
    GELU,
    HARD_MISH,
    HARDTAN,
    LEAKY,
    LHTAN,
    LINEAR,
    LOGGY,
    LOGISTIC,
    MISH,
    PLSE,
    RAMP,
    RELIE,
    RELU,
    RELU6,
    SELU,
    SWISH,
    TANH,
    clamp,
    elu,
    exp_by_squaring,
    gelu,
    hard_mish,
    hardtan,
    leaky,
    lhtan,
    logistic,
    loggy,
    mish,
    plse,
    ramp,
    relie,
    relu,
    relu6,
    selu,
    stair,
    swish,
    tanh,
)
from ..jit import kernel

# With the kernels' error model (see kernel), so a formula's divisions do not stop vectorisation.
for _function in {exp_by_squaring, clamp, *(activation.formula for activation in ACTIVATIONS.values())}:
    register_jitable(error_model="numpy")(_function)


@kernel
def activate(x, code):
    """Darknet's activation ``code`` of one float32 value (activations.h)."""
    if code == LEAKY:
        return leaky(x)
    if code == LINEAR:
        return x
    if code == RELU:
        return relu(x)
    if code == LOGISTIC:
        return logistic(x)
    if code == MISH:
        return mish(x)
    if code == SWISH:
        return swish(x)
    if code == TANH:
        return tanh(x)
    if code == HARD_MISH:
        return hard_mish(x)
    if code == RELU6:
        return relu6(x)
    if code == ELU:
        return elu(x)
    if code == SELU:
        return selu(x)
    if code == GELU:
        return gelu(x)
    if code == RELIE:
        return relie(x)
    if code == RAMP:
        return ramp(x)
    if code == LOGGY:
        return loggy(x)
    if code == PLSE:
        return plse(x)
    if code == HARDTAN:
        return hardtan(x)
    if code == LHTAN:
        return lhtan(x)
    return stair(x)


@kernel
def activate_inplace(values, code):
    """The activation over a 2-D array, in place. The activations of the YOLO cfgs get loops of
    their own: an activation chosen per value keeps LLVM from vectorising."""
    rows, f = values.shape
    if code == LINEAR:
        return
    if code == LEAKY:
        for r in range(rows):
            for j in range(f):
                values[r, j] = leaky(values[r, j])
    elif code == MISH:
        for r in range(rows):
            for j in range(f):
                values[r, j] = mish(values[r, j])
    elif code == SWISH:
        for r in range(rows):
            for j in range(f):
                values[r, j] = swish(values[r, j])
    elif code == LOGISTIC:
        for r in range(rows):
            for j in range(f):
                values[r, j] = logistic(values[r, j])
    else:
        for r in range(rows):
            for j in range(f):
                values[r, j] = activate(values[r, j], code)


@kernel
def add_bias(values, biases):
    """``values[r] += biases`` for every row of a (rows, f) array."""
    rows, f = values.shape
    for r in range(rows):
        for j in range(f):
            values[r, j] += biases[j]


@kernel
def batchnorm(values, rolling_mean, deviation, scales, biases):
    """Darknet's explicit inference BatchNorm (convolutional_layer.c, batchnorm_layer.c), in
    place: ``(x - rolling_mean) / deviation * scales + biases``, ``deviation`` as
    batchnorm.runtime gives it."""
    rows, f = values.shape
    for r in range(rows):
        for j in range(f):
            values[r, j] = (values[r, j] - rolling_mean[j]) / deviation[j] * scales[j] + biases[j]


@kernel
def bias_activate(values, biases, code):
    """``values = activate(values + biases)`` in place, for a (rows, f) GEMM result."""
    add_bias(values, biases)
    activate_inplace(values, code)


@kernel
def bias_or_batchnorm_activate(values, biases, runtime_batchnorm, code):
    """The bias, or the run-time BatchNorm ``runtime_batchnorm`` (mean, deviation, scales, as
    batchnorm.runtime gives them; batchnorm.NONE when it is folded) with its biases, then the
    activation, in place on a (rows, f) GEMM result."""
    mean, deviation, scales = runtime_batchnorm
    if mean.size:
        batchnorm(values, mean, deviation, scales, biases)
    else:
        add_bias(values, biases)
    activate_inplace(values, code)  # once: numba compiles each call site's copy of every activation
