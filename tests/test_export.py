"""darkfold.export_onnx and onnx_graph: the ONNX graph against darkfold's engine, under
onnxruntime (and, in the OpenCV 5 environment, under cv2.dnn.readNetFromONNX)."""

import os
import re
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime
import oracle
import pytest
from conftest import DATA_DIR, ENGINE_CFGS, REPO, modules_loaded_by, write, yolo_blob
import fixtures
from fixtures import NET, ONE_OF_EACH_TYPE
from oracle import needs_opencv5

import darkfold
from darkfold import activations, onnx_export, onnx_graph
from darkfold.detect import Detector, decode_heads
from darkfold.engine import STEPS
from darkfold.onnx_graph import onnx_model


def within(actual, expected, tolerance=1e-4):
    """Max abs difference against tolerance * max(1, max |expected|), and that limit."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    limit = tolerance * max(1.0, float(np.abs(expected).max()))
    return float(np.abs(actual - expected).max()), limit


def run(proto_or_path, x):
    """``{output name: array}`` of an ONNX model under onnxruntime on ``x``."""
    source = proto_or_path.SerializeToString() if isinstance(proto_or_path, onnx.ModelProto) else str(proto_or_path)
    session = onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": x})))


def with_outputs(proto, names):
    """A copy of ``proto`` that also outputs the tensors ``names`` (the graph names each layer's
    output ``layer_<index>``), so one session checks a decoded graph's layers too."""
    proto = onnx.shape_inference.infer_shapes(proto)  # a copy; OpenCV 5.0 wants an output's shape
    inferred = {value.name: value for value in proto.graph.value_info}
    outputs = {output.name for output in proto.graph.output}
    proto.graph.output.extend(inferred[name] for name in names if name in inferred and name not in outputs)
    return proto


def expected_outputs(model, x, layers=None):
    """What the graph must give: model.forward's raw outputs as ``layer_<index>``, and the heads
    decoded by darkfold's detection (``decode_heads``) as ``boxes`` and ``scores``."""
    raw = model.forward(x, layers=layers)
    expected = {f"layer_{i}": output for i, output in raw.items()}
    if any(layer.is_head for layer in model.layers):
        expected["boxes"], expected["scores"] = decode_heads(model, model.forward(x))
    return expected


def assert_matches(model, proto, x, layers=None):
    got = run(proto, x)
    expected = expected_outputs(model, x, layers)
    compared = 0
    for name, want in expected.items():
        if name in got:
            difference, limit = within(got[name], want)
            assert difference <= limit, f"{name}: {difference:.3g} > {limit:.3g}"
            compared += 1
    return compared


# -- one rule per layer type, one form per activation -------------------------------------------


def test_every_layer_type_the_engine_runs_has_an_onnx_rule_and_no_other():
    assert set(onnx_graph.LAYERS) == set(STEPS)


def test_every_activation_the_engine_runs_has_an_onnx_form_and_no_other():
    assert set(onnx_graph.ACTIVATIONS) == set(activations.ACTIVATIONS)


def _activation_graph(name, opset):
    g = onnx_graph.Graph(opset, ())
    y = onnx_graph.ACTIVATIONS[name](g, "images")
    if y == "images":
        g.nodes.append(onnx.helper.make_node("Identity", ["images"], ["y"]))
    else:
        g.nodes[-1].output[0] = "y"
    graph = onnx.helper.make_graph(g.nodes, name, [onnx.helper.make_tensor_value_info("images", 1, [None])],
                                   [onnx.helper.make_tensor_value_info("y", 1, [None])], g.initializers)
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _values():
    edges = [-80.0, -30.0, -20.0, -4.5, -4.0, -3.5, -2.0, -1.5, -1.0, -0.0, 0.0, 0.5, 1.0, 1.5, 3.5, 4.0, 4.5,
             6.0, 20.0, 25.0]
    return np.concatenate([np.linspace(-50, 50, 2001), edges]).astype(np.float32)


@pytest.mark.parametrize("name, opset", [(name, 17) for name in sorted(activations.ACTIVATIONS)] + [("mish", 18)])
def test_each_activations_onnx_form_computes_its_darknet_formula(name, opset):
    x = _values()
    if name == "stair":  # a step at each integer: compare away from the steps
        x = x[np.abs(x - np.round(x)) > 1e-3]
    session = onnxruntime.InferenceSession(_activation_graph(name, opset).SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"images": x})
    with np.errstate(over="ignore"):
        expected = np.array([activations.ACTIVATIONS[name].formula(v) for v in x], np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_mish_is_the_onnx_operator_from_opset_18_and_softplus_tanh_before():
    assert [n.op_type for n in _activation_graph("mish", 17).graph.node] == ["Softplus", "Tanh", "Mul"]
    assert [n.op_type for n in _activation_graph("mish", 18).graph.node] == ["Mish"]


# -- the YOLO networks, raw and decoded, at batch 1 and 3 ----------------------------------------


@pytest.mark.parametrize("name", sorted(ENGINE_CFGS))
def test_yolo_networks_raw_and_decoded_match_the_engine_at_batch_1_and_3(random_yolo, name):
    """One graph per network: the decoded export, which names every layer's output
    ``layer_<index>``, made to output the raw head inputs as well."""
    cfg, weights, _ = random_yolo(name)
    model = darkfold.load(cfg, weights)
    proto = onnx_model(model, decode=True)
    both = with_outputs(proto, [f"layer_{i}" for i in model.head_inputs])
    size = model.net.width
    x = np.concatenate([yolo_blob(size), oracle.random_blob(size, size, seed=2), oracle.random_blob(size, size, 3)])
    assert assert_matches(model, both, x) == len(set(model.head_inputs)) + 2
    assert assert_matches(model, both, x[1:2]) == len(set(model.head_inputs)) + 2


# -- every other layer type and activation --------------------------------------------------------

# fixtures.EVERY_LAYER_CFG (layers 0 to 18, its last output 1 x 1 x 10), then the rest.
EVERY_LAYER_CFG = fixtures.EVERY_LAYER_CFG + """
# 19, 20: ten values scaled and doubled: stair's steps are far from all of them
[upsample]
stride=1
scale=-7.3

[shortcut]
from=-1
activation=stair

# 21: [sam]'s 6 x 6 x 16, then the other activations
[route]
layers=15

[convolutional]
batch_normalize=1
filters=16
size=1
activation=revleaky

[convolutional]
filters=16
size=1
activation=relu

[convolutional]
filters=16
size=1
activation=elu

# 25
[convolutional]
filters=16
size=1
activation=selu

[convolutional]
filters=16
size=1
activation=relie

[convolutional]
filters=16
size=1
activation=ramp

[convolutional]
filters=16
size=1
activation=loggy

[convolutional]
filters=16
size=3
pad=1
activation=plse

# 30
[convolutional]
filters=16
size=3
pad=1
activation=hardtan

[convolutional]
filters=16
size=3
pad=1
activation=lhtan

# 32: 6x6x16 -> 3x3x64 -> 6x6x16 -> 3x3x64 -> 6x6x16, each in Darknet's own order
[reorg]
stride=2

[reorg3d]
stride=2
reverse=1

[reorg3d]
stride=2

# 35
[reorg]
stride=2
reverse=1

[batchnorm]

# 37: a grid of 2 anchors x (4 + 1 + 3 classes)
[convolutional]
filters=16
size=1
activation=linear

[region]
anchors=1.1,1.4, 2.5,1.8
classes=3
coords=4
num=2
softmax=1

# 39: no activation= is logistic in Darknet
[connected]
output=6
"""


@pytest.fixture(scope="module")
def every_layer_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("every")
    cfg = write(folder / "every.cfg", EVERY_LAYER_CFG)
    oracle.write_random_weights(cfg, folder / "every.weights", seed=3)
    return darkfold.load(cfg, folder / "every.weights")


def test_the_every_layer_cfg_holds_every_type_and_activation_the_engine_runs(every_layer_model):
    assert {layer.type for layer in every_layer_model.layers} == set(STEPS) - {"yolo", "Gaussian_yolo", "detection"}
    used = {getattr(layer, "activation", "linear") for layer in every_layer_model.layers}
    assert used == set(activations.ACTIVATIONS)


@pytest.mark.parametrize("opset", [onnx_graph.MIN_OPSET, onnx_graph.DEFAULT_OPSET, onnx_graph.MISH_OPSET])
def test_every_layer_of_every_other_type_matches_the_engine(every_layer_model, opset):
    model = every_layer_model
    proto = onnx_model(model, decode=True, opset=opset)
    onnx.checker.check_model(proto, full_check=True)
    layers = range(len(model.layers))
    x = np.random.default_rng(4).random((3, 3, 24, 24), dtype=np.float32)
    compared = assert_matches(model, with_outputs(proto, [f"layer_{i}" for i in layers]), x, layers)
    aliases = {layer.index for layer in model.layers if layer.type in ("region", "dropout")} | {21}
    assert compared == len(model.layers) - len(aliases) + 2  # each layer that computes, boxes, scores


# -- the bundled YOLOv3-tiny, written and read back -----------------------------------------------


@pytest.fixture(scope="module")
def tiny_exports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    model = darkfold.load()
    return model, {decode: darkfold.export_onnx(model, folder / f"tiny-{decode}.onnx", decode=decode)
                   for decode in (False, True)}


@pytest.mark.parametrize("decode", [False, True])
def test_the_real_yolov3_tiny_written_and_read_back_matches_the_engine_at_batch_1_and_3(tiny_exports, decode):
    model, exports = tiny_exports
    export = exports[decode]
    x = np.concatenate([oracle.image_blob(DATA_DIR / "dog.jpg", (416, 416)),
                        np.random.default_rng(5).random((2, 3, 416, 416), dtype=np.float32)])
    for batch in (x, x[:1]):
        got = run(export.path, batch)
        assert list(got) == (["boxes", "scores"] if decode else ["layer_15", "layer_22"])
        assert assert_matches(model, onnx.load(export.path), batch) == 2


def test_an_export_says_what_it_wrote_and_that_onnxruntime_checked_it(tiny_exports):
    _, exports = tiny_exports
    raw, decoded = exports[False], exports[True]
    assert raw.opset == 17 and raw.input == ("batch", 3, 416, 416)
    assert raw.outputs == {"layer_15": ("batch", 255, 13, 13), "layer_22": ("batch", 255, 26, 26)}
    assert decoded.outputs == {"boxes": ("batch", 2535, 4), "scores": ("batch", 2535, 80)}
    assert raw.size == os.path.getsize(raw.path)
    assert raw.verification.ok and [o.layer for o in raw.verification.outputs] == [15, 22]
    assert [o.layer for o in decoded.verification.outputs] == ["boxes", "scores"]


def test_the_file_passes_the_full_onnx_check_and_names_darkfold_the_cfg_and_the_classes(tiny_exports):
    _, exports = tiny_exports
    path = exports[True].path
    onnx.checker.check_model(path, full_check=True)
    proto = onnx.load(path)
    assert proto.producer_name == "darkfold" and proto.producer_version == darkfold.__version__
    metadata = {p.key: p.value for p in proto.metadata_props}
    assert metadata["darkfold_version"] == darkfold.__version__
    assert metadata["cfg"] == "yolov3-tiny.cfg" and metadata["classes"] == "80"
    (images,) = proto.graph.input
    dims = images.type.tensor_type.shape.dim
    assert images.name == "images" and images.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, 416, 416]


def test_the_initializers_are_the_folded_float32_weights(tiny_exports):
    model, exports = tiny_exports
    initializers = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(exports[False].path).graph.initializer}
    folded = model.fold()
    for layer in model.layers:
        if layer.type == "convolutional":
            for name in ("weights", "biases"):
                array = initializers[f"layer_{layer.index}/{name}"]
                assert array.dtype == np.float32
                np.testing.assert_array_equal(array, folded.params[layer.index][name])
    assert not any(name.endswith(("rolling_mean", "rolling_variance")) for name in initializers)


def test_a_fixed_batch_is_written_into_every_shape(tmp_path):
    model = darkfold.load()
    export = darkfold.export_onnx(model, tmp_path / "b3.onnx", batch=3, verify=False)
    proto = onnx.load(export.path)
    for value in [*proto.graph.input, *proto.graph.output]:
        assert value.type.tensor_type.shape.dim[0].dim_value == 3
    assert export.outputs["layer_15"] == (3, 255, 13, 13) and export.verification is None


def test_an_export_is_verified_on_the_fixed_batch(tmp_path):
    export = darkfold.export_onnx(darkfold.load(), tmp_path / "b2.onnx", batch=2, decode=True)
    assert [o.shape for o in export.verification.outputs] == [(2, 2535, 4), (2, 2535, 80)]


def test_maxpool_pads_as_darknet_does_and_never_with_auto_pad(tiny_exports):
    """yolov3-tiny's layer 11, size=2 stride=1: Darknet's padding 1 falls after the image."""
    _, exports = tiny_exports
    pools = [n for n in onnx.load(exports[False].path).graph.node if n.op_type == "MaxPool"]
    attributes = {n.name: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in pools}
    assert all("auto_pad" not in a for a in attributes.values())
    assert attributes["layer_11"]["pads"] == [0, 0, 1, 1] and attributes["layer_11"]["strides"] == [1, 1]


def test_upsample_is_resize_nearest_asymmetric_round_prefer_floor(tiny_exports):
    _, exports = tiny_exports
    (resize,) = [n for n in onnx.load(exports[False].path).graph.node if n.op_type == "Resize"]
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in resize.attribute}
    assert attributes == {"mode": b"nearest", "coordinate_transformation_mode": b"asymmetric",
                          "nearest_mode": b"round_prefer_floor"}


def test_reorg_is_darknets_permutation_not_space_to_depth(every_layer_model):
    ops = {n.op_type for n in onnx_model(every_layer_model).graph.node}
    assert "SpaceToDepth" not in ops and "DepthToSpace" not in ops


# -- bad inputs: one clear error, nothing written --------------------------------------------------


def test_a_layer_onnx_cannot_express_is_refused_with_its_line_and_nothing_is_written(tmp_path):
    cfg = write(tmp_path / "local.cfg", ONE_OF_EACH_TYPE["local"])
    oracle.write_random_weights(cfg, tmp_path / "local.weights", seed=1)
    model = darkfold.load(cfg, tmp_path / "local.weights")
    with pytest.raises(darkfold.UnsupportedError, match=r"local.cfg:5: layer 0 \[local\] cannot be exported to "
                                                        r"ONNX") as caught:
        darkfold.export_onnx(model, tmp_path / "local.onnx")
    assert caught.value.layer == 0 and caught.value.line == 5
    assert sorted(os.listdir(tmp_path)) == ["local.cfg", "local.weights"]


def test_an_activation_the_engine_does_not_run_is_refused_naming_the_layer(tmp_path):
    cfg = write(tmp_path / "m.cfg", NET + "[maxpool]\n[shortcut]\nfrom=-1\nactivation=normalize_channels\n")
    model = darkfold.load(cfg, write(tmp_path / "m.weights", oracle.header_bytes()))
    with pytest.raises(darkfold.UnsupportedError, match=r"m.cfg:6: layer 1 \[shortcut\]: "
                                                        r"activation=normalize_channels cannot be exported"):
        onnx_model(model)


@pytest.mark.parametrize("kind", ["Gaussian_yolo", "detection"])
def test_decoding_a_head_darknets_detector_does_not_decode_is_refused(tmp_path, kind):
    cfg = write(tmp_path / "h.cfg", ONE_OF_EACH_TYPE[kind])
    oracle.write_random_weights(cfg, tmp_path / "h.weights", seed=1)
    model = darkfold.load(cfg, tmp_path / "h.weights")
    onnx_model(model)  # raw: the head's input, as forward returns it
    with pytest.raises(darkfold.UnsupportedError, match=rf"layer 1 \[{kind}\]: --decode decodes \[yolo\] and "
                                                        r"\[region\] heads only"):
        onnx_model(model, decode=True)


def test_an_output_over_an_input_is_refused_and_the_input_is_unchanged(tmp_path, tiny_cfg, tiny_weights):
    weights = write(tmp_path / "copy.weights", tiny_weights.read_bytes())
    model = darkfold.load(tiny_cfg, weights)
    with pytest.raises(darkfold.OutputError, match="would overwrite the input"):
        darkfold.export_onnx(model, weights)
    assert weights.read_bytes() == tiny_weights.read_bytes()
    link = tmp_path / "link.onnx"
    link.symlink_to(weights)
    with pytest.raises(darkfold.OutputError, match="would overwrite the input"):
        darkfold.export_onnx(model, link, force=True)
    assert weights.read_bytes() == tiny_weights.read_bytes()


def test_an_existing_file_is_replaced_only_with_force(tmp_path):
    model = darkfold.load()
    out = write(tmp_path / "x.onnx", "mine")
    with pytest.raises(darkfold.OutputError, match=r"x.onnx: already exists; use --force"):
        darkfold.export_onnx(model, out, verify=False)
    assert out.read_text() == "mine" and os.listdir(tmp_path) == ["x.onnx"]
    darkfold.export_onnx(model, out, force=True, verify=False)
    onnx.checker.check_model(str(out))


def test_a_failed_check_writes_nothing(tmp_path, monkeypatch):
    def shifted(model, x, **options):
        return {name: value + 1 for name, value in reference(model, x, **options).items()}

    reference = onnx_export.reference_outputs
    monkeypatch.setattr(onnx_export, "reference_outputs", shifted)
    with pytest.raises(darkfold.VerificationError, match=r"t.onnx: the exported model does not reproduce .* "
                                                         r"nothing was written") as caught:
        darkfold.export_onnx(darkfold.load(), tmp_path / "t.onnx")
    assert not caught.value.verification.ok and os.listdir(tmp_path) == []


@pytest.mark.parametrize("options, message", [
    ({"opset": 12}, "opset=12: darkfold writes opsets 13 to"),
    ({"opset": 10**6}, "opset=1000000: darkfold writes opsets 13 to"),
    ({"opset": "17"}, "opset='17'"),
    ({"batch": 0}, "batch=0: expected a whole number of at least 1"),
    ({"batch": 2.0}, "batch=2.0: expected a whole number"),
])
def test_a_bad_opset_or_batch_is_refused_before_anything_is_written(tmp_path, options, message):
    with pytest.raises(darkfold.ModelError, match=re.escape(message)):
        darkfold.export_onnx(darkfold.load(), tmp_path / "x.onnx", **options)
    assert os.listdir(tmp_path) == []


def test_weights_past_protobufs_2_gb_are_refused_before_anything_is_built(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_graph, "MAX_BYTES", 4 * darkfold.load().param_count)
    with pytest.raises(darkfold.UnsupportedError, match=r"yolov3-tiny.cfg: 35,434,936 bytes of weights; an ONNX file holds less "):
        darkfold.export_onnx(darkfold.load(), tmp_path / "x.onnx")
    assert os.listdir(tmp_path) == []


def test_a_model_without_weights_cannot_be_exported(tiny_cfg, tmp_path):
    with pytest.raises(darkfold.ModelError, match="no weights: load the model with its .weights file to export it"):
        darkfold.export_onnx(darkfold.load(tiny_cfg), tmp_path / "x.onnx")


def test_without_the_onnx_package_export_names_the_extra_to_install(tmp_path):
    script = ("import sys; sys.modules['onnx'] = None  # any 'import onnx' now fails\n"
              "import darkfold\n"
              "try:\n"
              "    darkfold.export_onnx(darkfold.load(), sys.argv[1])\n"
              "except darkfold.DarkfoldError as error:\n"
              "    print(error)\n")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "x.onnx")], capture_output=True,
                            text=True, cwd=REPO, check=True)
    assert result.stdout == 'exporting to ONNX needs the onnx package: pip install "darkfold[onnx]"\n'
    assert os.listdir(tmp_path) == []


def test_without_onnxruntime_the_file_is_written_unverified_with_a_warning(tmp_path):
    script = ("import sys; sys.modules['onnxruntime'] = None\n"
              "import darkfold\n"
              "export = darkfold.export_onnx(darkfold.load(), sys.argv[1])\n"
              "print(export.verification, *export.warnings)\n")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "x.onnx")], capture_output=True,
                            text=True, cwd=REPO, check=True)
    assert result.stdout == (f"None {tmp_path / 'x.onnx'}: not verified: onnxruntime is not installed "
                             '(pip install "darkfold[onnxruntime]")\n')
    onnx.checker.check_model(str(tmp_path / "x.onnx"), full_check=True)


def test_import_darkfold_loads_neither_onnx_nor_onnxruntime_and_the_exporter_neither_numba_nor_opencv():
    modules = ("onnx", "onnxruntime", "numba", "cv2")
    assert modules_loaded_by("import darkfold", *modules) == set()
    assert modules_loaded_by("import darkfold; darkfold.export_onnx", *modules) == {"onnx", "onnxruntime"}


# -- the README's example: NMS outside the graph ---------------------------------------------------


def readme_example():
    """The onnxruntime example in README.md's export section, as it stands there."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    (example,) = [block for block in blocks if "onnxruntime.InferenceSession" in block]
    return example


def detection_lines(detections):
    """Darknet's facts of each detection: class, percent, box in whole pixels; in a set."""
    return {f"{d.name}: {d.darknet_line().split(': ')[1].split('%')[0]}% {' '.join(map(str, d.pixel_box()))}"
            for d in detections}


def test_the_readme_example_gives_the_detections_of_darkfold_detect(tmp_path):
    darkfold.export_onnx(darkfold.load(), tmp_path / "yolov3-tiny.onnx", decode=True, verify=False)
    for name in ("dog.jpg", "coco.names"):
        (tmp_path / name).write_bytes((REPO / "darkfold" / "data" / name).read_bytes())
    example = readme_example()
    assert len([line for line in example.splitlines() if line.strip()]) <= 15
    result = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, cwd=tmp_path,
                            check=True)
    printed = set(result.stdout.splitlines())
    expected = detection_lines(darkfold.load().detect(DATA_DIR / "dog.jpg"))
    assert len(expected) == 6 and printed == expected


# -- OpenCV 5, which reads ONNX and no longer Darknet -----------------------------------------------

OPENCV5_MODELS = ("yolov3-tiny", "yolov4-tiny", "yolov4-csp")


def opencv5_model(random_yolo, name):
    """The bundled, real yolov3-tiny; the others with random weights at a small size, their heads'
    objectness and class biases lowered so that they detect dozens of objects, as a trained model
    does, not thousands (each a chance for a difference of 1e-6 to cross the threshold)."""
    if name == "yolov3-tiny":
        return darkfold.load()
    cfg, weights, _ = random_yolo(name)
    model = darkfold.load(cfg, weights)
    for head in model.layers:
        if head.type == "yolo":
            conv = head.index - 1
            biases = np.array(model.params[conv]["biases"]).reshape(head.boxes, -1)
            biases[:, 4] -= 4
            biases[:, 5:] -= 3
            model.params[conv] = {**model.params[conv], "biases": biases.reshape(-1)}
    return model


def opencv5_run(path, x, names):
    import cv2

    net = cv2.dnn.readNetFromONNX(str(path))
    net.setInput(x, "images")
    return dict(zip(names, net.forward(list(names))))


@needs_opencv5
@pytest.mark.parametrize("name", OPENCV5_MODELS)
def test_opencv5_reads_the_export_and_gives_darkfolds_outputs_and_detections_on_dog_jpg(random_yolo, tmp_path,
                                                                                         name):
    import cv2

    model = opencv5_model(random_yolo, name)
    export = darkfold.export_onnx(model, tmp_path / f"{name}.onnx")
    detector = Detector(model)
    image = cv2.imread(str(DATA_DIR / "dog.jpg"))
    x = detector.preprocess(image)
    got = opencv5_run(export.path, x, export.outputs)
    expected = model.forward(x)
    for index, want in expected.items():
        difference, limit = within(got[f"layer_{index}"], want)
        assert difference <= limit, f"layer {index}: {difference:.3g} > {limit:.3g}"
    ours = detector.detect(image)
    theirs = detector.decode({index: got[f"layer_{index}"] for index in expected}, image.shape[1], image.shape[0])
    assert len(ours) >= 6
    assert [(d.class_id, d.pixel_box()) for d in theirs] == [(d.class_id, d.pixel_box()) for d in ours]
    np.testing.assert_allclose([d.confidence for d in theirs], [d.confidence for d in ours], atol=1e-4)


@needs_opencv5
def test_opencv5_runs_the_decoded_export_and_a_batch(tiny_exports):
    model, exports = tiny_exports
    export = exports[True]
    x = np.concatenate([oracle.image_blob(DATA_DIR / "dog.jpg", (416, 416)),
                        np.random.default_rng(6).random((2, 3, 416, 416), dtype=np.float32)])
    got = opencv5_run(export.path, x, export.outputs)
    boxes, scores = decode_heads(model, model.forward(x))
    for name, want in (("boxes", boxes), ("scores", scores)):
        difference, limit = within(got[name], want)
        assert difference <= limit, f"{name}: {difference:.3g} > {limit:.3g}"


@needs_opencv5
def test_opencv5_runs_every_other_layer_type_and_activation(every_layer_model, tmp_path):
    model = every_layer_model
    layers = range(len(model.layers))
    proto = with_outputs(onnx_model(model, decode=True), [f"layer_{i}" for i in layers])
    onnx.save(proto, tmp_path / "every.onnx")
    x = np.random.default_rng(7).random((2, 3, 24, 24), dtype=np.float32)
    names = [o.name for o in proto.graph.output]
    got = opencv5_run(tmp_path / "every.onnx", x, names)
    expected = expected_outputs(model, x, layers)
    for name in names:
        difference, limit = within(got[name], expected[name])
        assert difference <= limit, f"{name}: {difference:.3g} > {limit:.3g}"
