"""darkfold.verify and the `darkfold verify` command; convert's check of what it wrote."""

import json

import numpy as np
import pytest

import darkfold
from darkfold.cli import main


@pytest.fixture(scope="module")
def folded_pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("folded")
    cfg, weights = folder / "tiny-folded.cfg", folder / "tiny-folded.weights"
    darkfold.convert(darkfold.DEFAULT_CFG, darkfold.DEFAULT_WEIGHTS, cfg, weights)
    return cfg, weights


def tampered_copy(folded_pair, folder, layer=13, factor=1.01):
    """The folded pair with one layer's weights scaled by ``factor``: a fold gone wrong."""
    cfg, weights = folded_pair
    model = darkfold.load(cfg, weights)
    params = [dict(arrays) for arrays in model.params]
    params[layer]["weights"] = params[layer]["weights"] * np.float32(factor)
    model.params = params
    out_cfg, out_weights = folder / "bad.cfg", folder / "bad.weights"
    model.save(out_cfg, out_weights)
    return out_cfg, out_weights


def test_the_folded_bundled_model_matches_the_original(tiny_model, folded_pair):
    check = darkfold.verify(tiny_model, darkfold.load(*folded_pair))
    assert check.ok
    assert [o.layer for o in check.outputs] == [15, 22]
    assert 0 < check.worst.relative < 1e-5  # folding changes rounding, never the result


def test_folding_in_memory_matches_too(tiny_model):
    assert darkfold.verify(tiny_model).ok


def test_a_wrong_fold_is_caught(tiny_model, folded_pair, tmp_path):
    check = darkfold.verify(tiny_model, darkfold.load(*tampered_copy(folded_pair, tmp_path)))
    assert not check.ok
    assert check.worst.relative > 1e-3


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


@pytest.mark.parametrize("tolerance", [float("nan"), float("inf"), -1, True, "1e-4"])
def test_tolerance_must_be_a_finite_number_of_at_least_0(tiny_model, tolerance):
    with pytest.raises(darkfold.ModelError, match=r"tolerance=.*: expected a finite number of at least 0"):
        darkfold.verify(tiny_model, tolerance=tolerance)


@pytest.mark.parametrize("tolerance", ["nan", "-1", "inf", "x"])
def test_verify_command_refuses_a_tolerance_that_is_not_a_finite_number_of_at_least_0(capsys, tolerance):
    # nan and -1 ran both models and then said "the folded model differs" (exit 1).
    with pytest.raises(SystemExit) as exit_:
        main(["verify", "--tolerance", tolerance])
    assert exit_.value.code == 2
    assert f"--tolerance: expected a number of at least 0, got '{tolerance}'" in capsys.readouterr().err


def test_convert_verifies_what_it_wrote(tmp_cwd, capsys):
    assert main(["convert", "-o", "out"]) == 0
    assert "verified: outputs match the original within" in capsys.readouterr().out


def test_convert_no_verify_skips_the_check(tmp_cwd, capsys):
    assert main(["convert", "-o", "out", "--no-verify", "--json"]) == 0
    assert "verify" not in json.loads(capsys.readouterr().out)


def test_convert_json_reports_the_check(tmp_cwd, capsys):
    assert main(["convert", "-o", "out", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verify"]["ok"] is True
