import json
import os
import subprocess
import sys

import numpy as np
import pytest

import darkfold
from darkfold.cli import main

from conftest import CFG_DIR, REPO, modules_loaded_by, write
from fixtures import NET


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_info_without_arguments_describes_the_bundled_model(capsys):
    code, out, err = run(capsys, "info")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == "   layer   filters  size/strd(dil)      input                output"
    assert lines[1] == "   0 conv     16       3 x 3/ 1    416 x 416 x   3 ->  416 x 416 x  16 0.150 BF"
    assert lines[18] == "  17 route 13" + " " * 38 + "->   13 x  13 x 256"  # input column blank
    assert lines[20] == "  19 upsample                 2x    13 x  13 x 128 ->   26 x  26 x 128"
    assert "Total BFLOPS 5.571" in lines
    assert "Parameters 8,858,734" in lines
    assert "Weights: version 0.2.0, seen 32013312 images" in lines


def test_info_json_lists_layers_totals_and_header(capsys):
    code, out, _ = run(capsys, "info", "--json")
    summary = json.loads(out)
    assert code == 0
    assert summary["layers"][0] == {"index": 0, "type": "convolutional", "input": [416, 416, 3],
                                    "output": [416, 416, 16], "bflops": 0.15, "params": 496}
    assert summary["bflops"] == 5.571 and summary["params"] == 8858734
    assert summary["weights"]["seen"] == 32013312


def test_info_on_a_cfg_alone_prints_no_weights_line(capsys):
    code, out, _ = run(capsys, "info", CFG_DIR / "yolov4.cfg")
    assert code == 0 and "Total BFLOPS 128.459" in out and "Weights:" not in out


def test_info_imports_no_numba():
    """Parsing and checking a model (activation names included) runs no kernel, so it does not
    pay for numba's import."""
    loaded = modules_loaded_by("from darkfold.cli import main\nassert main(['info']) == 0", "darkfold.layers",
                               "numba")
    assert loaded == {"darkfold.layers"}


def test_info_prints_unknown_keys_as_warnings(capsys, tmp_path):
    cfg = write(tmp_path / "typo.cfg", "[net]\nwidth=8\nheight=8\nchannels=3\n[convolutional]\nfliters=4\n")
    code, _, err = run(capsys, "info", cfg)
    assert code == 0
    assert err == (f"darkfold: warning: {cfg}:6: unknown key 'fliters' in [convolutional] (ignored); "
                   "did you mean 'filters'?\n")


def test_a_misspelt_key_is_shown_before_the_weights_error_it_causes(capsys, tmp_path, tiny_cfg, tiny_weights):
    cfg = write(tmp_path / "typo.cfg", tiny_cfg.read_text().replace("batch_normalize=1", "batch_normalise=1", 1))
    code, _, err = run(capsys, "info", cfg, tiny_weights)
    warning, error = err.splitlines()
    assert code == 2
    assert warning == f"darkfold: warning: {cfg}:26: unknown key 'batch_normalise' in [convolutional] (ignored); did you mean 'batch_normalize'?"
    assert error.startswith(f"darkfold: error: {tiny_weights}: ")


@pytest.mark.parametrize("argv, message", [
    (["info", "missing.cfg"], "missing.cfg: cfg file not found"),
    (["info", CFG_DIR / "yolov3.cfg", darkfold.DEFAULT_WEIGHTS], "truncated: layer 48 [convolutional]"),
    (["convert", CFG_DIR / "yolov3.cfg"], "convert needs the weights too"),
    (["info", CFG_DIR / "yolov3.cfg", "--partial"], "--partial is about a weights file"),
])
def test_errors_are_one_line_on_stderr_with_exit_code_2(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("darkfold: error: ") and message in err and err.count("\n") == 1


BAD_CFGS = {
    "unknown layer type": (NET + "[convolution]\nfilters=4\n", "bad.cfg:5: layer 0: unknown layer type [convolution]"),
    "bad value": (NET + "[convolutional]\nfilters=four\n", "bad.cfg:6: [convolutional] filters='four': expected an integer"),
    "duplicate key": (NET + "[maxpool]\nsize=2\nsize=3\n", "bad.cfg:7: duplicate key 'size' in [maxpool]"),
    "route to nothing": (NET + "[maxpool]\n[route]\nlayers=-3\n", "bad.cfg:7: layer 1 [route]: layers=-3 refers to layer -2"),
}


@pytest.mark.parametrize("kind", BAD_CFGS)
def test_each_bad_cfg_is_one_message_naming_file_and_line(capsys, tmp_path, kind):
    text, message = BAD_CFGS[kind]
    code, out, err = run(capsys, "info", write(tmp_path / "bad.cfg", text))
    assert code == 2 and out == ""
    assert err.startswith(f"darkfold: error: {tmp_path}/{message}") and err.count("\n") == 1


@pytest.mark.parametrize("kind, cut, message", [
    ("truncated", slice(0, -4), "truncated: layer 22 [convolutional]"),
    ("oversized", slice(0, None), "4 bytes left over after the last layer with parameters"),
    ("bad header", slice(20, None), "bad header: version"),
])
def test_each_bad_weights_file_is_one_message(capsys, tmp_path, tiny_cfg, tiny_weights, kind, cut, message):
    data = tiny_weights.read_bytes()[cut] + (b"\0" * 4 if kind == "oversized" else b"")
    code, out, err = run(capsys, "info", tiny_cfg, write(tmp_path / "w.weights", data))
    assert code == 2 and out == "" and message in err and err.count("\n") == 1


def test_wrong_argument_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["info", "--colour"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --colour" in capsys.readouterr().err


def usage_error(capsys, *argv):
    """The last line of the usage error ``darkfold argv`` ends in (exit code 2)."""
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    assert exit_.value.code == 2
    return capsys.readouterr().err.splitlines()[-1]


@pytest.mark.parametrize("argv, message", [
    (["detet"], "darkfold: error: argument COMMAND: invalid choice: 'detet' (choose from 'info', 'convert', 'verify', "
                "'detect'); did you mean 'detect'?"),
    (["detect", "--tresh", "0.5"], "darkfold detect: error: unrecognized arguments: --tresh; did you mean '--thresh'?"),
    (["info", "--jsn"], "darkfold info: error: unrecognized arguments: --jsn; did you mean '--json'?"),
    (["detect", "--tresh=0.3", "--no-drwa"], "darkfold detect: error: unrecognized arguments: --tresh=0.3 --no-drwa; "
                                             "did you mean '--thresh' or '--no-draw'?"),
    (["info", "--colour"], "darkfold info: error: unrecognized arguments: --colour"),
])
def test_a_misspelt_command_or_option_gets_a_did_you_mean(capsys, argv, message):
    assert usage_error(capsys, *argv) == message


@pytest.mark.parametrize("argv", [["detect", "--thres", "0.5"], ["convert", "--forc"], ["verify", "--tol", "1"],
                                  ["info", "--js"]])
def test_an_option_is_taken_only_as_it_is_spelt(capsys, argv):
    # argparse took --thres for --thresh: a later option could change what it meant.
    assert "unrecognized arguments: " + argv[1] in usage_error(capsys, *argv)


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "darkfold convert yolov4.cfg yolov4.weights -o out/" in out


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


def test_info_to_a_full_disk_is_one_error_not_a_crash(tmp_path):
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "darkfold", "info"], cwd=REPO, stdout=full,
                                stderr=subprocess.PIPE, text=True)
    assert result.returncode == 2
    assert result.stderr == "darkfold: error: standard output: cannot write: No space left on device\n"


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


def test_module_entry_point_prints_errors_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "darkfold", "info", tmp_path / "none.cfg"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2
    assert result.stderr == f"darkfold: error: {tmp_path / 'none.cfg'}: cfg file not found\n"
    assert "Traceback" not in result.stderr


def test_a_bug_is_exit_1_with_one_line_asking_for_a_report(capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(darkfold.cli, "load", broken)
    code, out, err = run(capsys, "info")
    assert code == 1 and out == ""
    assert err == ("darkfold: internal error, please report it (rerun with --debug for the traceback): "
                   "ZeroDivisionError: division by zero\n")


@pytest.mark.parametrize("argv", [["--debug", "info"], ["info", "--debug"]], ids=["before", "after the command"])
def test_debug_prints_the_traceback_of_a_bug(capsys, monkeypatch, argv):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(darkfold.cli, "load", broken)
    code, _, err = run(capsys, *argv)
    assert code == 1 and err.startswith("Traceback (most recent call last):")
    assert err.endswith("darkfold: internal error, please report it: ZeroDivisionError: division by zero\n")


def test_debug_prints_the_traceback_of_a_bad_input_too(capsys, tmp_path):
    code, _, err = run(capsys, "--debug", "info", tmp_path / "none.cfg")
    assert code == 2 and "Traceback" in err and "darkfold.errors.CfgError" in err
    assert err.splitlines()[-1] == f"darkfold: error: {tmp_path / 'none.cfg'}: cfg file not found"


def test_control_characters_from_the_cfg_are_escaped_in_the_one_line_message(capsys, tmp_path):
    # Found by fuzzing: a section name with \x1e (a line break to str.splitlines) or ESC went out raw.
    cfg = write(tmp_path / "c.cfg", "[n\x1e\x1bet]\nwidth=8\n[maxpool]\n")
    code, out, err = run(capsys, "info", cfg)
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert err == f"darkfold: error: {cfg}:1: the first section is [n\\x1e\\x1bet]; a cfg starts with [net]\n"


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
