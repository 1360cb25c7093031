"""darkfold.activations: the one table of Darknet's activations that the cfg parser and the
engine's kernels read."""

import numpy as np
import pytest

import darkfold
from darkfold.activations import ACTIVATIONS, NAMES, NONDECREASING
from darkfold.kernels.activation import activate_inplace

from conftest import write

# Every name get_activation (AlexeyAB's activations.c) knows.
DARKNET_NAMES = ("logistic swish mish hard_mish normalize_channels normalize_channels_softmax "
                 "normalize_channels_softmax_maxval loggy relu relu6 elu selu gelu relie plse hardtan lhtan "
                 "linear ramp revleaky leaky tanh stair").split()


def test_the_names_are_those_darknets_get_activation_knows():
    assert NAMES == set(DARKNET_NAMES)


def _values():
    edges = [-80.0, -30.0, -20.0, -4.0, -2.0, -1.5, -1.0, -0.0, 0.0, 0.5, 1.0, 1.5, 4.0, 6.0, 20.0, 25.0]
    return np.concatenate([np.linspace(-100, 100, 2001), edges]).astype(np.float32)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_the_kernels_compute_the_formula_the_table_gives_each_name(name):
    """The kernels dispatch on codes: each name's code must reach that name's formula (here
    run as plain Python)."""
    x = _values()
    out = x[None].copy()
    activate_inplace(out, ACTIVATIONS[name].code)
    with np.errstate(over="ignore"):  # loggy's exp(-x) overflows to inf, as expf does
        expected = np.array([ACTIVATIONS[name].formula(value) for value in x], np.float32)
    np.testing.assert_allclose(out[0], expected, rtol=1e-5, atol=1e-5)  # libm's tanh and exp against numpy's


@pytest.mark.parametrize("code", sorted(NONDECREASING))
def test_the_activations_flagged_nondecreasing_never_decrease_in_float32(code):
    """The engine pools before these activations (pool_first): exact only if f(max) = max(f)."""
    rng = np.random.default_rng(code)
    x = np.concatenate([np.linspace(-100, 100, 400001), rng.standard_normal(100000) * 5])
    x = np.sort(x.astype(np.float32))
    out = x[None].copy()
    activate_inplace(out, code)
    assert (np.diff(out[0]) >= 0).all()


def test_the_engine_refuses_a_darknet_activation_it_does_not_run_naming_the_layer(tmp_path):
    cfg = write(tmp_path / "m.cfg", "[net]\nwidth=8\nheight=8\nchannels=3\n[maxpool]\n"
                                    "[shortcut]\nfrom=-1\nactivation=normalize_channels\n")
    header = np.array([0, 2, 0], np.int32).tobytes() + np.zeros(1, np.int64).tobytes()  # no layer has weights
    model = darkfold.load(cfg, write(tmp_path / "m.weights", header))  # a name Darknet knows: the cfg parses
    with pytest.raises(darkfold.ModelError, match=r"m.cfg:6: layer 1 \[shortcut\]: activation=normalize_channels "
                                                  r"is not supported by darkfold's engine"):
        model.forward(np.zeros((1, 3, 8, 8), np.float32))
