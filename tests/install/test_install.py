"""`pip install .` into fresh virtual environments, as a user runs it: on the oldest and the
newest Python darkfold supports, and beside an OpenCV the user already has.

Slow (each environment downloads or unpacks 60-100 MB and compiles the numba kernels), so
deselected from the main suite: `python -m pytest -m install tests/install` runs them
(.ci/run does, as its own step). pip's download cache is used as it is.
"""

import glob
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from darkfold.opencv import DISTRIBUTIONS as OPENCV_DISTRIBUTIONS

from conftest import REPO

pytestmark = pytest.mark.install

OLDEST, NEWEST = "3.9", "3.13"  # setup.py's python_requires, and the newest Python this machine has


def find_python(version):
    """An interpreter for ``version`` ("3.9"): pyenv's build (the machine image has 3.8 to 3.13
    under ~/.pyenv), else python3.X on PATH; None where neither runs."""
    pyenv = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = sorted(glob.glob(os.path.join(pyenv, "versions", f"{version}.*", "bin", f"python{version}")))
    candidates.append(shutil.which(f"python{version}"))
    for python in filter(None, candidates):
        done = subprocess.run([python, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True, check=False)
        if done.returncode == 0 and done.stdout.strip() == version:
            return python
    return None


class Venv:
    """A new virtual environment in ``folder``, made by ``python``."""

    def __init__(self, python, folder):
        self.folder = Path(folder)
        subprocess.run([python, "-m", "venv", str(self.folder)], check=True)
        self.python = str(self.folder / "bin" / "python")

    def run(self, program, *args, cwd=None, check=True):
        """``program`` from the environment's bin folder; a failure shows its output."""
        done = subprocess.run([str(self.folder / "bin" / program), *map(str, args)], capture_output=True,
                              text=True, cwd=cwd, check=False)
        if check and done.returncode:
            pytest.fail(f"{program} {' '.join(map(str, args))} exited {done.returncode}:\n{done.stdout}\n"
                        f"{done.stderr}")
        return done

    def pip(self, *args, **kwargs):
        return self.run("python", "-m", "pip", *args, **kwargs)

    def opencv(self):
        """{distribution: version} of the OpenCV distributions pip lists."""
        listed = json.loads(self.pip("list", "--format=json").stdout)
        return {p["name"].lower(): p["version"] for p in listed if p["name"].lower() in OPENCV_DISTRIBUTIONS}

    def cv2(self, expression):
        return self.run("python", "-c", f"import cv2; print(repr(({expression})))").stdout.strip()


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A copy of the repository as a clone has it, so builds never write into the work tree."""
    folder = tmp_path_factory.mktemp("source") / "darkfold"
    shutil.copytree(REPO, folder, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", "*.nbi", "*.nbc", "predictions", ".pytest_cache"))
    return folder


def venv_for(version, folder):
    python = find_python(version)
    if python is None:
        message = f"no Python {version} on this machine (looked in ~/.pyenv/versions and PATH)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return Venv(python, folder)


def detect_convert_verify(venv, folder):
    """The README's first command and the folding commands, on the bundled model."""
    detected = venv.run("darkfold", "detect", cwd=folder)
    assert "dog: 81%" in detected.stdout and (folder / "predictions" / "dog.jpg").is_file()
    venv.run("darkfold", "convert", "-o", "out", cwd=folder)
    assert (folder / "out" / "yolov3-tiny-folded.weights").is_file()
    assert "OK: the folded model matches" in venv.run("darkfold", "verify", cwd=folder).stdout


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
def test_pip_install_in_a_fresh_environment_brings_headless_opencv_and_detects(version, source, tmp_path):
    venv = venv_for(version, tmp_path / "venv")
    venv.pip("install", source)
    assert list(venv.opencv()) == ["opencv-python-headless"]
    detect_convert_verify(venv, tmp_path)


def test_pip_install_beside_opencv_python_keeps_it_alone_and_whole(source, tmp_path):
    venv = venv_for(NEWEST, tmp_path / "venv")
    venv.pip("install", "opencv-python==4.14.*")
    before = venv.opencv()
    venv.pip("install", source)
    assert venv.opencv() == before
    assert venv.cv2("cv2.__version__, hasattr(cv2, 'imshow'), hasattr(cv2.dnn, 'readNetFromDarknet')") == \
        "('4.14.0', True, True)"
    detect_convert_verify(venv, tmp_path)


def test_a_wheel_built_beside_opencv_contrib_installs_without_another_opencv(source, tmp_path):
    venv = venv_for(NEWEST, tmp_path / "venv")
    venv.pip("install", "opencv-contrib-python==4.14.*")
    before = venv.opencv()
    venv.pip("wheel", "--no-deps", "--wheel-dir", tmp_path / "wheels", source)
    (wheel,) = (tmp_path / "wheels").glob("darkfold-*.whl")
    venv.pip("install", wheel)
    assert venv.opencv() == before
    assert venv.cv2("hasattr(cv2, 'imshow'), hasattr(cv2, 'ximgproc')") == "(True, True)"
    detect_convert_verify(venv, tmp_path)


def test_a_build_in_pips_own_venv_still_requires_the_installed_opencv(source, tmp_path):
    venv = venv_for(NEWEST, tmp_path / "venv")
    venv.pip("install", "--upgrade", "pip", "opencv-python==4.14.*")
    report = tmp_path / "report.json"
    done = venv.pip("install", "--dry-run", "--use-feature", "venv-isolation", "--report", report, source,
                    check=False)
    if done.returncode and "invalid choice" in done.stderr:
        pytest.skip(f"this pip has no --use-feature venv-isolation: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    installs = {item["metadata"]["name"]: item["metadata"] for item in json.loads(report.read_text())["install"]}
    assert "opencv-python>=4.5" in installs["darkfold"]["requires_dist"]
    assert not set(OPENCV_DISTRIBUTIONS) & set(installs)


def test_a_half_uninstalled_opencv_gets_one_error_naming_the_reinstall(source, tmp_path):
    venv = venv_for(NEWEST, tmp_path / "venv")
    venv.pip("install", "opencv-python==4.14.*", source)
    # What the user did: a second OpenCV over the first, then the usual "repair".
    venv.pip("install", "opencv-python-headless")
    venv.pip("uninstall", "--yes", "opencv-python-headless")
    broken = venv.run("darkfold", "detect", cwd=tmp_path, check=False)
    assert broken.returncode == 2
    assert broken.stderr.startswith("darkfold: error: OpenCV (cv2) imports but is incomplete (no cv2.imdecode)")
    assert broken.stderr.endswith(": reinstall it: pip install --force-reinstall opencv-python\n")
    venv.pip("install", "--force-reinstall", "opencv-python")  # the command the error names
    assert "dog: 81%" in venv.run("darkfold", "detect", cwd=tmp_path).stdout

