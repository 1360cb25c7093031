"""`darkfold convert`: the folded pair, its summary, and what it never overwrites."""

import json
import os

import numpy as np

import darkfold

from conftest import run_cli, write


def run(capsys, *argv):
    return run_cli(capsys, *argv)


def test_convert_writes_folded_pair_and_summary(capsys, tmp_path):
    code, out, _ = run(capsys, "convert", "-o", tmp_path)
    assert code == 0
    assert sorted(os.listdir(tmp_path)) == ["yolov3-tiny-folded.cfg", "yolov3-tiny-folded.weights"]
    assert "folded 11 BatchNorm layers" in out and "(38,208 fewer than" in out
    folded = darkfold.load(tmp_path / "yolov3-tiny-folded.cfg", tmp_path / "yolov3-tiny-folded.weights")
    assert not any(getattr(layer, "batch_normalize", 0) for layer in folded.layers)


def test_convert_json_summary(capsys, tmp_path):
    code, out, _ = run(capsys, "convert", "-o", tmp_path, "--json")
    summary = json.loads(out)
    assert code == 0 and summary["folded_layers"] == [0, 2, 4, 6, 8, 10, 12, 13, 14, 18, 21]
    assert summary["bytes_in"] - summary["bytes_out"] == 38208
    assert summary["weights"] == str(tmp_path / "yolov3-tiny-folded.weights")


def test_convert_refuses_to_replace_outputs_without_force(capsys, tmp_path):
    assert run(capsys, "convert", "-o", tmp_path)[0] == 0
    before = (tmp_path / "yolov3-tiny-folded.weights").stat().st_mtime_ns
    code, _, err = run(capsys, "convert", "-o", tmp_path)
    assert code == 2 and "yolov3-tiny-folded.cfg: already exists; use --force" in err
    assert (tmp_path / "yolov3-tiny-folded.weights").stat().st_mtime_ns == before
    assert run(capsys, "convert", "-o", tmp_path, "--force")[0] == 0


def test_convert_never_overwrites_an_input(capsys, tmp_path, tiny_cfg, tiny_weights):
    # An input whose name is what convert would write: x.cfg + x-folded.cfg given as weights.
    cfg = write(tmp_path / "x.cfg", tiny_cfg.read_text())
    weights = write(tmp_path / "x-folded.cfg", tiny_weights.read_bytes())
    code, _, err = run(capsys, "convert", cfg, weights, "-o", tmp_path, "--force")
    assert code == 2 and "output would overwrite the input" in err
    assert weights.read_bytes() == tiny_weights.read_bytes()


def test_convert_of_bad_weights_leaves_no_file_behind(capsys, tmp_path, tiny_cfg, tiny_weights):
    cut = write(tmp_path / "cut.weights", tiny_weights.read_bytes()[:-100])
    out_dir = tmp_path / "out"
    code, _, err = run(capsys, "convert", tiny_cfg, cut, "-o", out_dir)
    assert code == 2 and "truncated" in err
    assert not out_dir.exists()  # convert created it, and removes it again


def test_a_failed_convert_removes_every_folder_level_it_created(capsys, tmp_path, tiny_cfg, tiny_weights):
    cut = write(tmp_path / "cut.weights", tiny_weights.read_bytes()[:-100])
    code, _, _ = run(capsys, "convert", tiny_cfg, cut, "-o", tmp_path / "a" / "b" / "c")
    assert code == 2 and sorted(os.listdir(tmp_path)) == ["cut.weights"]


def test_a_forced_convert_whose_check_fails_keeps_the_earlier_outputs(capsys, tmp_path, tiny_cfg, tiny_weights):
    assert run(capsys, "convert", "-o", tmp_path)[0] == 0
    outputs = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    broken = bytearray(tiny_weights.read_bytes())
    broken[-4:] = np.float32(np.nan).tobytes()  # the right size, NaN in the last layer
    (tmp_path / "source").mkdir()
    weights = write(tmp_path / "source" / "yolov3-tiny.weights", bytes(broken))
    code, _, err = run(capsys, "convert", tiny_cfg, weights, "-o", tmp_path, "--force")
    assert code == 2 and "layer 22 [convolutional] holds NaN in its weights (1 of 65,280)" in err
    assert {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path) if name != "source"} == outputs


def test_convert_with_a_missing_input_is_one_error_even_with_force(capsys, tmp_path):
    (tmp_path / "gone-folded.cfg").write_text("old")
    code, _, err = run(capsys, "convert", tmp_path / "gone.cfg", darkfold.DEFAULT_WEIGHTS, "-o", tmp_path, "--force")
    assert code == 2 and err == f"darkfold: error: {tmp_path / 'gone.cfg'}: cfg file not found\n"
    assert (tmp_path / "gone-folded.cfg").read_text() == "old"


def test_convert_to_an_unwritable_folder_is_one_clear_error(capsys, tmp_path):
    if os.geteuid() == 0:
        folder = "/sys/kernel"  # root may write anywhere mode bits allow; sysfs refuses new files
    else:
        folder = tmp_path / "locked"
        folder.mkdir(mode=0o500)
    code, _, err = run(capsys, "convert", "-o", folder)
    assert code == 2 and err.startswith(f"darkfold: error: {folder}") and err.count("\n") == 1
    assert not any(name.startswith(".darkfold-") for name in os.listdir(folder))


def test_output_folder_that_is_a_file_is_an_error(capsys, tmp_path):
    code, _, err = run(capsys, "convert", "-o", write(tmp_path / "f", "x"))
    assert code == 2 and "output folder is a file" in err


def test_convert_of_a_model_the_engine_cannot_run_writes_it_unverified_with_a_warning(capsys, tmp_cwd):
    # It used to fail with exit 2 after writing both outputs: an error that left output behind.
    from darkfold.engine import STEPS

    write("l.cfg", "[net]\nwidth=8\nheight=8\nchannels=1\n[local]\nfilters=2\nsize=3\npad=1\n")
    write("l.weights", darkfold.weights.Header(0, 2, 0, 0).to_bytes() + bytes(4 * (2 * 8 * 8 + 64 * 2 * 9)))
    code, out, err = run(capsys, "convert", "l.cfg", "l.weights", "-o", "out")
    assert code == 0 and "verified" not in out and "folded 0 BatchNorm layers" in out
    assert err == ("darkfold: warning: l.cfg:5: layer 0 [local] is not supported by darkfold's engine (it runs: "
                   f"{', '.join(sorted(STEPS))}); the folded files are written but not verified\n")
    assert sorted(os.listdir("out")) == ["l-folded.cfg", "l-folded.weights"]
