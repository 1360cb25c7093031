"""darkfold.thread_flags: the lock-free waits of the engine's threads, called from Python."""

import numpy as np

from darkfold.thread_flags import CALLER_ASLEEP, DONE, JOB, SPINNING, announce, spin_until, worker_wait


def test_announce_sets_started():
    started = np.zeros(1, np.int64)
    announce(started)
    assert started[0] == 1


def _flags(workers=1):
    flags = np.zeros(DONE + workers, np.int64)
    flags[SPINNING] = 1
    return flags


def test_a_worker_marks_its_job_done_and_sees_a_posted_job():
    flags = _flags()
    flags[JOB] = 4
    assert worker_wait(flags, 0, 3, 100, 0)
    assert flags[DONE] == 3


def test_a_worker_takes_the_slow_path_when_no_job_comes_spinning_stops_or_the_caller_sleeps():
    flags = _flags()
    flags[JOB] = 3
    assert not worker_wait(flags, 0, 3, 100, 0)  # no new job within its spins
    flags[JOB], flags[SPINNING] = 4, 0
    assert not worker_wait(flags, 0, 3, 100, 0)
    flags[SPINNING], flags[CALLER_ASLEEP] = 1, 1
    assert not worker_wait(flags, 0, 3, 100, 0)


def test_spin_until_sees_the_value_or_gives_up_after_its_spins():
    flags = _flags()
    flags[DONE] = 7
    assert spin_until(flags, DONE, 7, 100)
    assert not spin_until(flags, DONE, 8, 100)
