"""Shared fixtures: paths to the repository's models, cfgs and images."""

import http.server
import importlib.util
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

import darkfold
import oracle

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


# Every YOLO network the engine claims, with an input size that keeps CI short.
ENGINE_CFGS = {
    "yolov2": 160, "yolov2-tiny": 160, "yolov2-voc": 160, "yolov3": 128, "yolov3-tiny": 160,
    "yolov3-spp": 128, "yolov3-tiny-prn": 160, "yolov4": 128, "yolov4-tiny": 160, "yolov4-csp": 128,
    "yolov4x-mish": 128, "yolov7-tiny": 160, "yolov7": 128,
}


def yolo_blob(size):
    """The input the random YOLO weights are calibrated on (and the engine tests run)."""
    return oracle.random_blob(size, size, seed=1)


@pytest.fixture(scope="session")
def random_yolo(tmp_path_factory):
    """name -> (cfg, weights, weights with OpenCV's BN eps): an ENGINE_CFGS network at its small
    size with random weights, written once a session (the files, not models: each test module
    loads its own and lets it go)."""
    folder = tmp_path_factory.mktemp("yolo")
    made = {}

    def make(name):
        if name not in made:
            size = ENGINE_CFGS[name]
            cfg = oracle.resized_cfg(CFG_DIR / f"{name}.cfg", folder / f"{name}.cfg", size, size)
            weights = folder / f"{name}.weights"
            # BN statistics measured on the test input keep swish and mish nets in range; the
            # reorg nets are leaky, which fixed gains keep in range (numpy_layer has no reorg).
            calibrate_on = None if name.startswith("yolov2") else yolo_blob(size)[0]
            layers, _ = oracle.write_random_weights(cfg, weights, seed=len(name), calibrate_on=calibrate_on)
            bumped = oracle.write_bumped_copy(weights, folder / f"{name}-bumped.weights", layers)
            made[name] = (cfg, weights, bumped)
        return made[name]

    return make


# marker: (whether this environment runs its tests, what they need, where CI runs them)
_ENVIRONMENT_MARKERS = {
    "opencv4": (oracle.HAS_DARKNET_IMPORTER, "opencv-python-headless 4.x (cv2.dnn.readNetFromDarknet)",
                "install the test extra, pip install '.[test]'"),
    "opencv5": (oracle.HAS_OPENCV5, "opencv-python-headless 5.x (the ONNX exports in OpenCV 5)",
                "run them in .ci/run's separate OpenCV 5 environment"),
    "onnxruntime": (importlib.util.find_spec("onnxruntime") is not None, "onnxruntime (backend='onnxruntime')",
                    "install the test extra, pip install '.[test]'"),
    "openvino": (importlib.util.find_spec("openvino") is not None, "openvino (backend='openvino')",
                 "install the test extra, pip install '.[test]'"),
    "dask": (importlib.util.find_spec("distributed") is not None, "dask[distributed] (detection on a cluster)",
             "install the test extra, pip install '.[test]'"),
}


def pytest_configure(config):
    for marker, (_, needs, _) in _ENVIRONMENT_MARKERS.items():
        config.addinivalue_line("markers", f"{marker}: needs {needs}")


@pytest.hookimpl(trylast=True)  # after -m has deselected what an environment does not run
def pytest_collection_modifyitems(config, items):
    """Skip the tests this environment's OpenCV, backends or Dask cannot run; under CI, where each
    environment selects its tests with -m, such a test is a defect of the run, not a skip."""
    for marker, (runs, needs, remedy) in _ENVIRONMENT_MARKERS.items():
        selected = [item for item in items if item.get_closest_marker(marker)]
        if runs or not selected:
            continue
        if os.environ.get("CI"):
            raise pytest.UsageError(f"CI: {len(selected)} selected tests need {needs}, which is not installed: "
                                    f"{remedy}, or deselect them with -m 'not {marker}'")
        for item in selected:
            item.add_marker(pytest.mark.skip(reason=f"needs {needs}"))


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


# What the CLI prints the first time numba compiles a kernel in a process, which depends on what
# ran before in the session (and on the cache), not on the command under test.
COMPILE_LINES = re.compile(r"^darkfold: (compiling the numba kernels|compiled kernels in) .*\n", re.M)


def run_cli(capsys, *argv):
    """Exit code, stdout and stderr of ``darkfold argv`` run in this process; stderr without the
    one-time compile lines (tests/test_cli_warmup.py checks those)."""
    from darkfold.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, COMPILE_LINES.sub("", err)
