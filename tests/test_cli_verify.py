"""`darkfold verify`: the table, JSON, exit codes and argument checks."""

import json

import pytest
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
