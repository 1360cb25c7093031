import importlib
import importlib.metadata
import os
import subprocess
import sys
import types

import pytest

import darkfold
from darkfold import opencv

from conftest import REPO, write


def pretend_installed(monkeypatch, *names):
    """Make importlib.metadata report exactly ``names`` among the OpenCV distributions."""
    def version(name):
        if name in names:
            return "4.14.0.94"
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", version)


def import_opencv_with(monkeypatch, cv2):
    """Import darkfold.opencv afresh with ``cv2`` in sys.modules (None: cv2 fails to import)."""
    monkeypatch.setitem(sys.modules, "cv2", cv2)
    monkeypatch.delitem(sys.modules, "darkfold.opencv")
    monkeypatch.delattr(darkfold, "opencv")
    return importlib.import_module("darkfold.opencv")


def test_a_cv2_without_imdecode_names_the_distribution_to_reinstall(monkeypatch):
    pretend_installed(monkeypatch, "opencv-python")
    with pytest.raises(darkfold.DarkfoldError) as error:
        import_opencv_with(monkeypatch, types.ModuleType("cv2"))
    assert str(error.value) == ("OpenCV (cv2) imports but is incomplete (no cv2.imdecode), as a half-uninstalled "
                                "OpenCV is: reinstall it: pip install --force-reinstall opencv-python")


def test_a_cv2_that_fails_to_import_names_the_distribution_to_reinstall(monkeypatch):
    pretend_installed(monkeypatch, "opencv-contrib-python")
    with pytest.raises(darkfold.DarkfoldError) as error:
        import_opencv_with(monkeypatch, None)
    assert str(error.value).startswith("OpenCV (cv2) does not import (")
    assert str(error.value).endswith(": reinstall it: pip install --force-reinstall opencv-contrib-python")


def test_without_any_opencv_the_error_says_what_to_install(monkeypatch):
    pretend_installed(monkeypatch)
    with pytest.raises(darkfold.DarkfoldError, match="no OpenCV distribution is installed; install one: "
                                                      "pip install opencv-python-headless$"):
        import_opencv_with(monkeypatch, None)


def test_several_distributions_keep_the_fullest_and_remove_the_others(monkeypatch):
    pretend_installed(monkeypatch, "opencv-python", "opencv-python-headless")
    error = opencv.broken_opencv("imports but is incomplete")
    assert str(error).endswith(": opencv-python, opencv-python-headless are all installed and share the cv2 "
                               "folder; keep one: pip uninstall -y opencv-python-headless && "
                               "pip install --force-reinstall opencv-python")


def test_a_missing_system_library_suggests_the_headless_build_not_a_reinstall(monkeypatch):
    pretend_installed(monkeypatch, "opencv-python")
    error = opencv.broken_opencv("does not import (libGL.so.1: cannot open shared object file: No such file)")
    assert str(error).endswith(": a system library it needs is missing: install it, or use OpenCV without a GUI: "
                               "pip uninstall -y opencv-python && pip install opencv-python-headless")


def test_detect_with_a_broken_cv2_is_one_error_line_and_exit_2(tmp_path):
    (tmp_path / "cv2").mkdir()
    write(tmp_path / "cv2" / "__init__.py", "")  # a cv2 package that shadows the installed one, empty
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]))
    result = subprocess.run([sys.executable, "-m", "darkfold", "detect"], capture_output=True, text=True,
                            cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("darkfold: error: OpenCV (cv2) imports but is incomplete (no cv2.imdecode)")
    assert "pip install --force-reinstall" in result.stderr and "Traceback" not in result.stderr
