"""`darkfold warmup`, and the first run's compile that it does ahead."""

import os
import re
import subprocess
import sys

from conftest import REPO

import darkfold
from darkfold.cli import main


def run(capsys, *argv):
    code = main(["warmup", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_first_run_compiles_before_the_first_image_and_says_so_apart_from_the_detection(tmp_path):
    """An empty numba cache is a first run after installing: the kernels compile before the first
    image, with a line saying how long that took, and the detection line times the detection. A
    later run compiles nothing, and `darkfold warmup` says where the compiled kernels are."""
    cache = tmp_path / "numba-cache"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))

    def run_darkfold(*argv):
        return subprocess.run([sys.executable, "-m", "darkfold", *argv], cwd=REPO, env=env, capture_output=True,
                              text=True, check=True)

    first = run_darkfold("detect", "--no-draw")
    assert re.fullmatch(r"darkfold: compiling the numba kernels \(once per install; `darkfold warmup` compiles them "
                        r"ahead\)\ndarkfold: compiled kernels in \d+\.\d s \(once per install\)\n", first.stderr)
    assert re.match(r".*dog\.jpg: 6 detected in \d+ ms\n", first.stdout)
    later = run_darkfold("detect", "--no-draw")
    assert later.stderr == ""
    assert later.stdout.splitlines()[1:] == first.stdout.splitlines()[1:]
    warmup = run_darkfold("warmup")
    assert warmup.stderr == ""
    assert warmup.stdout == f"{darkfold.DEFAULT_CFG}: the kernels it runs are compiled, in numba's cache under {cache}\n"


def test_warmup_of_a_cfg_without_its_weights_is_one_error(capsys, tiny_cfg):
    code, out, err = run(capsys, tiny_cfg)
    assert code == 2 and out == ""
    assert err == (f"darkfold: error: {tiny_cfg}: warmup runs the model, so it needs the weights too: "
                   "darkfold warmup CFG WEIGHTS\n")
