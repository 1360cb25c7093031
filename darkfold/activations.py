"""Darknet's activations: the names a cfg may give, the ones darkfold's engine runs, their
kernel codes, which of them never decrease, and their formulas.

Each formula is the function activations.h defines, of one float32 value, written in the
Python that numba compiles: ``kernels/activation.py`` compiles them into the engine's
kernels. Constants are float32 (``f32``), so numba keeps the arithmetic in single precision
where Darknet's is. Where Darknet's CPU build departs from activations.h, darkfold computes
the function: ``activate()`` has no case for relu6 and returns 0 (AlexeyAB/darknet#6528),
which the GPU build and every relu6-trained model do not. The normalize_channels family (a
per-pixel softmax across channels, not a function of one value) is not supported.

Plain Python and numpy: the cfg parser checks activation names without loading numba.
"""

from dataclasses import dataclass

import numpy as np

from .errors import UnsupportedError

f32 = np.float32

# The engine's codes, which its kernels dispatch on.
LINEAR, LEAKY, RELU, LOGISTIC, MISH, SWISH, TANH, HARD_MISH, RELU6, ELU, SELU, GELU, RELIE, RAMP, \
    LOGGY, PLSE, HARDTAN, LHTAN, STAIR = range(19)


# -- helpers of the formulas ---------------------------------------------------------------------


def exp_by_squaring(x):
    """exp of a float32 in [-80, 80], in float64 so it vectorises (a libm expf call does not):
    exp(x / 1024) by its Taylor series, squared 10 times; relative error below 1e-8."""
    y = np.float64(x) * (1.0 / 1024.0)
    p = 1.0 + y * (1.0 + y * (0.5 + y * (1.0 / 6 + y * (1.0 / 24 + y * (1.0 / 120 + y * (1.0 / 720))))))
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    return p * p


def clamp(x, bound):
    x = min(bound, x)
    return max(-bound, x)


# -- the formulas (activations.h) ----------------------------------------------------------------


def linear(x):
    return x


def leaky(x):
    # Darknet's (x > 0) ? x : .1f * x, for every x (0 and -0 included), in a form LLVM vectorises
    return max(x, f32(0.1) * x)


def relu(x):
    return x if x > 0 else f32(0)


def logistic(x):
    return np.float32(1.0 / (1.0 + exp_by_squaring(clamp(-x, f32(80)))))


def mish(x):
    # x * tanh(softplus(x)) with one exp: tanh(log(1 + e)) = n / (n + 2), n = e * (e + 2).
    # activations.c's softplus threshold 20: past it mish(x) is x.
    e = exp_by_squaring(clamp(x, f32(20)))
    n = e * (e + 2.0)
    return x if x > 20 else np.float32(x * n / (n + 2.0))


def swish(x):
    return x * logistic(x)


def tanh(x):
    return np.float32(2.0 / (1.0 + exp_by_squaring(clamp(f32(-2) * x, f32(80)))) - 1.0)


def hard_mish(x):
    if x > 0:
        return x
    if x > -2:
        return x * x / f32(2) + x
    return f32(0)


def relu6(x):
    return min(max(x, f32(0)), f32(6))


def elu(x):
    return x if x >= 0 else np.exp(x) - f32(1)


def selu(x):
    return f32(1.0507) * x if x >= 0 else f32(1.0507 * 1.6732) * (np.exp(x) - f32(1))


def gelu(x):
    return f32(0.5) * x * (f32(1) + np.tanh(f32(0.797885) * x + f32(0.035677) * x * x * x))


def relie(x):
    return x if x > 0 else f32(0.01) * x


def ramp(x):
    return (x if x > 0 else f32(0)) + f32(0.1) * x


def loggy(x):
    return f32(2) / (f32(1) + np.exp(-x)) - f32(1)


def plse(x):
    if x < -4:
        return f32(0.01) * (x + f32(4))
    if x > 4:
        return f32(0.01) * (x - f32(4)) + f32(1)
    return f32(0.125) * x + f32(0.5)


def hardtan(x):
    return min(max(x, f32(-1)), f32(1))


def lhtan(x):
    if x < 0:
        return f32(0.001) * x
    if x > 1:
        return f32(0.001) * (x - f32(1)) + f32(1)
    return x


def stair(x):
    n = np.floor(x)
    if int(n) % 2 == 0:
        return np.floor(x / f32(2))
    return (x - n) + np.floor(x / f32(2))


# -- the table -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Activation:
    code: int
    formula: object
    # Never decreases, as computed in float32: a max of its values is its value of the max, so a
    # max pool may run first, on a quarter of the values (convolution.Convolution). Unflagged,
    # the engine pools after the activation, which is right for any function.
    nondecreasing: bool = False


ACTIVATIONS = {
    "linear": Activation(LINEAR, linear, nondecreasing=True),
    "leaky": Activation(LEAKY, leaky, nondecreasing=True),
    "revleaky": Activation(LEAKY, leaky, nondecreasing=True),  # activate() runs it as leaky (activations.c)
    "relu": Activation(RELU, relu, nondecreasing=True),
    "logistic": Activation(LOGISTIC, logistic, nondecreasing=True),
    "mish": Activation(MISH, mish),
    "swish": Activation(SWISH, swish),
    "tanh": Activation(TANH, tanh, nondecreasing=True),
    "hard_mish": Activation(HARD_MISH, hard_mish),
    "relu6": Activation(RELU6, relu6, nondecreasing=True),
    "elu": Activation(ELU, elu),
    "selu": Activation(SELU, selu),
    "gelu": Activation(GELU, gelu),
    "relie": Activation(RELIE, relie),
    "ramp": Activation(RAMP, ramp),
    "loggy": Activation(LOGGY, loggy),
    "plse": Activation(PLSE, plse),
    "hardtan": Activation(HARDTAN, hardtan),
    "lhtan": Activation(LHTAN, lhtan),
    "stair": Activation(STAIR, stair),
}

# get_activation (activations.c) knows these too; darkfold's engine does not run them.
NOT_RUN = frozenset({"normalize_channels", "normalize_channels_softmax", "normalize_channels_softmax_maxval"})

# Every name get_activation knows; any other is an error when the cfg is parsed (Darknet prints a
# warning and silently uses relu).
NAMES = frozenset(ACTIVATIONS) | NOT_RUN

NONDECREASING = frozenset(a.code for a in ACTIVATIONS.values() if a.nondecreasing)


def activation_code(layer):
    """The engine's code for ``layer``'s activation; UnsupportedError for one it does not run."""
    name = layer.activation
    if name not in ACTIVATIONS:
        raise UnsupportedError.at_layer(layer, f": activation={name} is not supported by darkfold's engine",
                                        expected="an activation the engine runs", found=name)
    return ACTIVATIONS[name].code
