"""The forward pass against OpenCV 4.x's Darknet importer, folded against unfolded, and bad input."""

import numpy as np
import oracle
import pytest
from conftest import CFG_DIR
from oracle import needs_opencv_darknet

import darkfold

# Every YOLO network the engine claims, with an input size that keeps CI short.
ENGINE_CFGS = {
    "yolov2": 160, "yolov2-tiny": 160, "yolov2-voc": 160, "yolov3": 128, "yolov3-tiny": 160,
    "yolov3-spp": 128, "yolov3-tiny-prn": 160, "yolov4": 128, "yolov4-tiny": 160, "yolov4-csp": 128,
    "yolov4x-mish": 128, "yolov7-tiny": 160, "yolov7": 128,
}


def within(actual, expected, tolerance=1e-4):
    """Max abs difference against tolerance * max(1, max |expected|), and that limit."""
    limit = tolerance * max(1.0, float(np.abs(expected).max()))
    return float(np.abs(actual - expected).max()), limit


def blob(size):
    return oracle.random_blob(size, size, seed=1)


@pytest.fixture(scope="module")
def random_models(tmp_path_factory):
    """name -> (model with random weights at the small size, its cfg, weights with OpenCV's BN eps)."""
    folder = tmp_path_factory.mktemp("engine")
    made = {}

    def make(name):
        if name not in made:
            size = ENGINE_CFGS[name]
            cfg = oracle.resized_cfg(CFG_DIR / f"{name}.cfg", folder / f"{name}.cfg", size, size)
            weights = folder / f"{name}.weights"
            # BN statistics measured on the test input keep swish and mish nets in range; the
            # reorg nets are leaky, which fixed gains keep in range (numpy_layer has no reorg).
            calibrate_on = None if name.startswith("yolov2") else blob(size)[0]
            layers, _ = oracle.write_random_weights(cfg, weights, seed=len(name), calibrate_on=calibrate_on)
            bumped = oracle.write_bumped_copy(weights, folder / f"{name}-bumped.weights", layers)
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
