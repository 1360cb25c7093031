"""darkfold.threads.Workers: every part runs once, errors reach the caller, threads end."""

import threading
import time

import pytest

from darkfold.threads import MIN_SPLIT_VALUES, Workers


@pytest.fixture(params=[False, True], ids=["sleeping", "spinning"])
def workers(request):
    workers = Workers(3)
    if request.param:
        with workers.spinning():
            yield workers
    else:
        yield workers
    workers.close()


def test_every_part_runs_once_on_its_own_thread_before_run_returns(workers):
    for _ in range(200):  # many jobs back to back: none may overlap the next
        ran = []

        def task(part):
            time.sleep(0.001 * (part == 2))  # the last part finishes last
            ran.append((part, threading.current_thread().name))

        workers.run(task, 3)
        assert sorted(part for part, _ in ran) == [0, 1, 2]
        assert len({name for _, name in ran}) == 3


def test_an_error_in_a_worker_reaches_the_caller(workers):
    def task(part):
        if part == 1:
            raise ValueError("part 1 failed")

    with pytest.raises(ValueError, match="part 1 failed"):
        workers.run(task, 3)
    workers.run(lambda part: None, 3)  # and the workers still serve


def test_a_small_split_runs_in_the_calling_thread(workers):
    calls = []
    workers.split(lambda a, b: calls.append((a, b, threading.current_thread())), 10, MIN_SPLIT_VALUES - 1)
    assert calls == [(0, 10, threading.current_thread())]
    calls.clear()
    workers.split(lambda a, b: calls.append((a, b)), 10, MIN_SPLIT_VALUES)
    assert sorted(calls) == [(0, 3), (3, 6), (6, 10)]


def test_close_ends_the_worker_threads():
    before = set(threading.enumerate())
    workers = Workers(4)
    started = set(threading.enumerate()) - before
    assert len(started) == 3
    workers.close()
    for thread in started:
        thread.join(timeout=5)
        assert not thread.is_alive()
