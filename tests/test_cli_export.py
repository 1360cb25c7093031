"""`darkfold export`: the file it writes, its summary, and one message per bad input."""

import json
import os
import subprocess
import sys

import onnx
import oracle
import pytest
from conftest import REPO, run_cli, write
from fixtures import ONE_OF_EACH_TYPE

import darkfold
from darkfold.cli import main


def run(capsys, *argv):
    return run_cli(capsys, "export", *argv)


def test_export_without_arguments_writes_the_bundled_model_to_the_current_folder(capsys, tmp_cwd):
    code, out, err = run(capsys)
    assert code == 0 and err == ""
    assert os.listdir(tmp_cwd) == ["yolov3-tiny.onnx"]
    lines = out.splitlines()
    assert lines[0] == f"yolov3-tiny.onnx: {os.path.getsize('yolov3-tiny.onnx'):,} bytes, ONNX opset 17, BatchNorm folded"
    assert lines[1:4] == ["  input  images (batch, 3, 416, 416) float32, RGB in [0, 1]",
                          "  output layer_15 (batch, 255, 13, 13)", "  output layer_22 (batch, 255, 26, 26)"]
    assert lines[4].startswith("verified with onnxruntime: outputs match darkfold's within ")
    onnx.checker.check_model("yolov3-tiny.onnx", full_check=True)


def test_export_decode_batch_opset_and_json(capsys, tmp_path):
    code, out, _ = run(capsys, "--decode", "--batch", 2, "--opset", 18, "-o", tmp_path / "m.onnx", "--json")
    summary = json.loads(out)
    assert code == 0
    assert summary["onnx"] == str(tmp_path / "m.onnx") and summary["opset"] == 18
    assert summary["input"] == {"images": [2, 3, 416, 416]}
    assert summary["outputs"] == {"boxes": [2, 2535, 4], "scores": [2, 2535, 80]}
    assert summary["verify"]["ok"] and [o["layer"] for o in summary["verify"]["outputs"]] == ["boxes", "scores"]
    assert onnx.load(tmp_path / "m.onnx").opset_import[0].version == 18


def test_an_output_folder_gets_the_cfg_stem_and_a_missing_one_is_created(capsys, tmp_path):
    assert run(capsys, "-o", tmp_path, "--no-verify")[0] == 0
    assert os.listdir(tmp_path) == ["yolov3-tiny.onnx"]
    code, out, _ = run(capsys, "-o", tmp_path / "new" / "deeper" / "t.onnx", "--no-verify")
    assert code == 0 and "verified" not in out
    assert os.listdir(tmp_path / "new" / "deeper") == ["t.onnx"]


def test_an_existing_file_is_kept_without_force_and_replaced_with_it(capsys, tmp_path):
    out_file = write(tmp_path / "t.onnx", "mine")
    code, out, err = run(capsys, "-o", out_file)
    assert code == 2 and out == ""
    assert err == f"darkfold: error: {out_file}: already exists; use --force (force=True) to replace it\n"
    assert out_file.read_text() == "mine"
    assert run(capsys, "-o", out_file, "--force", "--no-verify")[0] == 0
    onnx.checker.check_model(str(out_file))


def test_an_output_over_an_input_is_refused_and_nothing_is_written(capsys, tmp_path, tiny_cfg, tiny_weights):
    weights = write(tmp_path / "w.weights", tiny_weights.read_bytes())
    code, out, err = run(capsys, tiny_cfg, weights, "-o", weights, "--force")
    assert code == 2 and out == "" and "would overwrite the input" in err and err.count("\n") == 1
    assert weights.read_bytes() == tiny_weights.read_bytes() and os.listdir(tmp_path) == ["w.weights"]


def test_a_layer_onnx_cannot_express_is_one_error_and_no_file_or_folder(capsys, tmp_path):
    cfg = write(tmp_path / "local.cfg", ONE_OF_EACH_TYPE["local"])
    oracle.write_random_weights(cfg, tmp_path / "local.weights", seed=1)
    code, out, err = run(capsys, cfg, tmp_path / "local.weights", "-o", tmp_path / "out" / "local.onnx")
    assert code == 2 and out == ""
    assert err == (f"darkfold: error: {cfg}:5: layer 0 [local] cannot be exported to ONNX (darkfold exports: "
                   "Gaussian_yolo, avgpool, batchnorm, connected, convolutional, detection, dropout, local_avgpool, "
                   "maxpool, region, reorg, reorg3d, route, sam, scale_channels, shortcut, softmax, upsample, "
                   "yolo)\n")
    assert sorted(os.listdir(tmp_path)) == ["local.cfg", "local.weights"]


@pytest.mark.parametrize("argv, message", [
    ([darkfold.DEFAULT_CFG], "export needs the weights too: darkfold export CFG WEIGHTS"),
    (["--opset", "9"], "opset=9: darkfold writes opsets 13 to"),
])
def test_bad_arguments_are_one_error_with_exit_code_2(capsys, tmp_cwd, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and message in err and err.count("\n") == 1
    assert os.listdir(tmp_cwd) == []


@pytest.mark.parametrize("argv", [["--batch", "0"], ["--opset", "x"]])
def test_a_batch_or_opset_that_is_no_number_is_a_usage_error(capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        main(["export", *argv])
    assert exit_.value.code == 2 and "expected a whole number" in capsys.readouterr().err


def test_without_the_onnx_package_export_says_which_extra_to_install(tmp_path):
    script = "import sys; sys.modules['onnx'] = None\nfrom darkfold.cli import main\nsys.exit(main(['export']))\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == 'darkfold: error: exporting to ONNX needs the onnx package: pip install "darkfold[onnx]"\n'
    assert os.listdir(tmp_path) == []
