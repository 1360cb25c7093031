"""darkfold.kernels.cache: the kernels compiled ahead, and the helper process compiling half of them."""

import logging
import os
import subprocess
import sys
import time

import pytest
from conftest import REPO

from darkfold.kernels import cache


def test_the_signatures_compiled_ahead_are_the_ones_a_forward_pass_of_the_bundled_model_calls():
    """A kernel compiled ahead for other argument types than the engine's would be compiled again
    on the first image, whose time would then include it. In a new process a kernel has
    signatures only once it ran."""
    script = ("import numpy as np, darkfold\n"
              "from darkfold.kernels.cache import SIGNATURES\n"
              "darkfold.load().forward(np.zeros((1, 3, 416, 416), np.float32))\n"
              "for kernel, signature in SIGNATURES.items():\n"
              "    if kernel.signatures != [signature]:\n"
              "        print(kernel.__name__, kernel.signatures)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO)
    assert result.stdout.strip() == ""


def test_a_helper_that_fails_is_logged_and_leaves_its_kernels_to_this_process(monkeypatch, caplog):
    monkeypatch.setattr(cache.Helper, "_WORK", "raise SystemExit('no compiler today')\n")
    with caplog.at_level(logging.DEBUG, logger="darkfold"), cache.Helper() as helper:
        pass
    assert helper.process.returncode == 1
    assert "no compiler today" in caplog.text


@pytest.mark.parametrize("executable", ["python3-missing", "uwsgi", ""])
def test_without_a_python_to_start_there_is_no_helper(monkeypatch, tmp_path, executable):
    """sys.executable may name no file, or an app embedding Python, which must not start again."""
    monkeypatch.setattr(sys, "executable", str(tmp_path / executable) if executable else executable)
    with cache.Helper() as helper:
        assert helper.process is None


def test_a_frozen_app_starts_no_helper(monkeypatch):
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    with cache.Helper() as helper:
        assert helper.process is None


def test_the_helper_ends_when_the_process_that_started_it_ends():
    """A helper left compiling after its parent was killed would hold a CPU for seconds."""
    script = ("import sys\n"
              "from darkfold.kernels import cache\n"
              "cache.Helper._WORK = 'import time; time.sleep(60)'\n"
              "print(cache.Helper().process.pid, flush=True)\n")
    parent = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO)
    pid = int(parent.stdout)
    deadline = time.monotonic() + 20
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(pid)


def _running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_cache_folder_is_the_package_when_numba_caches_beside_its_files(monkeypatch):
    monkeypatch.setattr(cache.conv_rows._cache, "_cache_path", os.path.join(os.path.dirname(cache.__file__),
                                                                             "__pycache__"))
    assert cache.cache_folder() == os.path.dirname(os.path.dirname(cache.__file__))
