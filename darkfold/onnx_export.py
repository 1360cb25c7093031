"""``darkfold export``: a model written as an ONNX file, checked before it lands.

The graph is ``onnx_graph.onnx_model``'s. The file is written under a temporary name beside
its destination (``files.atomic_outputs``: never over an input, over an existing file only
with ``force``), checked there with ``onnx.checker`` and, when onnxruntime is installed, run
against ``model.forward`` on one input; only then does it take its name.
"""

import os
from dataclasses import dataclass

import numpy as np

from .errors import DarkfoldError
from .files import InputFiles, atomic_outputs
from .onnx_graph import INPUT, check_batch, onnx, onnx_model, output_shapes, raw_outputs
from .verify import TOLERANCE, OutputDifference, Verification, VerificationError, sample_input

# onnxruntime is optional (pip install "darkfold[onnxruntime]"): without it the file is written
# unverified, with a warning. Imported here, by this module alone, which runs only for an export.
try:
    import onnxruntime
except ImportError:  # pragma: no cover - the test extra installs it
    onnxruntime = None

ONNXRUNTIME_EXTRA = 'pip install "darkfold[onnxruntime]"'


@dataclass(frozen=True)
class Export:
    """What ``export_onnx`` wrote: the file, its opset and outputs, and the check it passed."""

    path: str
    opset: int
    input: tuple  # the shape of ``images``; "batch" where the batch is dynamic
    outputs: dict  # output name -> shape
    size: int  # bytes
    verification: Verification = None  # None when onnxruntime did not run it
    warnings: tuple = ()


def export_onnx(model, path, *, decode=False, batch=None, opset=None, force=False, verify=None,
                tolerance=TOLERANCE, threads=None):
    """Write ``model`` to ``path`` as an ONNX graph (``onnx_graph.onnx_model``) and return an ``Export``.

    ``decode``: Darknet's decoding of the [yolo] and [region] heads inside the graph (outputs
    ``boxes`` and ``scores``); otherwise the outputs are ``layer_<index>``, the tensors
    ``model.forward`` returns. ``batch`` fixes the batch dimension (default: dynamic);
    ``opset`` defaults to ``onnx_graph.DEFAULT_OPSET``. An input file of ``model`` is never
    replaced, an existing file only with ``force=True``. ``verify``: run the written file with
    onnxruntime against ``model.forward`` before it takes its name (None: when onnxruntime is
    installed; True: required) and raise ``VerificationError``, writing nothing, past
    ``tolerance`` (relative to max(1, |output|)).
    """
    proto = onnx_model(model, decode=decode, batch=batch, opset=opset)
    batch = check_batch(batch)
    if verify and onnxruntime is None:
        raise DarkfoldError(f"{path}: verifying the export needs onnxruntime: {ONNXRUNTIME_EXTRA}", path=path,
                            expected="the onnxruntime package", found="not installed")
    warnings = list(model.warnings)
    verification = None
    with atomic_outputs(path, replace=force, inputs=InputFiles(model.sources)) as (temporary,):
        with open(temporary, "wb") as file:
            file.write(proto.SerializeToString())
        onnx.checker.check_model(temporary, full_check=True)
        if verify is False:
            pass
        elif onnxruntime is None:
            warnings.append(f"{path}: not verified: onnxruntime is not installed ({ONNXRUNTIME_EXTRA})")
        else:
            verification = _check(model, temporary, path, decode, batch or 1, tolerance, threads, warnings)
    shapes = output_shapes(model, decode=decode, batch=batch)
    net = model.net
    return Export(os.fspath(path), proto.opset_import[0].version,
                  ("batch" if batch is None else batch, net.channels, net.height, net.width), shapes,
                  os.path.getsize(path), verification, tuple(warnings))


def reference_outputs(model, x, *, decode=False, threads=None):
    """``{output name: array}``: what an export of ``model`` must give on ``x``, from ``model.forward``."""
    outputs = model.forward(x, threads=threads)
    if decode:
        # Imported here: detection loads numba's NMS kernels, which a raw export never needs.
        from .detect import decode_heads

        boxes, scores = decode_heads(model, outputs)
        return {"boxes": boxes, "scores": scores}
    return {f"layer_{i}": outputs[i] for i in raw_outputs(model)}


def session(source, threads=None):
    """An onnxruntime CPU session on the file at ``source`` (a path) or a serialised model (bytes),
    running its nodes in sequence (faster than its parallel mode on these chain-like graphs)."""
    options = onnxruntime.SessionOptions()
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    if threads:
        options.intra_op_num_threads = threads
    source = source if isinstance(source, bytes) else os.fspath(source)
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _check(model, temporary, path, decode, batch, tolerance, threads, warnings):
    x = sample_input(model, batch=batch)
    try:
        runner = session(temporary, threads)
        actual = dict(zip([o.name for o in runner.get_outputs()], runner.run(None, {INPUT: x})))
    except Exception as error:  # noqa: BLE001 - onnxruntime's own errors have no common base class
        warnings.append(f"{path}: not verified: onnxruntime {onnxruntime.__version__} cannot run it: "
                        f"{str(error).splitlines()[0] if str(error) else type(error).__name__}")
        return None
    expected = reference_outputs(model, x, decode=decode, threads=threads)
    differences = []
    for name, want in expected.items():
        got = actual[name]
        layer = int(name[len("layer_"):]) if name.startswith("layer_") else name
        max_abs = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
        differences.append(OutputDifference(layer, want.shape, max_abs, max(1.0, float(np.abs(want).max())),
                                            tolerance))
    verification = Verification(tuple(differences))
    if not verification.ok:
        raise VerificationError(
            f"{path}: the exported model does not reproduce {model.cfg.path} under onnxruntime (difference "
            f"{verification.worst.relative:.2e} > {verification.worst.tolerance:g}); nothing was written; "
            "please report this", verification, path=path)
    return verification
