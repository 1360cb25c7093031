import os

import numpy as np
import pytest

import darkfold

from conftest import CFG_DIR, write


def test_load_without_arguments_is_the_bundled_yolov3_tiny(tiny_model):
    assert len(tiny_model.layers) == 24 and tiny_model.has_weights
    assert round(tiny_model.bflops, 3) == 5.571 and tiny_model.param_count == 8858734


def test_options_are_attributes_of_a_layer(tiny_model):
    conv = tiny_model.layers[0]
    assert (conv.filters, conv.size, conv.activation, conv.batch_normalize) == (16, 3, "leaky", 1)
    with pytest.raises(AttributeError):
        conv.no_such_option


@pytest.mark.parametrize("name, expected", [("yolov3-tiny.cfg", [15, 22]), ("yolov4-tiny-3l.cfg", [29, 36, 43]),
                                            ("yolov2.cfg", [30]), ("yolov1.cfg", [30]), ("darknet19.cfg", [26])])
def test_head_inputs_are_what_the_detection_heads_read_or_the_last_layer(name, expected):
    assert darkfold.load(CFG_DIR / name).head_inputs == expected


def test_fold_returns_a_new_model_and_leaves_the_original_alone(tiny_model):
    before = {name: array.copy() for name, array in tiny_model.params[0].items()}
    folded = tiny_model.fold()
    assert folded is not tiny_model and folded.folded_layers == (0, 2, 4, 6, 8, 10, 12, 13, 14, 18, 21)
    assert set(folded.params[0]) == {"biases", "weights"}
    assert all(np.array_equal(tiny_model.params[0][n], a) for n, a in before.items())
    assert tiny_model.layers[0].batch_normalize == 1 and folded.layers[0].batch_normalize == 0
    # layers without BatchNorm share their arrays with the original
    assert folded.params[15]["weights"] is tiny_model.params[15]["weights"]


def test_fold_without_weights_is_an_error():
    with pytest.raises(darkfold.DarkfoldError, match="fold needs the weights"):
        darkfold.load(CFG_DIR / "yolov3-tiny.cfg").fold()


def test_save_without_weights_writes_the_cfg_only(tmp_path):
    model = darkfold.load(CFG_DIR / "yolov3-tiny.cfg")
    model.save(tmp_path / "only.cfg")
    assert (tmp_path / "only.cfg").read_bytes() == (CFG_DIR / "yolov3-tiny.cfg").read_bytes()
    with pytest.raises(darkfold.DarkfoldError, match="loaded without weights"):
        model.save(tmp_path / "a.cfg", tmp_path / "a.weights")


def test_failed_save_leaves_neither_file(tiny_model, tmp_path):
    (tmp_path / "taken").mkdir()  # a folder where the weights should go: the rename fails
    with pytest.raises(darkfold.DarkfoldError, match="taken: cannot write: Is a directory"):
        tiny_model.save(tmp_path / "out.cfg", tmp_path / "taken")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_weights_given_without_cfg_is_an_error():
    with pytest.raises(darkfold.DarkfoldError, match="weights given without a cfg"):
        darkfold.load(None, "x.weights")


def test_model_warnings_list_unknown_keys(tmp_path):
    cfg = write(tmp_path / "w.cfg", "[net]\nwidth=8\nheight=8\nchannels=1\nfoo=1\n[maxpool]\n")
    assert darkfold.load(cfg).warnings == [f"{cfg}:5: unknown key 'foo' in [net] (ignored)"]


def test_failure_while_writing_weights_leaves_no_output(tiny_model, tmp_path, monkeypatch):
    def half_then_disk_full(path, *args):
        with open(path, "wb") as file:
            file.write(b"\0" * 1000)
        raise OSError(28, "No space left on device", path)

    monkeypatch.setattr(darkfold.model, "write_weights", half_then_disk_full)
    with pytest.raises(darkfold.DarkfoldError, match="out.weights: cannot write: No space left on device"):
        tiny_model.save(tmp_path / "out.cfg", tmp_path / "out.weights")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("existing", [False, True], ids=["new outputs", "replacing outputs"])
def test_outputs_change_together_when_the_second_rename_fails(tiny_model, tmp_path, monkeypatch, existing):
    cfg, weights = tmp_path / "out.cfg", tmp_path / "out.weights"
    if existing:
        cfg.write_text("old cfg")
        weights.write_bytes(b"old weights")
    real_replace, calls = os.replace, []

    def second_fails(source, target):
        calls.append(target)
        if len(calls) == 2:
            raise OSError(5, "Input/output error", target)
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", second_fails)
    with pytest.raises(darkfold.DarkfoldError, match="cannot write: Input/output error"):
        tiny_model.save(cfg, weights)
    monkeypatch.undo()
    if existing:
        assert (cfg.read_text(), weights.read_bytes()) == ("old cfg", b"old weights")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out.cfg", "out.weights"]
    else:
        assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("change", ["shorter biases", "missing scales", "wrong weights shape"])
def test_arrays_replaced_by_hand_with_the_wrong_shape_never_reach_the_kernel(tiny_cfg, tiny_weights, change, tmp_path):
    model = darkfold.load(tiny_cfg, tiny_weights)
    arrays = dict(model.params[0])
    if change == "shorter biases":
        arrays["biases"] = arrays["biases"][:-1]
    elif change == "missing scales":
        del arrays["scales"]
    else:
        arrays["weights"] = np.zeros((16, 3, 3, 2), np.float32)
    model.params[0] = arrays
    forward = lambda: model.forward(np.zeros((1, 3, 416, 416), np.float32))
    for action in (model.fold, lambda: model.save(tmp_path / "a.cfg", tmp_path / "a.weights"), forward):
        with pytest.raises(darkfold.ModelError, match=r"yolov3-tiny.cfg: layer 0 \[convolutional\] .*: "
                                                      r"params\['\w+'\] has shape .*, the cfg needs"):
            action()
    assert list(tmp_path.iterdir()) == []
