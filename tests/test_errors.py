"""darkfold's errors: one class per kind of input, each with the file, line or layer it is about."""

import functools
from pathlib import Path

import numpy as np
import pytest

import darkfold
from darkfold.cfg import Cfg
from darkfold.errors import (
    CfgError,
    DarkfoldError,
    ImageError,
    ModelError,
    OutputError,
    WeightsError,
)
from darkfold.layers import build_layers
from darkfold.weights import Header

# --------------------------------------------------------------------------------------------
# the error classes


def test_every_error_class_is_a_darkfold_error():
    for cls in (CfgError, WeightsError, ModelError, ImageError, OutputError):
        assert issubclass(cls, DarkfoldError)
    assert darkfold.ModelError is ModelError and darkfold.OutputError is OutputError


def test_fields_default_to_none_and_the_message_is_kept():
    error = DarkfoldError("--partial needs WEIGHTS")
    assert str(error) == "--partial needs WEIGHTS" and error.where is None
    assert (error.path, error.line, error.layer, error.expected, error.found) == (None,) * 5


def test_a_message_that_forgot_its_file_gets_it():
    error = CfgError("expected an integer", path=Path("x.cfg"), line=3, expected="an integer", found="four")
    assert str(error) == "x.cfg:3: expected an integer" and error.where == "x.cfg:3" and error.path == "x.cfg"
    assert str(WeightsError("x.weights: truncated", path="x.weights", layer=4)) == "x.weights: truncated"


def test_fields_survive_pickling():
    import pickle

    error = pickle.loads(pickle.dumps(WeightsError("w: short", path="w", layer=2, expected=10, found=8)))
    assert type(error) is WeightsError and str(error) == "w: short"
    assert (error.path, error.layer, error.expected, error.found) == ("w", 2, 10, 8)


def test_api_errors_carry_file_line_and_layer(tmp_path):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(NET + "[maxpool]\n[convolutional]\nfilters=4\nactivation=leakyy\n")
    with pytest.raises(CfgError) as error:
        darkfold.load(cfg)
    assert (error.value.path, error.value.line, error.value.layer) == (str(cfg), 8, 1)
    assert (error.value.expected, error.value.found) == ("a Darknet activation", "leakyy")
    assert str(error.value).startswith(f"{cfg}:8: unknown activation 'leakyy'")


def test_truncated_weights_error_names_layer_and_byte_counts(tmp_path):
    cfg = write(tmp_path / "m.cfg", YOLO)
    weights = write(tmp_path / "m.weights", weights_for(YOLO)[:-8])
    with pytest.raises(WeightsError) as error:
        darkfold.load(cfg, weights)
    assert (error.value.path, error.value.layer, error.value.line) == (str(weights), 2, None)
    assert error.value.expected - error.value.found == 8


def test_convert_output_errors_are_output_errors(tmp_path):
    cfg, weights = write(tmp_path / "m.cfg", YOLO), write(tmp_path / "m.weights", weights_for(YOLO))
    write(tmp_path / "f.cfg", "mine")
    with pytest.raises(OutputError) as error:
        darkfold.convert(cfg, weights, tmp_path / "f.cfg", tmp_path / "f.weights")
    assert error.value.path == str(tmp_path / "f.cfg") and error.value.found == "an existing file"


def test_fold_without_weights_is_a_model_error():
    with pytest.raises(ModelError, match="fold needs the weights"):
        darkfold.load(darkfold.DEFAULT_CFG).fold()


# --------------------------------------------------------------------------------------------
# small models to break

NET = "[net]\nwidth=32\nheight=32\nchannels=3\n"
YOLO = NET + """
[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
filters=18
size=1
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=1
num=3
"""
YOLO_2_CLASSES = YOLO.replace("filters=18", "filters=21").replace("classes=1", "classes=2")
YOLO_FOLDED = YOLO.replace("batch_normalize=1", "batch_normalize=0")


HEADER = Header(0, 2, 0, 64000)


@functools.cache
def weights_for(cfg_text, header=HEADER, layers=None, seed=0):
    """A weights file for ``cfg_text``, of random values; only the first ``layers`` layers if given."""
    _, specs, _ = build_layers(Cfg(cfg_text))
    count = sum(layer.param_count for layer in specs[:layers])
    return header.to_bytes() + np.random.default_rng(seed).random(count, dtype=np.float32).tobytes()


def header_bytes(major, minor, revision, seen, seen_type):
    return np.array([major, minor, revision], "<i4").tobytes() + np.array([seen], seen_type).tobytes()


def write(path, data):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path
