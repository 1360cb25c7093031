"""darkfold.kernels.activation: the compiled activations, bias and run-time BatchNorm."""

import numpy as np
import oracle
import pytest

from darkfold.activations import ACTIVATIONS
from darkfold.batchnorm import NO_BATCHNORM, runtime_batchnorm
from darkfold.kernels.activation import activate, bias_activate, bias_or_batchnorm_activate


@pytest.mark.parametrize("name", sorted(set(ACTIVATIONS) - {"revleaky"}))
def test_activation_matches_darknets_formula(name):
    x = np.concatenate([np.linspace(-100, 100, 20001), [-80.0, -30.0, -20.0, -4.0, -2.0, -1.0, 0.0, 1.0, 4.0, 6.0, 20.0]])
    x = x.astype(np.float32)[None]
    out = x.copy()
    bias_activate(out, np.zeros(x.shape[1], np.float32), ACTIVATIONS[name].code)
    expected = oracle.activate(x.astype(np.float64), name)
    np.testing.assert_allclose(out, expected, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_one_value_gets_what_a_whole_array_gets(name):
    """``activate`` (one value) and the array loops, some of them written apart, agree."""
    x = np.linspace(-30, 30, 601, dtype=np.float32)[None]
    out = x.copy()
    bias_activate(out, np.zeros(x.shape[1], np.float32), ACTIVATIONS[name].code)
    one_by_one = np.array([activate(value, ACTIVATIONS[name].code) for value in x[0]], np.float32)
    np.testing.assert_array_equal(out[0], one_by_one)


def test_the_bias_or_the_runtime_batchnorm_comes_before_the_activation():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((7, 4), dtype=np.float32) * 3
    biases = rng.standard_normal(4, dtype=np.float32)
    arrays = {"scales": rng.standard_normal(4).astype(np.float32), "rolling_mean": rng.standard_normal(4).astype(np.float32),
              "rolling_variance": rng.random(4).astype(np.float32), "biases": biases}
    with_bias = x.copy()
    bias_or_batchnorm_activate(with_bias, biases, NO_BATCHNORM, ACTIVATIONS["leaky"].code)
    np.testing.assert_allclose(with_bias, oracle.activate(x.astype(np.float64) + biases, "leaky"), rtol=1e-6)
    normalized = x.copy()
    bias_or_batchnorm_activate(normalized, biases, runtime_batchnorm(arrays), ACTIVATIONS["leaky"].code)
    expected = oracle.activate(oracle.batchnorm(x.T.astype(np.float64), arrays).T, "leaky")
    np.testing.assert_allclose(normalized, expected, rtol=1e-5, atol=1e-6)
