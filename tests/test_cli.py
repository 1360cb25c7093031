import subprocess
import sys

import pytest

import darkfold
from darkfold.cli import main

from conftest import CFG_DIR, REPO, run_cli, write
from fixtures import NET


def run(capsys, *argv):
    return run_cli(capsys, *argv)


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
                "'detect', 'export', 'warmup'); did you mean 'detect'?"),
    (["detect", "--tresh", "0.5"], "darkfold detect: error: unrecognized arguments: --tresh; did you mean '--thresh'?"),
    (["info", "--jsn"], "darkfold info: error: unrecognized arguments: --jsn; did you mean '--json'?"),
    (["detect", "--tresh=0.3", "--no-drwa"], "darkfold detect: error: unrecognized arguments: --tresh=0.3 --no-drwa; "
                                             "did you mean '--thresh' or '--no-draw'?"),
    (["info", "--colour"], "darkfold info: error: unrecognized arguments: --colour"),
])
def test_a_misspelt_command_or_option_gets_a_did_you_mean(capsys, argv, message):
    assert usage_error(capsys, *argv) == message


@pytest.mark.parametrize("argv", [["detect", "--thres", "0.5"], ["convert", "--forc"], ["verify", "--tol", "1"],
                                  ["export", "--dec"],
                                  ["info", "--js"]])
def test_an_option_is_taken_only_as_it_is_spelt(capsys, argv):
    # argparse took --thres for --thresh: a later option could change what it meant.
    assert "unrecognized arguments: " + argv[1] in usage_error(capsys, *argv)


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "darkfold convert yolov4.cfg yolov4.weights -o out/" in out


def test_module_entry_point_prints_errors_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "darkfold", "info", tmp_path / "none.cfg"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2
    assert result.stderr == f"darkfold: error: {tmp_path / 'none.cfg'}: cfg file not found\n"
    assert "Traceback" not in result.stderr


def test_the_command_collects_garbage_rarely_and_not_its_objects_at_exit():
    """``python -m darkfold`` (and the console script, the same function) keeps the garbage
    collector from walking start-up's long-lived objects while it runs, and freezes them before
    the interpreter's exit; its atexit handlers still run."""
    script = ("import atexit, gc, runpy, sys\n"
              "atexit.register(lambda: print(gc.get_threshold()[0], gc.get_freeze_count() > 0, file=sys.stderr))\n"
              "runpy.run_module('darkfold', run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", script, "info"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0 and "Total BFLOPS" in result.stdout
    young, frozen = result.stderr.split()
    assert int(young) >= 100_000 and frozen == "True"


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


