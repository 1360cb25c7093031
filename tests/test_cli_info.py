"""`darkfold info`: the layer table, its JSON form, and its warnings."""

import json
import subprocess
import sys



from conftest import CFG_DIR, REPO, modules_loaded_by, run_cli, write


def run(capsys, *argv):
    return run_cli(capsys, *argv)


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


def test_info_to_a_full_disk_is_one_error_not_a_crash(tmp_path):
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "darkfold", "info"], cwd=REPO, stdout=full,
                                stderr=subprocess.PIPE, text=True)
    assert result.returncode == 2
    assert result.stderr == "darkfold: error: standard output: cannot write: No space left on device\n"
