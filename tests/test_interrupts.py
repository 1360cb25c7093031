"""SIGINT and SIGTERM at any moment of a run: a clean exit, and nothing half-written left."""

import os
import random
import signal
import subprocess
import sys
import time

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
