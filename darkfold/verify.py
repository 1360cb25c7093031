"""Check that a folded model computes what the original computes.

Both run on the same input; for each output the largest absolute difference is
compared with ``tolerance * max(1, max |original output|)``: float32 rounding
grows with the size of the values, and outputs near zero need an absolute floor.
"""

from dataclasses import dataclass

import numpy as np

from .options import check_backend, check_tolerance
from .errors import ModelError

TOLERANCE = 1e-4


@dataclass(frozen=True)
class OutputDifference:
    """How far one output of the folded model is from the original's."""

    layer: object  # Darknet's index of the output layer (in the original), or an exported output's name
    shape: tuple  # (batch, c, h, w)
    max_abs: float  # largest absolute difference
    scale: float  # max(1, largest absolute value of the original's output)
    tolerance: float

    @property
    def relative(self):
        return self.max_abs / self.scale

    @property
    def ok(self):
        return self.relative <= self.tolerance


@dataclass(frozen=True)
class Verification:
    outputs: tuple  # OutputDifference per output

    @property
    def ok(self):
        return all(output.ok for output in self.outputs)

    @property
    def worst(self):
        return max(self.outputs, key=lambda output: output.relative)


class VerificationError(ModelError):
    """A folded model that does not reproduce its original; ``verification`` holds the differences."""

    def __init__(self, message, verification, **fields):
        super().__init__(message, expected=f"differences within {verification.worst.tolerance:g}",
                         found=verification.worst.relative, **fields)
        self.verification = verification


def sample_input(model, seed=0, batch=1):
    """A fixed input of ``batch`` images of uniform [0, 1) values, the range of a normalised image."""
    shape = (batch, model.net.channels, model.net.height, model.net.width)
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def verify(original, folded=None, *, tolerance=TOLERANCE, x=None, threads=None, backend="numba", precision="f32"):
    """Compare ``folded`` (default: ``original`` folded in memory) with ``original``.

    The original runs on darkfold's numba engine with each BatchNorm applied explicitly, as
    Darknet runs it; the folded model runs as it is, on ``backend`` in ``precision`` (see
    ``Model.forward``): so ``verify(model, backend="openvino")`` compares OpenVINO with the
    engine. ``x`` defaults to ``sample_input(original)``.
    The folded model may lack merged [batchnorm] layers, so outputs are matched
    by position among the head inputs, not by index.
    """
    # Imported here, not at the top: the runtime loads numba, which `import darkfold` must not
    # pay (as in Model.forward).
    from .runtime import check_finite

    tolerance = check_tolerance(tolerance)
    backend, precision = check_backend(backend, precision)  # before the original runs, not after
    x = sample_input(original) if x is None else x
    expected = original.forward(x, fold=False, threads=threads)
    check_finite(original, x, expected, fold=False, threads=threads)  # no fold can be checked against NaN
    other = folded or original
    # folded: the original folds in memory, by default
    actual = other.forward(x, threads=threads, backend=backend, precision=precision)
    check_finite(other, x, actual, threads=threads, backend=backend)
    if len(actual) != len(expected):
        raise ModelError(f"{other.cfg.path}: {len(actual)} detection heads, but {original.cfg.path} has "
                         f"{len(expected)}; these are not the same network", path=other.cfg.path,
                         expected=len(expected), found=len(actual))
    differences = []
    for (index, want), got in zip(expected.items(), actual.values()):
        if got.shape != want.shape:
            raise ModelError(f"{other.cfg.path}: an output has shape {got.shape}, but layer {index} of "
                             f"{original.cfg.path} outputs {want.shape}; these are not the same network",
                             path=other.cfg.path, expected=want.shape, found=got.shape)
        differences.append(OutputDifference(
            index, want.shape, float(np.abs(got - want).max()), max(1.0, float(np.abs(want).max())), tolerance))
    return Verification(tuple(differences))
