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


@pytest.mark.parametrize("tolerance", [float("nan"), float("inf"), -1, True, "1e-4"])
def test_tolerance_must_be_a_finite_number_of_at_least_0(tiny_model, tolerance):
    with pytest.raises(darkfold.ModelError, match=r"tolerance=.*: expected a finite number of at least 0"):
        darkfold.verify(tiny_model, tolerance=tolerance)


def test_convert_verifies_what_it_wrote(tmp_cwd, capsys):
    assert main(["convert", "-o", "out"]) == 0
    assert "verified: outputs match the original within" in capsys.readouterr().out


def test_convert_no_verify_skips_the_check(tmp_cwd, capsys):
    assert main(["convert", "-o", "out", "--no-verify", "--json"]) == 0
    assert "verify" not in json.loads(capsys.readouterr().out)


def test_convert_json_reports_the_check(tmp_cwd, capsys):
    assert main(["convert", "-o", "out", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verify"]["ok"] is True


def test_a_bad_backend_or_precision_is_refused_before_the_original_runs(tiny_model, monkeypatch):
    def forward(*args, **kwargs):
        raise AssertionError("the original ran")

    monkeypatch.setattr(tiny_model, "forward", forward)
    with pytest.raises(darkfold.ModelError, match=r"precision='bf16' runs on backend='openvino'"):
        darkfold.verify(tiny_model, precision="bf16")
