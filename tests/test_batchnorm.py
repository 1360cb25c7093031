"""darkfold.batchnorm: Darknet's fold (fuse_conv_batchnorm) bit for bit, and its checks."""

import numpy as np
import oracle
import pytest
from conftest import modules_loaded_by

from darkfold.batchnorm import fold_arrays
from darkfold.errors import ModelError


def random_batchnorm(shape, seed):
    """Weights of ``shape`` and per-filter BN arrays with a wide range of magnitudes and signs."""
    rng = np.random.default_rng(seed)
    filters = shape[0]
    weights = (rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 3, shape)).astype(np.float32)
    biases = rng.normal(0, 3, filters).astype(np.float32)
    scales = rng.normal(0, 2, filters).astype(np.float32)
    mean = rng.normal(0, 5, filters).astype(np.float32)
    variance = (10.0 ** rng.uniform(-7, 3, filters)).astype(np.float32)
    variance[0] = 0.0  # eps alone
    return weights, biases, scales, mean, variance


@pytest.mark.parametrize("shape", [
    (16, 3, 3, 3),  # first conv
    (64, 4, 3, 3),  # groups=32 over 128 input channels: (filters, c/groups, k, k)
    (48, 1, 3, 3),  # depthwise
    (255, 128, 1, 1),
    (7, 5, 5, 5),
    (10, 48),  # connected
    (1, 1, 1, 1),
])
def test_fold_arrays_weights_equal_darknet_fuse_conv_batchnorm_bitwise(shape):
    arrays = random_batchnorm(shape, seed=sum(shape))
    inputs = [a.copy() for a in arrays]
    out_weights, out_biases = fold_arrays(*arrays)
    expected_weights, _ = oracle.darknet_fuse(*arrays)
    assert out_weights.dtype == out_biases.dtype == np.float32
    assert out_weights.shape == shape and out_biases.shape == (shape[0],)
    np.testing.assert_array_equal(out_weights.view(np.uint32), expected_weights.view(np.uint32))
    oracle.assert_fused_biases_close(out_biases, dict(zip(("weights", "biases", "scales", "rolling_mean", "rolling_variance"),
                                             arrays)))
    for before, after in zip(inputs, arrays):
        np.testing.assert_array_equal(after, before)


def test_fold_arrays_biases_equal_darknet_fuse_conv_batchnorm_bitwise():
    arrays = random_batchnorm((4096, 1, 1, 1), seed=5)
    _, out_biases = fold_arrays(*arrays)
    _, expected_biases = oracle.darknet_fuse(*arrays)
    np.testing.assert_array_equal(out_biases.view(np.uint32), expected_biases.view(np.uint32))


def test_fold_arrays_uses_darknets_eps_inside_the_square_root():
    # scale 1, variance 0, mean 1: bias' = -1/sqrt(1e-5), weight' = 1/sqrt(1e-5)
    one = np.ones(1, np.float32)
    weights, biases = fold_arrays(one.reshape(1, 1, 1, 1), np.zeros(1, np.float32), one, one, np.zeros(1, np.float32))
    assert biases[0] == np.float32(-1 / np.sqrt(1e-5))
    assert weights.reshape(-1)[0] == np.float32(1 / np.sqrt(1e-5))


def test_the_fold_kernel_is_not_called_with_vectors_of_the_wrong_length():
    ones = np.ones(4, np.float32)
    with pytest.raises(ModelError, match="weights for 4 filters, but biases, scales"):
        fold_arrays(np.ones((4, 9), np.float32), ones, ones, ones[:3], ones)


def test_importing_the_fold_loads_no_numba_until_a_fold_runs():
    """``import darkfold`` may import the fold (for convert), and must not pay for numba's import."""
    imported = modules_loaded_by("from darkfold import batchnorm, fold", "darkfold.fold", "numba")
    assert imported == {"darkfold.fold"}
    fold = ("import numpy as np\nfrom darkfold.batchnorm import fold_arrays\none = np.ones(1, np.float32)\n"
            "fold_arrays(one.reshape(1, 1), one, one, one, one)")
    assert modules_loaded_by(fold, "numba") == {"numba"}
