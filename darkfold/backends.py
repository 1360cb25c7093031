"""The runtimes a model runs on: darkfold's numba engine, onnxruntime, OpenVINO; ``backend=``.

``BACKENDS`` is the table: one entry per runtime other than the engine (``runtime.py``,
"numba", the default that needs no extra), saying which package it imports, which extra of
darkfold installs it, and how it opens a session on the model's ONNX graph
(``onnx_graph.onnx_model``, built in memory: BatchNorm folded, the raw head inputs as
outputs). A session is opened once per model and (backend, precision, threads), kept in a
cache keyed weakly by the model (as ``runtime.engine_for`` keeps engines), and shared by
threads. darkfold's preprocessing, decoding and NMS run around any backend alike.

Precision: "f32" everywhere, equal to the engine's outputs within float32 rounding; "bf16"
asks OpenVINO for bfloat16 (its CPU plugin's default where the CPU has AVX512_BF16 or AMX,
and why "f32" is asked for explicitly).
"""

import dataclasses
import importlib
import importlib.util
import logging
import re
import threading
import weakref

import numpy as np

from .errors import DarkfoldError, ModelError, UnsupportedError
from .options import AUTO, BATCH, BF16, F32, NUMBA, check_backend, thread_count
from .runtime import check_input, check_indices
from .runtime import forward as engine_forward
from .runtime import release as runtime_release

log = logging.getLogger("darkfold")

# What backend="auto" tries, first installed first: tools/bench.py's order on a 2-core AVX-512
# CPU (README, Benchmarks): OpenVINO in float32 fastest or within 10% of it on every row, then
# darkfold's engine, then onnxruntime. numba is always installed, so onnxruntime is never
# reached; it stands in its place to say where it ranks.
AUTO_ORDER = ("openvino", NUMBA, "onnxruntime")


@dataclasses.dataclass(frozen=True)
class Backend:
    """A runtime that runs the model's ONNX graph: ``package`` (the module it imports), ``extra``
    (darkfold's extra that installs it) and ``open(package, graph bytes, threads, precision)``,
    which returns a session: ``session(x) -> {layer index: array}``, the raw head inputs."""

    name: str
    package: str
    extra: str
    open: object

    def module(self):
        """The runtime's package, or a DarkfoldError naming the extra that installs it (and onnx,
        which builds the graph)."""
        for package in ("onnx", self.package):
            try:
                module = importlib.import_module(package)
            except Exception as error:  # noqa: BLE001 - a broken install raises anything (protobuf: TypeError)
                if importlib.util.find_spec(package) is None:
                    raise DarkfoldError(f'backend={self.name!r} needs the {package} package: pip install '
                                        f'"darkfold[{self.extra}]"', expected=f"the {package} package",
                                        found="not installed") from None
                raise DarkfoldError(f"backend={self.name!r}: the {package} package is installed but fails to "
                                    f"import: {type(error).__name__}: {error}; reinstall it: pip install "
                                    f'--force-reinstall "darkfold[{self.extra}]"',
                                    expected=f"the {package} package importing", found=str(error)) from None
        return module

    def installed(self):
        return all(importlib.util.find_spec(package) is not None for package in ("onnx", self.package))


def _layer_outputs(names, arrays):
    """``{layer index: array}`` from the graph's outputs ``layer_<index>``."""
    return {int(name[len("layer_"):]): array for name, array in zip(names, arrays)}


class OnnxruntimeSession:
    """onnxruntime's CPU provider with its default graph optimisations, nodes run in sequence
    (its parallel mode is slower on these chain-like graphs), ``threads`` intra-op threads."""

    def __init__(self, onnxruntime, graph, threads, precision):
        options = onnxruntime.SessionOptions()
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.names = [output.name for output in self.session.get_outputs()]
        self.precision = precision

    def __call__(self, x):
        return _layer_outputs(self.names, self.session.run(None, {"images": x}))


class OpenvinoSession:
    """OpenVINO's CPU plugin, latency-tuned (one stream of ``threads`` threads), in ``precision``;
    a model compiled per batch size, since static shapes let it plan its buffers (a dynamic batch
    dimension gives the same outputs, more slowly). The sizes detection passes, 1 and
    ``options.BATCH``, compile with the session, so that no image's time holds a compile: a
    smaller batch runs on the next larger size compiled, padded with zeros (images do not
    mix in a forward pass), and only a batch larger than every size compiles its own."""

    def __init__(self, openvino, graph, threads, precision):
        self.core = openvino.Core()
        self.graph = self.core.read_model(graph, b"")  # the format is read from the bytes (ONNX)
        if precision == BF16 and not has_bf16(self.core):
            log.warning("backend openvino: this CPU lacks AVX512_BF16 and AMX; float32 runs instead of "
                        "bfloat16")
            precision = F32
        self.precision = precision
        self.config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads,
                       "PERFORMANCE_HINT": "LATENCY"}
        self.compiled = {}  # batch size -> (infer request, output names)
        self.lock = threading.Lock()  # an infer request is not for two threads at once
        for batch in (1, BATCH):
            self._compile(batch)

    def _compile(self, batch):
        graph = self.graph.clone()
        graph.reshape({"images": [batch, *self.graph.input("images").get_partial_shape()[1:].to_shape()]})
        compiled = self.core.compile_model(graph, "CPU", self.config)
        self.compiled[batch] = (compiled.create_infer_request(), [o.get_any_name() for o in compiled.outputs])

    def __call__(self, x):
        n = x.shape[0]
        with self.lock:
            batch = min((size for size in self.compiled if size >= n), default=None)
            if batch is None:
                self._compile(n)
                batch = n
            if batch > n:
                x = np.concatenate([x, np.zeros((batch - n, *x.shape[1:]), x.dtype)])
            request, names = self.compiled[batch]
            results = request.infer({"images": x})
            return _layer_outputs(names, [results[i][:n].copy() for i in range(len(names))])


def has_bf16(core):
    """Whether OpenVINO's CPU plugin computes in bfloat16 here (AVX512_BF16 or AMX)."""
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


BACKENDS = {
    "onnxruntime": Backend("onnxruntime", "onnxruntime", "onnxruntime", OnnxruntimeSession),
    "openvino": Backend("openvino", "openvino", "openvino", OpenvinoSession),
}

_sessions = weakref.WeakKeyDictionary()  # model -> {(backend, precision, threads): session, or None for numba}
_opening = threading.Lock()


def session_for(model, backend, precision=F32, threads=None):
    """The session that runs ``model`` on ``backend`` (opened on first use, then reused), or
    None where the numba engine runs it (``backend="numba"``, or "auto" choosing it). Raises
    UnsupportedError naming the layer a backend cannot run, or a DarkfoldError naming the
    extra to install."""
    backend, precision = check_backend(backend, precision)
    if backend == NUMBA:
        return None
    threads, _ = thread_count(threads)
    key = (backend, precision, threads)
    with _opening:
        sessions = _sessions.setdefault(model, {})
        if key not in sessions:
            sessions[key] = _auto(model, precision, threads) if backend == AUTO else _open(
                model, BACKENDS[backend], precision, threads)
        return sessions[key]


def _auto(model, precision, threads):
    """The session of the first installed backend of AUTO_ORDER; None when that is the numba
    engine, or the backend cannot run the model, which is said on stderr (the log), as is a
    backend skipped because its package fails to import."""
    for name in AUTO_ORDER:
        if name == NUMBA:
            break
        backend = BACKENDS[name]
        if not backend.installed():
            continue
        try:
            session = _open(model, backend, precision if name == "openvino" else F32, threads)
        except UnsupportedError as error:
            log.warning("backend auto: %s; running darkfold's numba engine instead", error)
            return None
        except DarkfoldError as error:  # installed but broken: the next backend may run
            log.warning("backend auto: skipping %s: %s", name, error)
            continue
        log.debug("backend auto: %s in %s", name, session.precision)
        return session
    if precision == BF16:
        log.warning("backend auto: OpenVINO is not installed; darkfold's numba engine runs in float32, "
                    "not bfloat16")
    log.debug("backend auto: numba in f32")
    return None


def _open(model, backend, precision, threads):
    """A session of ``backend`` on ``model``'s ONNX graph."""
    package = backend.module()
    model.check_complete("run it")
    # Imported here, not at the top: the onnx package is an extra, which `import darkfold` and
    # the numba backend never need.
    from .onnx_graph import onnx_model

    try:
        graph = onnx_model(model).SerializeToString()
    except UnsupportedError as error:
        raise _refused(error, backend.name) from None
    try:
        return backend.open(package, graph, threads, precision)
    except Exception as error:  # noqa: BLE001 - neither runtime's errors have a common base class
        raise _not_run(model, error, backend.name) from None


def _refused(error, name):
    """``error`` (a layer the ONNX graph cannot express) said of the backend ``name``."""
    refused = UnsupportedError(f"{error}; backend={name!r} runs the model's ONNX graph: use backend='numba'",
                               path=error.path, line=error.line, layer=error.layer, expected=error.expected,
                               found=error.found)
    refused.warnings = error.warnings
    return refused


def _not_run(model, error, name):
    """An UnsupportedError for a graph the runtime ``name`` refused, naming the layer whose node
    it names (the graph scopes every node by its layer: ``layer_<index>/...``)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    found = re.search(r"layer_(\d+)", str(error))
    if found and int(found.group(1)) < len(model.layers):
        return UnsupportedError.at_layer(model.layers[int(found.group(1))], f" cannot be run by {name}: {text}; "
                                         "use backend='numba'", expected=f"a layer {name} runs", found=text)
    return UnsupportedError(f"{model.cfg.path}: {name} cannot run the model: {text}; use backend='numba'",
                            path=model.cfg.path, expected=f"a model {name} runs", found=text)


def release(model):
    """Free what running ``model`` holds (``Model.release``): the sessions opened for it and its
    engines' worker threads (``runtime.release``). Both also go when it is garbage-collected."""
    with _opening:
        _sessions.pop(model, None)
    runtime_release(model)


def forward(model, x, layers=None, *, fold=True, threads=None, backend=NUMBA, precision=F32):
    """``Model.forward`` on ``backend``: the raw outputs of the head inputs (a backend other than
    numba returns those alone) for NCHW float32 ``x``."""
    session = session_for(model, backend, precision, threads)
    if session is None:
        return engine_forward(model, x, layers, fold=fold, threads=threads)
    if not fold:
        raise ModelError(f"fold=False applies BatchNorm at run time, as darkfold's numba engine does; "
                         f"backend={backend!r} runs the folded ONNX graph", expected="backend='numba'",
                         found=repr(backend))
    heads = model.head_inputs
    wanted = heads if layers is None else check_indices(model, layers)
    if not set(wanted) <= set(heads):
        raise ModelError(f"{model.cfg.path}: layers={wanted}: backend={backend!r} returns the head inputs "
                         f"({', '.join(map(str, sorted(heads)))}); other layers' outputs need backend='numba'",
                         path=model.cfg.path, expected=f"layers among {sorted(heads)}", found=wanted)
    outputs = session(check_input(model, x))
    return {index: outputs[index] for index in wanted}
