"""darkfold.convert: the folded pair, written only once it is checked, never over anything it should not."""

import os
import subprocess
import sys

import numpy as np
import pytest

import darkfold
from darkfold import conversion
from darkfold.verify import OutputDifference, Verification

from conftest import REPO


def test_convert_streams_the_same_files_as_fold_then_save(tiny_model, tiny_cfg, tiny_weights, tmp_path):
    tiny_model.fold().save(tmp_path / "a.cfg", tmp_path / "a.weights")
    folded = darkfold.convert(tiny_cfg, tiny_weights, tmp_path / "b.cfg", tmp_path / "b.weights")
    assert (tmp_path / "b.weights").read_bytes() == (tmp_path / "a.weights").read_bytes()
    assert (tmp_path / "b.cfg").read_bytes() == (tmp_path / "a.cfg").read_bytes()
    assert folded.folded_layers == tiny_model.fold().folded_layers and len(folded.layers) == 24


def test_convert_refuses_to_write_over_its_input(tiny_cfg, tiny_weights, tmp_path):
    weights = tmp_path / "copy.weights"
    weights.write_bytes(tiny_weights.read_bytes())
    with pytest.raises(darkfold.DarkfoldError, match="output would overwrite the input"):
        darkfold.convert(tiny_cfg, weights, tmp_path / "out.cfg", weights)
    assert weights.read_bytes() == tiny_weights.read_bytes()


def test_convert_replaces_existing_outputs_only_with_force(tiny_cfg, tiny_weights, tmp_path):
    out_cfg, out_weights = tmp_path / "f.cfg", tmp_path / "f.weights"
    out_cfg.write_text("mine")
    with pytest.raises(darkfold.DarkfoldError, match="f.cfg: already exists; use --force"):
        darkfold.convert(tiny_cfg, tiny_weights, out_cfg, out_weights)
    assert out_cfg.read_text() == "mine" and not out_weights.exists()
    darkfold.convert(tiny_cfg, tiny_weights, out_cfg, out_weights, force=True)
    assert darkfold.load(out_cfg, out_weights).fold().folded_layers == ()  # nothing left to fold


def test_convert_needs_two_different_output_paths(tiny_cfg, tiny_weights, tmp_path):
    with pytest.raises(darkfold.DarkfoldError, match="need two different paths"):
        darkfold.convert(tiny_cfg, tiny_weights, tmp_path / "same", tmp_path / "same")
    assert list(tmp_path.iterdir()) == []


def nan_weights(tiny_weights, path):
    """The bundled weights with NaN in the last layer's biases: the right size, a broken model."""
    data = bytearray(tiny_weights.read_bytes())
    data[-4 * 255 * 256 - 4 * 255: -4 * 255 * 256] = np.full(255, np.nan, np.float32).tobytes()
    path.write_bytes(bytes(data))
    return path


def test_convert_with_verify_reports_the_check(tiny_cfg, tiny_weights, tmp_path):
    folded = darkfold.convert(tiny_cfg, tiny_weights, tmp_path / "f.cfg", tmp_path / "f.weights", verify=True)
    assert folded.verification.ok and folded.verification.worst.relative < 1e-5
    assert folded.cfg.path == str(tmp_path / "f.cfg")  # read back from the final names, not the temporaries


def test_a_forced_convert_whose_check_fails_keeps_the_earlier_good_outputs(tiny_cfg, tiny_weights, tmp_path):
    out_cfg, out_weights = tmp_path / "out" / "m-folded.cfg", tmp_path / "out" / "m-folded.weights"
    out_cfg.parent.mkdir()
    darkfold.convert(tiny_cfg, tiny_weights, out_cfg, out_weights, verify=True)
    good = out_cfg.read_bytes(), out_weights.read_bytes()
    broken = nan_weights(tiny_weights, tmp_path / "m.weights")
    with pytest.raises(darkfold.ModelError, match=r"layer 22 \[convolutional\] holds NaN in its biases \(255 of 255\)"):
        darkfold.convert(tiny_cfg, broken, out_cfg, out_weights, force=True, verify=True)
    assert (out_cfg.read_bytes(), out_weights.read_bytes()) == good
    assert sorted(os.listdir(out_cfg.parent)) == ["m-folded.cfg", "m-folded.weights"]  # no temporary left


def test_a_fold_that_does_not_reproduce_the_original_replaces_nothing(tiny_cfg, tiny_weights, tmp_path, monkeypatch):
    out_cfg, out_weights = tmp_path / "f.cfg", tmp_path / "f.weights"
    out_cfg.write_text("earlier")
    out_weights.write_bytes(b"earlier")
    wrong = Verification((OutputDifference(15, (1, 255, 13, 13), 0.5, 1.0, 1e-4),))
    monkeypatch.setattr(conversion, "compare_outputs", lambda *args, **kwargs: wrong)
    with pytest.raises(darkfold.VerificationError, match="does not reproduce .*nothing was written") as caught:
        darkfold.convert(tiny_cfg, tiny_weights, out_cfg, out_weights, force=True, verify=True)
    assert caught.value.verification is wrong
    assert (out_cfg.read_text(), out_weights.read_bytes()) == ("earlier", b"earlier")
    assert sorted(os.listdir(tmp_path)) == ["f.cfg", "f.weights"]


def test_concurrent_converts_without_force_let_exactly_one_write(tmp_path):
    # Each checked that the outputs did not exist before it started; all three wrote.
    runs = [subprocess.Popen([sys.executable, "-m", "darkfold", "convert", "-o", tmp_path, "--no-verify"],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(3)]
    results = [(run.wait(), run.stderr.read()) for run in runs]
    for run in runs:
        run.stdout.close()
        run.stderr.close()
    assert sorted(code for code, _ in results) == [0, 2, 2], results
    assert all("already exists; use --force" in err for code, err in results if code == 2)
    assert sorted(os.listdir(tmp_path)) == ["yolov3-tiny-folded.cfg", "yolov3-tiny-folded.weights"]
    folded = darkfold.load(tmp_path / "yolov3-tiny-folded.cfg", tmp_path / "yolov3-tiny-folded.weights")
    assert len(folded.layers) == 24


def test_save_never_writes_over_the_files_the_model_was_read_from(tiny_cfg, tiny_weights, tmp_path):
    cfg, weights = tmp_path / "m.cfg", tmp_path / "m.weights"
    cfg.write_bytes(tiny_cfg.read_bytes())
    weights.write_bytes(tiny_weights.read_bytes())
    model = darkfold.load(cfg, weights)
    for target in ((cfg, tmp_path / "new.weights"), (tmp_path / "new.cfg", weights)):
        with pytest.raises(darkfold.OutputError, match="would overwrite the input"):
            model.save(*target)
    os.link(weights, tmp_path / "other-name.weights")
    with pytest.raises(darkfold.OutputError, match="would overwrite the input"):
        model.fold().save(tmp_path / "f.cfg", tmp_path / "other-name.weights")  # the same file by another name
    assert weights.read_bytes() == tiny_weights.read_bytes() and cfg.read_bytes() == tiny_cfg.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.cfg", "m.weights", "other-name.weights"]
