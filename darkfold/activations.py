"""Darknet's activation names, as the numba kernels number them.

Each is the function activations.h defines. Where Darknet's CPU build departs from it,
darkfold computes the function: ``activate()`` has no case for relu6 and returns 0
(AlexeyAB/darknet#6528), which the GPU build and every relu6-trained model do not.
The normalize_channels family (a per-pixel softmax across channels) is not supported.
"""

from . import kernels
from .errors import UnsupportedError

ACTIVATIONS = {
    "linear": kernels.LINEAR, "leaky": kernels.LEAKY, "revleaky": kernels.LEAKY, "relu": kernels.RELU,
    "logistic": kernels.LOGISTIC, "mish": kernels.MISH, "swish": kernels.SWISH, "tanh": kernels.TANH,
    "hard_mish": kernels.HARD_MISH, "relu6": kernels.RELU6, "elu": kernels.ELU, "selu": kernels.SELU,
    "gelu": kernels.GELU, "relie": kernels.RELIE, "ramp": kernels.RAMP, "loggy": kernels.LOGGY,
    "plse": kernels.PLSE, "hardtan": kernels.HARDTAN, "lhtan": kernels.LHTAN, "stair": kernels.STAIR,
}

# Activations that never decrease: a max of them is them of the max, so a max pool may run
# first, on a quarter of the values (convolution.Convolution).
NONDECREASING = frozenset({kernels.LINEAR, kernels.LEAKY, kernels.RELU, kernels.RELU6, kernels.LOGISTIC,
                           kernels.TANH})


def activation_code(layer):
    name = layer.activation
    if name not in ACTIVATIONS:
        raise UnsupportedError.at_layer(layer, f": activation={name} is not supported by darkfold's engine",
                                  expected="an activation the engine runs", found=name)
    return ACTIVATIONS[name]
