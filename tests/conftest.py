"""Shared fixtures: paths to the repository's models, cfgs and images."""

import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

import darkfold

REPO = Path(__file__).resolve().parent.parent
CFG_DIR = REPO / "cfg"
DATA_DIR = REPO / "data"


@pytest.fixture(scope="session")
def tiny_cfg():
    return Path(darkfold.DEFAULT_CFG)


@pytest.fixture(scope="session")
def tiny_weights():
    return Path(darkfold.DEFAULT_WEIGHTS)


@pytest.fixture(scope="session")
def tiny_model():
    return darkfold.load()


def pytest_configure(config):
    # The oracle tests skip without OpenCV 4.x; CI installs it, so there a skip is a defect.
    import oracle

    if os.environ.get("CI") and not oracle.HAS_DARKNET_IMPORTER:
        raise pytest.UsageError("CI needs opencv-python-headless 4.x (cv2.dnn.readNetFromDarknet): "
                                "install the test extra, pip install '.[test]'")


def all_cfgs():
    return sorted(CFG_DIR.glob("*.cfg")) + sorted(CFG_DIR.glob("*/*.cfg"))


def write(path, data):
    """Write text or bytes to ``path`` and return it."""
    path = Path(path)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def make_video(path, frames=3, fourcc="MJPG", fps=5):
    """A small video of ``frames`` frames of dog.jpg, shifted a little each frame; returns ``path``."""
    image = cv2.resize(cv2.imread(str(DATA_DIR / "dog.jpg")), (384, 288))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (384, 288))
    for i in range(frames):
        writer.write(np.roll(image, 8 * i, axis=1))
    writer.release()
    return path


def truncated_video(path, frames=30, kept=0.2):
    """An MJPG .avi whose header says ``frames`` frames, cut after its first ``kept`` share of bytes."""
    make_video(path, frames=frames)
    data = Path(path).read_bytes()
    return write(path, data[:int(len(data) * kept)])


@pytest.fixture
def http_folder(tmp_path):
    """``(folder, url)``: a folder served over HTTP on 127.0.0.1 while the test runs, and its URL."""
    folder = tmp_path / "served"
    folder.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args):  # no request log on stderr
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def modules_loaded_by(script, *names):
    """Which of the modules ``names`` a new Python process has imported once it ran ``script``."""
    check = f"\nimport sys\nprint('loaded:', *(name for name in {names!r} if name in sys.modules))\n"
    result = subprocess.run([sys.executable, "-c", script + check], capture_output=True, text=True, check=True,
                            cwd=REPO)
    return set(result.stdout.rpartition("loaded:")[2].split())


@pytest.fixture
def tmp_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path
