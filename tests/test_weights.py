import os
import subprocess
import sys

import numpy as np
import pytest

import darkfold
from darkfold.errors import WeightsError
from darkfold.weights import Header, read_header

from conftest import write

SMALL_CFG = """[net]
width=8
height=8
channels=3

[convolutional]
batch_normalize=1
filters=4
size=3
pad=1
activation=leaky

[convolutional]
filters=6
size=1
activation=linear
"""
# layer 0: 4 biases + 3*4 BN + 4*3*3*3 weights = 124 floats; layer 1: 6 + 6*4 = 30 floats
SMALL_FLOATS = (124, 30)


def small_weights(header=Header(0, 2, 5, 123456), floats=sum(SMALL_FLOATS), seed=0):
    values = np.random.default_rng(seed).standard_normal(floats).astype("<f4")
    return header.to_bytes() + values.tobytes()


@pytest.fixture
def small_cfg(tmp_path):
    return write(tmp_path / "small.cfg", SMALL_CFG)


def test_bundled_model_round_trips_byte_for_byte(tiny_model, tiny_cfg, tiny_weights, tmp_path):
    tiny_model.save(tmp_path / "out.cfg", tmp_path / "out.weights")
    assert (tmp_path / "out.weights").read_bytes() == tiny_weights.read_bytes()
    assert (tmp_path / "out.cfg").read_bytes() == tiny_cfg.read_bytes()


def test_arrays_are_read_only_views_of_the_file(tiny_model):
    weights = tiny_model.params[0]["weights"]
    assert weights.shape == (16, 3, 3, 3) and weights.dtype == np.float32
    assert not weights.flags.writeable
    assert tiny_model.header == Header(0, 2, 0, 32013312)


@pytest.mark.parametrize("header", [Header(0, 1, 0, 7), Header(0, 2, 0, 2**40), Header(1, 0, 0, 9)])
def test_seen_is_32_or_64_bits_by_version_and_round_trips(small_cfg, tmp_path, header):
    path = write(tmp_path / "w.weights", small_weights(header))
    model = darkfold.load(small_cfg, path)
    assert model.header == header and model.header.size == (16 if header.minor == 1 else 20)
    model.save(tmp_path / "again.cfg", tmp_path / "again.weights")
    assert (tmp_path / "again.weights").read_bytes() == path.read_bytes()


def test_layer_arrays_follow_darknet_order(small_cfg, tmp_path):
    data = small_weights()
    model = darkfold.load(small_cfg, write(tmp_path / "w.weights", data))
    floats = np.frombuffer(data[20:], "<f4")
    conv = model.params[0]
    assert np.array_equal(conv["biases"], floats[0:4])
    assert np.array_equal(conv["scales"], floats[4:8])
    assert np.array_equal(conv["rolling_mean"], floats[8:12])
    assert np.array_equal(conv["rolling_variance"], floats[12:16])
    assert np.array_equal(conv["weights"].ravel(), floats[16:124])
    assert np.array_equal(model.params[1]["weights"].ravel(), floats[130:154])


def test_truncated_weights_name_the_layer_and_byte_counts(small_cfg, tmp_path):
    path = write(tmp_path / "cut.weights", small_weights()[:-8])
    with pytest.raises(WeightsError) as error:
        darkfold.load(small_cfg, path)
    message = str(error.value)
    assert "cut.weights: truncated: layer 1 [convolutional]" in message
    assert f"small.cfg:13) needs 120 bytes from offset {20 + 4 * 124}, but only 112 remain" in message
    assert "expected 636 bytes, file has 628 (8 missing)" in message


def test_oversized_weights_name_the_last_layer_and_the_surplus(small_cfg, tmp_path):
    path = write(tmp_path / "big.weights", small_weights() + b"\0" * 12)
    with pytest.raises(WeightsError, match=r"big.weights: 12 bytes left over after the last layer with "
                                           r"parameters \(layer 1 \[convolutional\], .*small.cfg:13\): "
                                           r"this cfg needs 636 bytes, file has 648"):
        darkfold.load(small_cfg, path)


def test_file_ending_at_a_layer_boundary_suggests_a_partial_backbone(small_cfg, tmp_path):
    path = write(tmp_path / "backbone.conv.1", small_weights(floats=SMALL_FLOATS[0]))
    with pytest.raises(WeightsError, match="ends after layer 0.*partial=True"):
        darkfold.load(small_cfg, path)


def test_a_file_of_only_a_header_says_so(small_cfg, tmp_path):
    path = write(tmp_path / "empty.weights", Header(0, 2, 0, 0).to_bytes())
    with pytest.raises(WeightsError) as error:
        darkfold.load(small_cfg, path)
    assert str(error.value).startswith(f"{path}: the file holds only the 20-byte header (version 0.2.0, seen 0 "
                                       "images) and no weights, but layer 0 [convolutional]")
    assert "after layer -1" not in str(error.value)


def test_partial_backbone_loads_on_request_and_saves_what_it_has(small_cfg, tmp_path):
    path = write(tmp_path / "backbone.conv.1", small_weights(floats=SMALL_FLOATS[0]))
    model = darkfold.load(small_cfg, path, partial=True)
    assert model.loaded_layers == 1 and model.params[1] is None
    model.save(tmp_path / "again.cfg", tmp_path / "again.weights")
    assert (tmp_path / "again.weights").read_bytes() == path.read_bytes()


def test_partial_file_cut_inside_a_layer_is_still_an_error(small_cfg, tmp_path):
    path = write(tmp_path / "cut.weights", small_weights(floats=SMALL_FLOATS[0] + 3))
    with pytest.raises(WeightsError, match="truncated: layer 1"):
        darkfold.load(small_cfg, path, partial=True)


def test_weights_for_other_classes_say_which_classes_fit(tiny_weights, tmp_path):
    text = darkfold.load().cfg.text().replace("classes=80", "classes=20").replace("filters=255", "filters=75")
    cfg = write(tmp_path / "voc.cfg", text)
    with pytest.raises(WeightsError, match="fits this cfg with classes=80 instead of 20"):
        darkfold.load(cfg, tiny_weights)


@pytest.mark.parametrize(
    "data, message",
    [(b"", "the weights file is empty"),
     (b"\x00\x00\x00\x00\x02\x00", "6 bytes is too short for a Darknet weights header"),
     (b"[net]\nwidth=416\nheight=416\n", "this is a text file, not Darknet weights"),
     (b"\xff\xff\xff\xff" + b"\x00" * 40, "bad header: version -1.0.0 is not a Darknet weights version"),
     (b"\x00\x00\x00\x00\x02\x00\x00\x00" + b"\x00" * 10, "18 bytes is too short for the 20-byte header")],
)
def test_bad_header_is_an_error(small_cfg, tmp_path, data, message):
    path = write(tmp_path / "bad.weights", data)
    with pytest.raises(WeightsError, match=message):
        darkfold.load(small_cfg, path)


def test_missing_weights_file_names_the_path(small_cfg, tmp_path):
    with pytest.raises(darkfold.DarkfoldError, match="gone.weights: weights file not found"):
        darkfold.load(small_cfg, tmp_path / "gone.weights")


def test_transposed_connected_weights_are_read_as_outputs_by_inputs(tmp_path):
    cfg = write(tmp_path / "fc.cfg", "[net]\ninputs=3\n[connected]\noutput=2\nactivation=linear\n")
    stored = np.arange(6, dtype="<f4")  # biases 2, then weights stored inputs x outputs (3 x 2)
    data = Header(1001, 2, 0, 0).to_bytes() + np.zeros(2, "<f4").tobytes() + stored.tobytes()
    path = write(tmp_path / "fc.weights", data)
    model = darkfold.load(cfg, path)
    assert model.header.transposed
    assert np.array_equal(model.params[0]["weights"], stored.reshape(3, 2).T)
    model.save(tmp_path / "again.cfg", tmp_path / "again.weights")
    assert (tmp_path / "again.weights").read_bytes() == data


def test_read_header_parses_version_and_seen():
    data = np.frombuffer(Header(0, 2, 5, 99).to_bytes(), np.uint8)
    assert read_header(data, "x") == Header(0, 2, 5, 99)


def test_folded_weights_with_the_unfolded_cfg_are_recognised(tiny_cfg, tmp_path):
    folded = darkfold.convert(tiny_cfg, darkfold.DEFAULT_WEIGHTS, tmp_path / "f.cfg", tmp_path / "f.weights")
    with pytest.raises(WeightsError, match="these are folded weights .* use them with the folded cfg"):
        darkfold.load(tiny_cfg, tmp_path / "f.weights")
    with pytest.raises(WeightsError, match="look like unfolded weights; use them with the original cfg"):
        darkfold.load(tmp_path / "f.cfg", darkfold.DEFAULT_WEIGHTS)
    assert folded.folded_layers


def test_a_32_bit_seen_under_a_64_bit_version_is_recognised(small_cfg, tmp_path):
    # The classic 4-byte header shift: version 0.2 promises a 64-bit seen, the writer stored 32 bits.
    data = np.array([0, 2, 0], "<i4").tobytes() + np.array([5000], "<u4").tobytes() + small_weights()[20:]
    with pytest.raises(WeightsError, match=r"\(4 missing\).*between a 32-bit and a 64-bit `seen`.*minor "
                                           r"version \(bytes 4-7\) to 1") as error:
        darkfold.load(small_cfg, write(tmp_path / "shifted.weights", data))
    assert (error.value.layer, error.value.expected - error.value.found) == (1, 4)


def test_a_64_bit_seen_under_a_32_bit_version_is_recognised(small_cfg, tmp_path):
    data = np.array([0, 1, 0], "<i4").tobytes() + np.array([5000], "<u8").tobytes() + small_weights()[20:]
    with pytest.raises(WeightsError, match=r"4 bytes left over.*64-bit `seen`.*minor version \(bytes 4-7\) to 2"):
        darkfold.load(small_cfg, write(tmp_path / "shifted.weights", data))


def test_a_file_cut_by_four_bytes_is_not_taken_for_a_header_shift(small_cfg, tmp_path):
    with pytest.raises(WeightsError, match="A truncated download") as error:
        darkfold.load(small_cfg, write(tmp_path / "cut.weights", small_weights()[:-4]))
    assert "seen" not in str(error.value)


def test_a_file_that_shrinks_while_read_is_one_clear_error(small_cfg, tmp_path, monkeypatch):
    path = write(tmp_path / "w.weights", small_weights())
    real_fstat = os.fstat

    def size_at_open_was_larger(fd):
        status = real_fstat(fd)
        return os.stat_result((*status[:6], status.st_size + 100, *status[7:]))

    monkeypatch.setattr(os, "fstat", size_at_open_was_larger)
    with pytest.raises(WeightsError, match="w.weights: the file changed size while it was read .*still writing it"):
        darkfold.load(small_cfg, path)


def test_a_loaded_model_survives_its_file_being_truncated(tmp_path):
    # Darknet rewrites *_last.weights in place while training. A memory-mapped file that shrinks
    # kills the process with SIGBUS at the next access, so this runs in a child process.
    weights = tmp_path / "m.weights"
    weights.write_bytes(open(darkfold.DEFAULT_WEIGHTS, "rb").read())
    script = ("import sys, numpy as np, darkfold\n"
              "model = darkfold.load(darkfold.DEFAULT_CFG, sys.argv[1])\n"
              "open(sys.argv[1], 'r+b').truncate(16)\n"
              "print(float(np.abs(model.params[22]['weights']).sum()) > 0, model.fold().loaded_layers)\n")
    result = subprocess.run([sys.executable, "-c", script, weights], capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout, result.stderr) == (0, "True 24\n", "")
