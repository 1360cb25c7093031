"""`darkfold verify`: the table, JSON, exit codes and argument checks."""

import json

import oracle
import pytest
from fixtures import NET
from test_verify import folded_pair, tampered_copy  # noqa: F401 - a fixture, and its tampering

import darkfold
from darkfold.cli import main

def test_verify_command_prints_each_output_and_exits_0(capsys):
    assert main(["verify"]) == 0
    out = capsys.readouterr().out
    assert "   15     1 x 255 x 13 x 13" in out and "OK: the folded model matches" in out


def test_verify_command_exits_1_on_a_mismatch(folded_pair, tmp_path, capsys):
    bad_cfg, bad_weights = tampered_copy(folded_pair, tmp_path)
    code = main(["verify", str(darkfold.DEFAULT_CFG), str(darkfold.DEFAULT_WEIGHTS), str(bad_cfg), str(bad_weights)])
    assert code == 1
    assert "TOO LARGE" in capsys.readouterr().out


def test_verify_json(capsys):
    assert main(["verify", "--json", "--threads", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and [o["layer"] for o in report["outputs"]] == [15, 22]


@pytest.mark.parametrize("argv, message", [
    (["verify", "a.cfg"], "verify needs the weights too"),
    (["verify", "a.cfg", "a.weights", "b.cfg"], "give the folded weights too"),
])
def test_verify_command_needs_pairs(argv, message, capsys):
    assert main(argv) != 0
    assert message in capsys.readouterr().err


def test_threads_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        main(["verify", "--threads", "0"])
    assert "at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("tolerance", ["nan", "-1", "inf", "x"])
def test_verify_command_refuses_a_tolerance_that_is_not_a_finite_number_of_at_least_0(capsys, tolerance):
    # nan and -1 ran both models and then said "the folded model differs" (exit 1).
    with pytest.raises(SystemExit) as exit_:
        main(["verify", "--tolerance", tolerance])
    assert exit_.value.code == 2
    assert f"--tolerance: expected a number of at least 0, got '{tolerance}'" in capsys.readouterr().err


@pytest.mark.parametrize("backend", [pytest.param("onnxruntime", marks=pytest.mark.onnxruntime),
                                     pytest.param("openvino", marks=pytest.mark.openvino)])
def test_verify_backend_compares_it_with_the_engine_per_output(capsys, backend):
    assert main(["verify", "--json", "--backend", backend]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and [o["layer"] for o in report["outputs"]] == [15, 22]
    assert all(0 < o["relative_diff"] <= 1e-4 for o in report["outputs"])


@pytest.mark.openvino
def test_verify_bf16_is_reported_past_the_float32_tolerance(capsys):
    assert main(["verify", "--backend", "openvino", "--precision", "bf16"]) == 1
    assert "FAILED: the folded model on --backend openvino differs" in capsys.readouterr().out


@pytest.mark.onnxruntime
@pytest.mark.openvino  # auto's first choice
def test_a_layer_the_backend_cannot_run_exits_2_naming_it_and_auto_runs_the_engine(capsys, tmp_path):
    cfg = tmp_path / "pad.cfg"
    cfg.write_text(NET + "[convolutional]\nfilters=2\nsize=1\nactivation=leaky\n\n[maxpool]\nsize=2\nstride=2\n"
                   "padding=4\n")
    oracle.write_random_weights(cfg, tmp_path / "pad.weights", seed=1)
    argv = ["verify", str(cfg), str(tmp_path / "pad.weights")]
    assert main([*argv, "--backend", "onnxruntime"]) == 2
    assert (f"darkfold: error: {cfg}:10: layer 1 [maxpool]: padding=4 puts whole windows of size=2 outside the "
            "image, which ONNX pooling cannot express; backend='onnxruntime' runs the model's ONNX graph: use "
            "backend='numba'\n") in capsys.readouterr().err
    assert main([*argv, "--backend", "auto"]) == 0
    err = capsys.readouterr().err
    assert "layer 1 [maxpool]" in err and "running darkfold's numba engine instead" in err


def test_bf16_needs_the_openvino_backend(capsys):
    assert main(["verify", "--precision", "bf16"]) == 2
    assert "precision='bf16' runs on backend='openvino'" in capsys.readouterr().err
