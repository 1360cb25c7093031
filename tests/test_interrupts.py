"""SIGINT and SIGTERM at any moment of a run: a clean exit, and nothing half-written left."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import cv2
import pytest

import darkfold

from conftest import REPO

EXPECTED_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


def test_signals_at_random_moments_of_convert_leave_no_temporary_and_no_partial_output(tmp_path):
    # The moments are counted from when convert makes its output folder, its first act: before
    # that, Python is still importing numpy and its default handling applies.
    # The moments are drawn over the time a whole run takes, measured first on this machine.
    rng = random.Random(20261203)
    duration = start_convert(tmp_path / "timed")[1]()
    outcomes = []
    for number in range(32):
        signum, delay = rng.choice([signal.SIGTERM, signal.SIGINT]), rng.uniform(0.0, 1.2 * duration)
        out = tmp_path / f"run{number}"
        process, _ = start_convert(out)
        time.sleep(delay)
        process.send_signal(signum)
        _, err = process.communicate(timeout=120)
        outcomes.append(check_run(process.returncode, err, out, signum, delay))
    # The sweep reached every phase: finished runs, and runs stopped with their outputs removed.
    assert {"finished", "stopped"} <= set(outcomes), outcomes


def start_convert(out):
    """Start `darkfold convert -o out` and return once it made ``out``, its first act (before
    that, Python imports numpy, with its own default handling of signals). Also returns a
    function that waits for the end and gives the seconds from then."""
    process = subprocess.Popen([sys.executable, "-m", "darkfold", "convert", "-o", out], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not out.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    started = time.monotonic()

    def duration():
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        return time.monotonic() - started

    return process, duration


def check_run(code, err, out, signum, delay):
    where = f"signal {signum.name} after {delay:.2f} s: exit {code}, stderr {err!r}"
    left = sorted(os.listdir(out)) if out.exists() else []
    assert not [name for name in left if name.startswith(".darkfold-")], where
    outputs = ["yolov3-tiny-folded.cfg", "yolov3-tiny-folded.weights"]
    if code == -signum or (code == 1 and "KeyboardInterrupt" in err):
        # Python's own handling, while it imports numpy before darkfold's handler is set, or
        # once darkfold has returned: nothing was written yet, or everything was.
        assert left in ([], outputs), where
        if left:
            darkfold.load(*(out / name for name in outputs))
        return "outside darkfold"
    assert "Traceback" not in err and "Exception" not in err, where
    if code == 0:
        assert left == outputs, where
        darkfold.load(*(out / name for name in outputs))  # complete, and they fit each other
        return "finished"
    assert code == EXPECTED_CODES[signum], where
    assert err.splitlines()[-1] == (f"darkfold: {'interrupted' if signum == signal.SIGINT else 'terminated'}; "
                                    "nothing half-written was left"), where
    # Stopped before the outputs were put in place: no output, and the folder convert made is
    # gone too. (A signal after that point finds both outputs complete.)
    assert left in ([], outputs), where
    if left:
        darkfold.load(*(out / name for name in outputs))
        return "stopped after writing"
    assert not out.exists(), where
    return "stopped"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_detecting_a_folder_removes_the_output_folder_it_made(tmp_path, signum):
    images = tmp_path / "images"
    images.mkdir()
    for number in range(40):
        os.link(REPO / "data" / "dog.jpg", images / f"{number:02d}.jpg")
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "darkfold", "detect", images, "-o", out], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while process.poll() is None and not (process.stdout.readline().startswith(str(images))):
        pass  # until the first image is done
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == EXPECTED_CODES[signum], err
    assert not [name for name in os.listdir(out) if name.startswith(".darkfold-")]
    assert 0 < len(os.listdir(out)) < 40  # the finished copies stay; a run can be resumed


# A camera that never ends, as `darkfold detect 0` sees it: frames of dog.jpg at about 20 a second.
ENDLESS_CAMERA = """
import sys, time
import cv2
from darkfold import cli, videos

class EndlessCamera:
    def __init__(self):
        self.image = cv2.imread(sys.argv[1])

    def get(self, prop):
        return {cv2.CAP_PROP_FPS: 20.0}.get(prop, 0)

    def read(self):
        time.sleep(0.05)
        return True, self.image.copy()

    def release(self):
        pass

videos._open = lambda source, name, live: EndlessCamera()
sys.exit(cli.main(sys.argv[2:]))
"""


def start_camera(out):
    """`darkfold detect 0 --json -o out` on an endless camera; returns the process once it has
    printed its first frames."""
    process = subprocess.Popen([sys.executable, "-c", ENDLESS_CAMERA, str(REPO / "data" / "dog.jpg"), "detect",
                                "0", "--json", "-o", str(out)], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = [process.stdout.readline() for _ in range(3)]
    assert all(line.startswith("{") for line in lines), (lines, process.stderr.read() if process.poll() else "")
    return process, lines


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_a_camera_with_its_annotated_copy_finished(tmp_path, signum):
    out = tmp_path / "out"
    process, lines = start_camera(out)
    process.send_signal(signum)
    rest, err = process.communicate(timeout=60)
    assert process.returncode == EXPECTED_CODES[signum], err
    frames = lines + rest.splitlines()
    copy = out / "camera-0.mp4"
    assert err.splitlines()[-2:] == [
        f"darkfold: stopping: finishing the annotated copy {copy} of 0 (again to abandon it)",
        f"darkfold: {'interrupted' if signum == signal.SIGINT else 'terminated'}; the annotated copy {copy} of 0 "
        "was finished"]
    assert sorted(os.listdir(out)) == ["camera-0.mp4"]
    video = cv2.VideoCapture(str(copy))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == len(frames)  # every frame printed is in the copy
    numbers = [json.loads(line)["frame"] for line in frames]  # a camera is read in real time: frames may drop
    assert numbers == sorted(set(numbers))


def test_a_second_signal_abandons_the_camera_s_copy(tmp_path):
    out = tmp_path / "out"
    process, _ = start_camera(out)
    process.send_signal(signal.SIGINT)
    while not process.stderr.readline().startswith("darkfold: stopping: finishing the annotated copy"):
        pass
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert err.splitlines()[-1] == "darkfold: interrupted; nothing half-written was left"
    assert not out.exists() or os.listdir(out) == []
