"""darkfold.backends: the same outputs and detections on onnxruntime and OpenVINO as on the numba
engine, one session per model and options, and one clear error for what a backend cannot do."""

import logging
import sys

import numpy as np
import oracle
import pytest
from conftest import DATA_DIR, ENGINE_CFGS, modules_loaded_by, write, yolo_blob
from fixtures import NET

import darkfold
from darkfold import backends, options, runtime

ONNXRUNTIME = pytest.param("onnxruntime", marks=pytest.mark.onnxruntime)
OPENVINO = pytest.param("openvino", marks=pytest.mark.openvino)
EVERY_BACKEND = [ONNXRUNTIME, OPENVINO]
IMAGES = sorted(str(path) for path in DATA_DIR.glob("*.jpg"))


def relative_difference(actual, expected):
    assert actual.shape == expected.shape
    return float(np.abs(actual - expected).max()) / max(1.0, float(np.abs(expected).max()))


def test_the_cli_and_the_backend_table_name_the_same_backends():
    assert options.BACKENDS == (options.NUMBA, *backends.BACKENDS)
    assert set(backends.AUTO_ORDER) == set(options.BACKENDS)


# -- the same numbers ------------------------------------------------------------------------------


@pytest.mark.onnxruntime
@pytest.mark.openvino
@pytest.mark.parametrize("name", sorted(ENGINE_CFGS))
def test_yolo_networks_raw_outputs_match_the_engine_on_every_backend(random_yolo, name):
    """One model and one engine run per network, against each backend (a session each)."""
    cfg, weights, _ = random_yolo(name)
    model = darkfold.load(cfg, weights)
    size = model.net.width
    x = np.concatenate([yolo_blob(size), oracle.random_blob(size, size, seed=2)])
    expected = model.forward(x)
    for backend in backends.BACKENDS:
        actual = model.forward(x, backend=backend)
        assert list(actual) == list(expected), backend
        for index, want in expected.items():
            assert relative_difference(actual[index], want) <= 1e-4, (backend, index)


def detections_agree(actual, expected, confidence=0.005, pixels=1.0):
    """Same classes in the same order, boxes within ``pixels``, confidences within ``confidence``."""
    assert [d.class_id for d in actual] == [d.class_id for d in expected]
    for got, want in zip(actual, expected):
        assert abs(got.confidence - want.confidence) <= confidence, (got, want)
        assert np.abs(np.subtract(got.box, want.box)).max() <= pixels, (got, want)


@pytest.mark.parametrize("backend", EVERY_BACKEND)
def test_detections_on_the_sample_images_match_the_engine_in_a_batch_and_alone(tiny_model, backend):
    expected = tiny_model.detect(IMAGES)
    detections_agree(tiny_model.detect(IMAGES[0], backend=backend), expected[0])
    for got, want in zip(tiny_model.detect(IMAGES, backend=backend), expected):  # batches of 4 and 3
        detections_agree(got, want)


@pytest.mark.parametrize("backend", EVERY_BACKEND)
def test_verify_compares_a_backend_with_the_engine(tiny_model, backend):
    check = darkfold.verify(tiny_model, backend=backend)
    assert check.ok and len(check.outputs) == 2 and 0 < check.worst.relative <= 1e-4


@pytest.mark.openvino
def test_bf16_detections_are_those_of_float32_within_iou_0_9_and_0_05(tiny_model):
    """What bfloat16 costs, measured: every float32 detection above 0.3 on the sample images, in
    both preprocessings, has a bfloat16 one of its class with IoU >= 0.9 and a confidence within
    0.05 (the README gives the measured figures: IoU 0.97 and 0.044 at worst)."""
    for letterbox in (False, True):
        exact = tiny_model.detect(IMAGES, letterbox=letterbox, backend="openvino")
        rounded = tiny_model.detect(IMAGES, letterbox=letterbox, backend="openvino", precision="bf16")
        for path, wanted, found in zip(IMAGES, exact, rounded):
            for want in (d for d in wanted if d.confidence > 0.3):
                best = max((d for d in found if d.class_id == want.class_id), default=None,
                           key=lambda d: iou(d.box, want.box))
                assert best is not None and iou(best.box, want.box) >= 0.9, (path, want, best)
                assert abs(best.confidence - want.confidence) <= 0.05, (path, want, best)


def iou(a, b):
    """Intersection over union of two (left, top, width, height) boxes."""
    width = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    height = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(width, 0) * max(height, 0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


@pytest.mark.openvino
def test_bf16_differs_from_float32_so_the_hint_reaches_openvino(tiny_model):
    x = yolo_blob(416)
    exact = tiny_model.forward(x, backend="openvino")
    rounded = tiny_model.forward(x, backend="openvino", precision="bf16")
    assert max(relative_difference(rounded[i], exact[i]) for i in exact) > 1e-3


# -- sessions: once per model and options -----------------------------------------------------------


@pytest.mark.parametrize("backend", EVERY_BACKEND)
def test_a_session_is_opened_once_per_model_and_options_and_released_with_them(backend, tiny_cfg, tiny_weights):
    model = darkfold.load(tiny_cfg, tiny_weights)
    first = backends.session_for(model, backend, threads=1)
    assert backends.session_for(model, backend, threads=1) is first
    assert backends.session_for(model, backend, threads=2) is not first
    model.release()
    assert backends.session_for(model, backend, threads=1) is not first
    model.release()


def test_model_release_frees_its_engines_and_its_backend_sessions(tiny_cfg, tiny_weights, monkeypatch):
    model = darkfold.load(tiny_cfg, tiny_weights)
    monkeypatch.setattr(backends, "_open", lambda model, backend, precision, threads: object())
    backends.session_for(model, "onnxruntime", threads=1)
    engine = runtime.engine_for(model, threads=1)
    model.release()
    assert model not in backends._sessions and model not in runtime._engines
    assert runtime.engine_for(model, threads=1) is not engine
    model.release()


@pytest.mark.onnxruntime
def test_threads_are_onnxruntimes_intra_op_threads(tiny_model):
    for threads in (1, 2):
        session = backends.session_for(tiny_model, "onnxruntime", threads=threads).session
        assert session.get_session_options().intra_op_num_threads == threads


@pytest.mark.openvino
def test_threads_are_openvinos_inference_threads_and_float32_is_asked_for(tiny_model):
    for threads in (1, 2):
        session = backends.session_for(tiny_model, "openvino", threads=threads)
        session(yolo_blob(416))
        compiled = session.compiled[1][0].get_compiled_model()
        assert compiled.get_property("INFERENCE_NUM_THREADS") == threads
        assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"


@pytest.mark.openvino
def test_openvino_compiles_detections_batch_sizes_with_the_session_and_pads_smaller_batches(tiny_cfg, tiny_weights):
    model = darkfold.load(tiny_cfg, tiny_weights)
    session = backends.session_for(model, "openvino", threads=1)
    assert sorted(session.compiled) == [1, options.BATCH]
    x = np.concatenate([yolo_blob(416), oracle.random_blob(416, 416, seed=2), oracle.random_blob(416, 416, seed=3)])
    alone = [session(x[k:k + 1]) for k in range(3)]
    for batch in (2, 3):  # the last batch of a list: run on the BATCH model, the padding dropped
        outputs = session(x[:batch])
        assert sorted(session.compiled) == [1, options.BATCH]
        for index, output in outputs.items():
            assert output.shape[0] == batch
            for k in range(batch):
                assert relative_difference(output[k:k + 1], alone[k][index]) <= 1e-5
    assert session(np.concatenate([x, x])).keys() == alone[0].keys()  # larger than BATCH: compiled then
    assert sorted(session.compiled) == [1, options.BATCH, 6]


@pytest.mark.openvino
def test_bf16_on_a_cpu_without_it_runs_float32_and_says_so(tiny_cfg, tiny_weights, monkeypatch, caplog):
    monkeypatch.setattr(backends, "has_bf16", lambda core: False)
    model = darkfold.load(tiny_cfg, tiny_weights)
    with caplog.at_level(logging.WARNING, logger="darkfold"):
        session = backends.session_for(model, "openvino", "bf16")
    assert session.precision == "f32"
    assert "lacks AVX512_BF16 and AMX; float32 runs instead" in caplog.text


# -- what a backend cannot do -------------------------------------------------------------------------

# size=2 padding=4: windows wholly outside the image, which Darknet's maxpool and the engine
# compute and ONNX pooling cannot express.
WIDE_PADDING = NET + "[convolutional]\nfilters=2\nsize=1\nactivation=leaky\n\n[maxpool]\nsize=2\nstride=2\npadding=4\n"


def wide_padding_model(tmp_path):
    cfg = write(tmp_path / "pad.cfg", WIDE_PADDING)
    oracle.write_random_weights(cfg, tmp_path / "pad.weights", seed=1)
    return darkfold.load(cfg, tmp_path / "pad.weights")


@pytest.mark.parametrize("backend", EVERY_BACKEND)
def test_a_layer_the_backend_cannot_run_is_refused_naming_it(tmp_path, backend):
    model = wide_padding_model(tmp_path)
    with pytest.raises(darkfold.UnsupportedError, match=rf"pad.cfg:10: layer 1 \[maxpool\]: padding=4 .*; "
                                                        rf"backend='{backend}' runs the model's ONNX graph: "
                                                        r"use backend='numba'") as caught:
        model.forward(np.zeros((1, 3, 32, 32), np.float32), backend=backend)
    assert caught.value.layer == 1 and caught.value.line == 10


@pytest.mark.openvino
def test_auto_runs_the_engine_where_the_first_backend_cannot_and_says_so(tmp_path, caplog):
    model = wide_padding_model(tmp_path)
    x = oracle.random_blob(32, 32, seed=1)
    with caplog.at_level(logging.WARNING, logger="darkfold"):
        outputs = model.forward(x, backend="auto")
    assert "running darkfold's numba engine instead" in caplog.text and "layer 1 [maxpool]" in caplog.text
    np.testing.assert_array_equal(outputs[1], model.forward(x)[1])


@pytest.mark.openvino
def test_auto_picks_openvino_where_installed_else_the_engine(tiny_cfg, tiny_weights, monkeypatch, caplog):
    """AUTO_ORDER: OpenVINO, then numba, then onnxruntime (never reached: numba is always installed)."""
    installed = {"openvino": True, "onnxruntime": True}
    monkeypatch.setattr(backends.Backend, "installed", lambda self: installed[self.name])
    with caplog.at_level(logging.DEBUG, logger="darkfold"):
        assert isinstance(backends.session_for(darkfold.load(tiny_cfg, tiny_weights), "auto"), backends.OpenvinoSession)
        installed["openvino"] = False
        assert backends.session_for(darkfold.load(tiny_cfg, tiny_weights), "auto") is None  # numba
        assert backends.session_for(darkfold.load(tiny_cfg, tiny_weights), "auto", "bf16") is None
    assert "backend auto: openvino in f32" in caplog.text and "backend auto: numba in f32" in caplog.text
    assert "OpenVINO is not installed; darkfold's numba engine runs in float32, not bfloat16" in caplog.text


@pytest.mark.parametrize("package", ["runtime", "onnx"])
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_without_its_package_a_backend_names_the_extra_to_install(monkeypatch, backend, package):
    missing = backend if package == "runtime" else package
    monkeypatch.setitem(sys.modules, missing, None)  # any import of it now fails
    with pytest.raises(darkfold.DarkfoldError, match=rf'backend=\'{backend}\' needs the {missing} package: '
                                                     rf'pip install "darkfold\[{backend}\]"'):
        backends.session_for(darkfold.load(), backend)


@pytest.mark.parametrize(("arguments", "message"), [
    ({"backend": "tensorrt"}, "backend='tensorrt': expected one of 'numba', 'onnxruntime', 'openvino', 'auto'"),
    ({"precision": "fp16"}, "precision='fp16': expected 'f32' or 'bf16'"),
    ({"backend": "onnxruntime", "precision": "bf16"}, "precision='bf16' runs on backend='openvino'"),
    ({"backend": "numba", "precision": "bf16"}, "precision='bf16' runs on backend='openvino'"),
])
def test_a_bad_backend_or_precision_is_refused(tiny_model, arguments, message):
    with pytest.raises(darkfold.ModelError, match=message.replace("(", r"\(")):
        tiny_model.forward(yolo_blob(416), **arguments)
    with pytest.raises(darkfold.ModelError, match=message.replace("(", r"\(")):
        tiny_model.detect(str(DATA_DIR / "dog.jpg"), **arguments)


@pytest.mark.onnxruntime
def test_other_backends_return_the_head_inputs_and_fold(tiny_model):
    x = yolo_blob(416)
    assert list(tiny_model.forward(x, [22], backend="onnxruntime")) == [22]
    with pytest.raises(darkfold.ModelError, match=r"layers=\[3\]: backend='onnxruntime' returns the head inputs "
                                                  r"\(15, 22\); other layers' outputs need backend='numba'"):
        tiny_model.forward(x, [3], backend="onnxruntime")
    with pytest.raises(darkfold.ModelError, match="fold=False applies BatchNorm at run time"):
        tiny_model.forward(x, fold=False, backend="onnxruntime")


def test_a_model_without_weights_cannot_run_on_a_backend(tiny_cfg):
    with pytest.raises(darkfold.ModelError, match="no weights: load the model with its .weights file to run it"):
        darkfold.load(tiny_cfg).forward(yolo_blob(416), backend="onnxruntime")


def test_the_numba_backend_loads_neither_onnx_nor_a_runtime():
    script = "import numpy as np, darkfold\ndarkfold.load().forward(np.zeros((1, 3, 416, 416), np.float32))\n"
    assert modules_loaded_by(script, "onnx", "onnxruntime", "openvino", "numba") == {"numba"}


def test_nan_from_a_backend_where_the_engine_is_finite_is_blamed_on_the_backend(tiny_cfg, monkeypatch):
    def nan_session(model, backend, precision, threads):
        def session(x):
            outputs = runtime.forward(model, x, model.head_inputs)
            outputs[model.head_inputs[0]][0, 0, 0, 0] = np.nan
            return outputs
        return session

    monkeypatch.setattr(backends, "_open", nan_session)
    model = darkfold.load()
    with pytest.raises(darkfold.ModelError) as error:
        model.detect(IMAGES[0], backend="onnxruntime")
    assert str(error.value).startswith(f"{tiny_cfg}:123: layer 15 [convolutional]: backend='onnxruntime' outputs "
                                       "NaN or inf here on this input, where darkfold's numba engine's outputs are "
                                       "finite")


@pytest.mark.onnxruntime  # for onnx, which builds the graph
def test_a_backend_installed_but_failing_to_import_is_named_and_auto_skips_it(tmp_path, monkeypatch, caplog):
    (tmp_path / "broken_runtime.py").write_text("raise TypeError('Descriptors cannot be created directly')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    broken = backends.Backend("openvino", "broken_runtime", "openvino", backends.OpenvinoSession)
    monkeypatch.setitem(backends.BACKENDS, "openvino", broken)
    with pytest.raises(darkfold.DarkfoldError, match=r"backend='openvino': the broken_runtime package is installed "
                                                     r"but fails to import: TypeError: Descriptors cannot"):
        backends.session_for(darkfold.load(), "openvino")
    with caplog.at_level(logging.WARNING, logger="darkfold"):
        assert backends.session_for(darkfold.load(), "auto") is None  # numba, next in AUTO_ORDER
    assert "backend auto: skipping openvino: backend='openvino': the broken_runtime package is installed" in caplog.text
