"""darkfold.threads.Workers: every part runs once, errors reach the caller, threads end."""

import threading
import time

import numpy as np
import pytest

from darkfold import ModelError
from darkfold.thread_flags import announce
from darkfold.options import default_threads, thread_count
from darkfold.threads import MIN_SPLIT_VALUES, Workers


@pytest.fixture(params=[False, True], ids=["sleeping", "spinning"])
def workers(request):
    # Workers spin only with no more threads than CPUs: on a 2-CPU machine, 2 threads
    workers = Workers(min(3, default_threads()) if request.param else 3)
    if request.param:
        with workers.spinning():
            yield workers
    else:
        yield workers
    workers.close()


def test_every_part_runs_once_on_its_own_thread_before_run_returns(workers):
    threads = workers.threads
    for _ in range(200):  # many jobs back to back: none may overlap the next
        ran = []

        def task(part, ran=ran):
            time.sleep(0.001 * (part == threads - 1))  # the last part finishes last
            ran.append((part, threading.current_thread().name))

        workers.run(task, threads)
        assert sorted(part for part, _ in ran) == list(range(threads))
        assert len({name for _, name in ran}) == threads


def test_jobs_of_fewer_parts_than_threads_run_each_part_once(workers):
    ran = []
    for job in range(300):  # a worker the last job did not need may wake during the next one
        parts = 2 + job % (workers.threads - 1)
        workers.run(lambda part, job=job: ran.append((job, part)), parts)
    assert len(ran) == len(set(ran)) == sum(2 + job % (workers.threads - 1) for job in range(300))


def _finishes_within(seconds, job):
    """Run ``job`` in a thread; fail, rather than hang the suite, if it has not returned in time."""
    thread = threading.Thread(target=job, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the job did not finish: a lost wake-up"


def test_a_caller_asleep_for_a_long_part_is_woken_when_it_ends(workers):
    """The caller spins ~1 ms for a worker, then sleeps: the worker, which marks its job done
    without the GIL, must still wake it. Parts on either side of that 1 ms, many times over."""
    def jobs():
        for job in range(60):
            delay = 0.0005 * (job % 6)
            workers.run(lambda part: time.sleep(delay * (part > 0)), workers.threads)

    _finishes_within(30, jobs)


def test_parts_that_announce_their_kernel_run_and_those_that_fail_first_do_not_stall(workers):
    """With ``announces``, the workers wait for part 0's kernel to set ``started``; a part 0
    that fails before its kernel runs only delays them (START_SPINS)."""
    ran = []

    def task(part):
        if part == 0:
            announce(workers.started)
        ran.append(part)

    def failing(part):
        if part == 0:
            raise ValueError("before the kernel")

    def jobs():
        for _ in range(50):
            workers.run(task, workers.threads, announces=True)
            with pytest.raises(ValueError, match="before the kernel"):
                workers.run(failing, workers.threads, announces=True)

    _finishes_within(30, jobs)
    assert sorted(ran) == sorted(list(range(workers.threads)) * 50)


def test_an_error_in_a_worker_reaches_the_caller(workers):
    def task(part):
        if part == 1:
            raise ValueError("part 1 failed")

    with pytest.raises(ValueError, match="part 1 failed"):
        workers.run(task, workers.threads)
    workers.run(lambda part: None, workers.threads)  # and the workers still serve


def test_when_every_part_fails_the_first_error_is_raised_and_none_is_kept(workers):
    def task(part):
        raise ValueError(f"part {part} failed")

    with pytest.raises(ValueError, match="part 0 failed"):
        workers.run(task, workers.threads)
    for _ in range(3):  # no earlier error comes back
        workers.run(lambda part: None, workers.threads)


def test_running_on_closed_workers_is_an_error_not_a_hang():
    workers = Workers(2)
    workers.close()
    with pytest.raises(RuntimeError, match="closed"):
        workers.run(lambda part: None, 2)


def test_a_small_split_runs_in_the_calling_thread(workers):
    calls = []
    workers.split(lambda a, b: calls.append((a, b, threading.current_thread())), 10, MIN_SPLIT_VALUES - 1)
    assert calls == [(0, 10, threading.current_thread())]
    calls.clear()
    workers.split(lambda a, b: calls.append((a, b)), 12, MIN_SPLIT_VALUES)
    bounds = [12 * i // workers.threads for i in range(workers.threads + 1)]
    assert sorted(calls) == list(zip(bounds, bounds[1:]))


def test_close_ends_the_worker_threads():
    before = set(threading.enumerate())
    workers = Workers(4)
    started = set(threading.enumerate()) - before
    assert len(started) == 3
    workers.close()
    for thread in started:
        thread.join(timeout=5)
        assert not thread.is_alive()


def test_thread_count_is_every_cpu_at_most_and_refuses_what_is_not_a_count():
    # 100000 threads took 50 s to fail to start; 2048 made verify 50x slower than 2.
    cpus = default_threads()
    assert thread_count(None) == (cpus, None) and thread_count(1) == (1, None)
    assert thread_count(np.int64(cpus)) == (cpus, None)
    assert thread_count(100_000) == (cpus, f"100000 is more than the {cpus} CPUs this process may use; "
                                           f"running {cpus} threads")
    for bad in (0, -1, 2.0, True, "2"):
        with pytest.raises(ModelError, match=f"threads={bad!r}: expected a whole number of at least 1"):
            thread_count(bad)
