"""The forward pass against OpenCV 4.x's Darknet importer, folded against unfolded, and bad input."""

import os
import re
import subprocess
import sys

import numpy as np
import oracle
import pytest
from conftest import ENGINE_CFGS, REPO, yolo_blob as blob
from fixtures import EVERY_LAYER_CFG
from oracle import needs_opencv_darknet

import darkfold
from darkfold.convolution import Convolution, WinogradConvolution, make_convolution
from darkfold.engine import STEPS, Engine
from darkfold.step import Step
from darkfold.runtime import engine_for
from darkfold.layers import TYPES

def within(actual, expected, tolerance=1e-4):
    """Max abs difference against tolerance * max(1, max |expected|), and that limit."""
    limit = tolerance * max(1.0, float(np.abs(expected).max()))
    return float(np.abs(actual - expected).max()), limit


def assert_every_layer_matches_a_float64_reference(model, x, threads=None, **options):
    """``model.forward(x, **options)``, every layer of every image, against oracle.numpy_forward.
    With ``threads``, on an engine of that many threads, even more than the CPUs (which forward
    would cap), so that parts split unevenly on any machine."""
    layers = range(len(model.layers))
    if threads is None:
        ours = model.forward(x, layers=layers, **options)
    else:
        ours = Engine(model, threads=threads, fuse=False, **options).forward(x, layers)
    for image in range(x.shape[0]):
        expected = oracle.numpy_forward(model.layers, model.params, x[image].astype(np.float64))
        for layer, want in zip(model.layers, expected):
            got = ours[layer.index][image]
            assert got.shape == want.shape, layer.index
            difference, limit = within(got, want)
            assert difference <= limit, f"layer {layer.index} [{layer.type}]: {difference:.3g} > {limit:.3g}"


@pytest.fixture(scope="module")
def random_models(random_yolo):
    """name -> (model with random weights at the small size, its cfg, weights with OpenCV's BN eps)."""
    made = {}

    def make(name):
        if name not in made:
            cfg, weights, bumped = random_yolo(name)
            made[name] = (darkfold.load(cfg, weights), cfg, bumped)
        return made[name]

    return make


@needs_opencv_darknet
@pytest.mark.parametrize("name", sorted(ENGINE_CFGS))
def test_head_inputs_match_opencv(random_models, name):
    model, cfg, bumped = random_models(name)
    x = blob(model.net.width)
    ours = model.forward(x)
    assert list(ours) == oracle.head_inputs(model.layers)
    theirs = oracle.opencv_outputs(cfg, bumped, x, list(ours))
    for index, output in ours.items():
        assert output.dtype == np.float32 and output.shape == theirs[index].shape
        difference, limit = within(output, theirs[index])
        assert difference <= limit, f"{name} layer {index}: {difference:.3g} > {limit:.3g}"


@pytest.mark.parametrize("name", sorted(ENGINE_CFGS))
def test_folded_and_unfolded_agree(random_models, name):
    model, _, _ = random_models(name)
    x = blob(model.net.width)
    folded, unfolded = model.forward(x), model.forward(x, fold=False)
    for index in folded:
        difference, limit = within(folded[index], unfolded[index])
        assert difference <= limit, f"{name} layer {index}: {difference:.3g} > {limit:.3g}"


@needs_opencv_darknet
def test_convolutions_writing_into_a_route_give_every_layer_opencvs_output(random_models):
    """In yolov4-tiny, convolutions that only a [route] reads write into the route's buffer
    (Engine._concat_in_place); asked for, their outputs and the routes' match OpenCV's."""
    model, cfg, bumped = random_models("yolov4-tiny")
    engine = engine_for(model)
    assert engine.in_place, "no convolution writes into a route"
    wanted = sorted({*engine.in_place, *engine.in_place.values()})
    x = np.concatenate([blob(model.net.width)] * 2)  # batch 2: the buffers of another plan
    ours = model.forward(x, layers=wanted)
    theirs = oracle.opencv_outputs(cfg, bumped, x, wanted)
    for index in wanted:
        difference, limit = within(ours[index], theirs[index])
        assert difference <= limit, f"layer {index}: {difference:.3g} > {limit:.3g}"


IN_PLACE_CFG = """[net]
width=64
height=64
channels=3

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=32
size=3
stride=1
pad=1
activation=leaky

# 2: Winograd by tiles, written into route 3 at channel 32
[convolutional]
batch_normalize=1
filters=24
size=3
stride=1
pad=1
activation=mish

[route]
layers=-2,-1

[maxpool]
size=4
stride=4

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

# 6: Winograd by channels (16x16), into route 7 at channel 16
[convolutional]
batch_normalize=1
filters=32
size=3
stride=1
pad=1
activation=leaky

[route]
layers=-2,-1

# 8: into route 11 at channel 0, though route 9 runs in between
[convolutional]
batch_normalize=1
filters=8
size=1
stride=1
pad=0
activation=leaky

[route]
layers=-2

# 10: into route 11 at channel 8
[convolutional]
filters=12
groups=4
size=3
stride=1
pad=1
activation=linear

[route]
layers=-3,-1
"""


def test_convolutions_write_into_routes_at_their_channels(tmp_path):
    """Winograd by tiles and by channels, a 1x1 run before an unrelated route, and a grouped
    convolution, each writing its channels of a [route]'s buffer: every layer against the
    float64 reference, at batch 2 and on 1 and 3 threads."""
    cfg = tmp_path / "in-place.cfg"
    cfg.write_text(IN_PLACE_CFG)
    oracle.write_random_weights(cfg, tmp_path / "in-place.weights", seed=11)
    model = darkfold.load(cfg, tmp_path / "in-place.weights")
    assert engine_for(model).in_place == {2: 3, 6: 7, 8: 11, 10: 11}
    x = np.random.default_rng(12).random((2, 3, 64, 64), dtype=np.float32)
    for threads in (1, 3):
        assert_every_layer_matches_a_float64_reference(model, x, threads=threads)


@pytest.fixture(scope="module")
def every_layer_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("every")
    cfg = folder / "every.cfg"
    cfg.write_text(EVERY_LAYER_CFG)
    oracle.write_random_weights(cfg, folder / "every.weights", seed=3)
    return darkfold.load(cfg, folder / "every.weights")


@pytest.mark.parametrize("fold", [True, False])
def test_every_layer_type_matches_a_float64_reference(every_layer_model, fold):
    x = np.random.default_rng(4).random((2, 3, 24, 24), dtype=np.float32)
    assert_every_layer_matches_a_float64_reference(every_layer_model, x, fold=fold)


def test_a_batch_gives_each_image_its_own_result(tiny_model):
    x = np.random.default_rng(5).random((3, 3, 416, 416), dtype=np.float32)
    together = tiny_model.forward(x)
    for image in range(3):
        alone = tiny_model.forward(x[image:image + 1])
        for index in together:
            difference, limit = within(together[index][image], alone[index][0], 1e-6)
            assert difference <= limit


def test_a_batch_large_enough_for_small_maps_to_run_by_tiles_gives_each_image_its_own_result(tiny_model):
    """yolov3-tiny's 13x13 Winograd layers run by blocks of channels on one image and store
    their weights transposed (WinogradConvolution.prepare); from 11 images on two threads, layer 12 has
    the tiles to run by tiles, with those weights."""
    x = np.random.default_rng(9).random((12, 3, 416, 416), dtype=np.float32)
    together = tiny_model.forward(x, layers=[12])[12]
    for image in (0, 11):
        alone = tiny_model.forward(x[image:image + 1], layers=[12])[12]
        difference, limit = within(together[image], alone[0], 1e-6)
        assert difference <= limit


def test_thread_count_does_not_change_the_result(tiny_model):
    x = np.random.default_rng(6).random((1, 3, 416, 416), dtype=np.float32)
    # Three threads, even on fewer CPUs (which forward would cap): parts split unevenly.
    one, three = tiny_model.forward(x, threads=1), Engine(tiny_model, threads=3).forward(x, tiny_model.head_inputs)
    for index in one:
        difference, limit = within(three[index], one[index], 1e-6)
        assert difference <= limit


def test_convolutions_that_apply_the_next_maxpool_agree_with_running_both(tiny_model):
    """yolov3-tiny's convolutions 0, 2, 4 and 6 apply the 2x2 stride-2 [maxpool] after them and
    never store their own outputs (8 does not: a [route] reads it). Asking for one of those
    outputs runs the layers one by one instead."""
    assert engine_for(tiny_model).fused == {0, 2, 4, 6}
    x = np.random.default_rng(8).random((2, 3, 416, 416), dtype=np.float32)
    fused = tiny_model.forward(x, layers=[1, 3, 5, 7, 15, 22])
    separate = tiny_model.forward(x, layers=[0, 1, 2, 3, 4, 5, 6, 7, 15, 22])
    for index in fused:
        difference, limit = within(fused[index], separate[index], 1e-6)
        assert difference <= limit, index
    assert separate[0].shape == (2, 16, 416, 416)
    np.testing.assert_array_equal(separate[0].reshape(2, 16, 208, 2, 208, 2).max(axis=(3, 5)), separate[1])


def test_the_engine_runs_on_the_portable_sgemm_where_numpys_openblas_is_not_found(tiny_model, tmp_path):
    """blas.py gives the kernels a plain numba GEMM when numpy has no bundled OpenBLAS. A new
    process registers it in OpenBLAS's place before any kernel loads, and runs the bundled model."""
    x = np.random.default_rng(8).random((1, 3, 416, 416), dtype=np.float32)
    expected = tiny_model.forward(x)
    np.save(tmp_path / "x.npy", x)
    script = ("import sys, numpy as np, llvmlite.binding as llvm, darkfold\n"
              "from darkfold import blas\n"
              "llvm.add_symbol(blas.SYMBOL, blas.portable_sgemm())\n"
              "outputs = darkfold.load().forward(np.load(sys.argv[1] + '/x.npy'))\n"
              "np.savez(sys.argv[1] + '/outputs.npz', *outputs.values())\n")
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, cwd=REPO)
    outputs = np.load(tmp_path / "outputs.npz")
    assert len(outputs.files) == len(expected)
    for index, output in zip(expected, outputs.values()):
        np.testing.assert_allclose(output, expected[index], rtol=1e-4, atol=1e-4 * np.abs(expected[index]).max())


def test_a_route_of_one_layer_is_that_layers_output_without_a_copy(tiny_model):
    """yolov3-tiny's layer 17 is [route] layers=-4: the engine hands on layer 13's buffer."""
    engine = engine_for(tiny_model)
    assert engine.steps[17].alias == 13
    x = np.random.default_rng(9).random((2, 3, 416, 416), dtype=np.float32)
    outputs = tiny_model.forward(x, layers=[13, 17, 18])
    np.testing.assert_array_equal(outputs[17], outputs[13])
    assert outputs[18].shape == (2, 128, 13, 13)


def test_a_winograd_layer_prepared_for_more_threads_than_it_runs_on(tiny_model):
    """prepare(threads) decides the blocks of output channels; run on fewer threads, each
    takes several blocks (layer 12: 13x13x512 -> 1024, run by blocks of channels)."""
    from darkfold.convolution import WinogradConvolution
    from darkfold.threads import Workers

    layer = tiny_model.layers[12]
    x = np.random.default_rng(10).random((1, 3, 416, 416), dtype=np.float32)
    expected = tiny_model.forward(x, layers=[11, 12])
    step = WinogradConvolution(layer, tiny_model.params[12], True)
    step.prepare(3)
    workers = Workers(2)
    try:
        out = np.empty((1, 13, 13, 1024), np.float32)
        step(np.ascontiguousarray(expected[11].transpose(0, 2, 3, 1)), None, out, workers)
    finally:
        workers.close()
    np.testing.assert_allclose(out.transpose(0, 3, 1, 2), expected[12], rtol=1e-5, atol=1e-5)


def test_results_are_not_overwritten_by_the_next_call(tiny_model):
    rng = np.random.default_rng(7)
    first_input = rng.random((1, 3, 416, 416), dtype=np.float32)
    first = tiny_model.forward(first_input, layers=[0, 23])
    kept = {i: a.copy() for i, a in first.items()}
    tiny_model.forward(rng.random((1, 3, 416, 416), dtype=np.float32), layers=[0, 23])
    for index in first:
        np.testing.assert_array_equal(first[index], kept[index])


@pytest.mark.parametrize("x, message", [
    ([[1.0]], "expected a numpy array"),
    (np.zeros((1, 3, 416, 416), np.float64), "expected float32 values, got float64"),
    (np.zeros((3, 416, 416), np.float32), "expected shape (batch, 3, 416, 416)"),
    (np.zeros((1, 416, 416, 3), np.float32), "got (1, 416, 416, 3)"),
    (np.zeros((0, 3, 416, 416), np.float32), "expected shape"),
])
def test_a_wrong_input_is_refused_before_anything_runs(tiny_model, x, message):
    with pytest.raises(darkfold.DarkfoldError, match=re.escape(message)):
        tiny_model.forward(x)


def test_unknown_layer_index_is_refused(tiny_model):
    with pytest.raises(darkfold.DarkfoldError, match="layer 24 does not exist"):
        tiny_model.forward(np.zeros((1, 3, 416, 416), np.float32), layers=[24])


def test_a_model_without_weights_cannot_run(tiny_cfg):
    with pytest.raises(darkfold.DarkfoldError, match="no weights: load the model with its .weights file to run it"):
        darkfold.load(tiny_cfg).forward(np.zeros((1, 3, 416, 416), np.float32))


def test_the_engine_runs_registry_types_by_their_names_and_all_but_local_and_cost():
    # A type added to layers.TYPES fails here until it has a step (or joins the exceptions).
    assert set(STEPS) <= set(TYPES) and set(TYPES) - set(STEPS) == {"local", "cost"}


def test_every_step_is_a_step_so_the_engine_never_probes_for_what_it_can_do(tiny_model):
    # The engine reads Step's attributes and calls its methods on every step, never probing.
    classes = [step for step in STEPS.values() if isinstance(step, type)] + [Convolution, WinogradConvolution]
    assert all(issubclass(step, Step) for step in classes)
    assert {step for step in STEPS.values() if not isinstance(step, type)} == {make_convolution}
    engine = Engine(tiny_model, threads=1)
    assert all(isinstance(step, Step) for step in engine.steps)
    assert [type(step).__name__ for step in engine.steps[:3]] == ["Convolution", "PooledAway", "WinogradConvolution"]
    engine.close()


def test_a_layer_the_engine_cannot_run_is_named_before_running(tmp_path):
    cfg = tmp_path / "local.cfg"
    cfg.write_text("[net]\nwidth=8\nheight=8\nchannels=1\n\n[local]\nfilters=2\nsize=3\nstride=1\npad=1\n")
    oracle.write_random_weights(cfg, tmp_path / "local.weights", seed=1)
    model = darkfold.load(cfg, tmp_path / "local.weights")
    with pytest.raises(darkfold.DarkfoldError, match=r"local.cfg:6: layer 0 \[local\] is not supported"):
        model.forward(np.zeros((1, 1, 8, 8), np.float32))


def test_a_partial_weights_file_cannot_run(tmp_path, tiny_cfg, tiny_weights):
    partial = tmp_path / "tiny.conv.4"
    model = darkfold.load(tiny_cfg, tiny_weights)
    end = 20 + sum(4 * p.size for layer in model.layers[:5] for p in layer.params)
    partial.write_bytes(tiny_weights.read_bytes()[:end])
    backbone = darkfold.load(tiny_cfg, partial, partial=True)
    with pytest.raises(darkfold.DarkfoldError, match=r"layer 6 \[convolutional\] has no weights"):
        backbone.forward(np.zeros((1, 3, 416, 416), np.float32))


def test_the_engine_runs_without_opencv(tmp_path):
    # OpenCV 5 has no Darknet importer; the engine must need nothing from cv2 at all.
    script = (
        "import sys; sys.modules['cv2'] = None  # any 'import cv2' now fails\n"
        "import numpy as np, darkfold\n"
        "outputs = darkfold.load().forward(np.zeros((1, 3, 416, 416), np.float32))\n"
        "print(sorted(outputs))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[15, 22]"


@pytest.mark.parametrize("threads", [1, 2])
def test_a_first_layer_1x1_convolution_reads_the_nchw_input(tmp_path, threads):
    # Found by fuzzing: the first layer reads the NCHW input planes directly, and a 1x1
    # convolution there took them for an NHWC matrix (a bare ValueError from matmul).
    from conftest import write

    cfg = write(tmp_path / "p.cfg", "[net]\nwidth=5\nheight=4\nchannels=3\n[convolutional]\nfilters=2\n"
                                     "activation=linear\n")
    rng = np.random.default_rng(0)
    biases, weights = rng.random(2, dtype=np.float32), rng.random((2, 3), dtype=np.float32)
    data = darkfold.weights.Header(0, 2, 0, 0).to_bytes() + biases.tobytes() + weights.tobytes()
    model = darkfold.load(cfg, write(tmp_path / "p.weights", data))
    x = rng.random((1, 3, 4, 5), dtype=np.float32)
    (output,) = model.forward(x, threads=threads).values()
    expected = np.einsum("oc,nchw->nohw", weights, x) + biases[:, None, None]
    np.testing.assert_allclose(output, expected, rtol=1e-6)
