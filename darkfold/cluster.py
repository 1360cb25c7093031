"""Detection on a Dask cluster: a run's tasks sent to the workers, their results back in input
order.

    darkfold.predict(["archive/"], model, client="local")   # or "tcp://host:8786", a distributed.Client

``predict`` cuts the run into tasks (``prediction.Task``): ``IMAGES`` consecutive images, or
``FRAMES`` frames of a video file (the worker seeks to the range's first frame; frames keep
their numbers in the video). Each worker runs ``prediction.run_task``, the code a run on one
process runs, with a detector it builds once: the model and the detector's options travel
once, pickled in a worker plugin (``DetectorPlugin``) that the scheduler also hands to
workers that join later, so no worker needs the model's files; the run drops it at its end.
``TASKS_PER_THREAD`` tasks per worker thread are in flight at a time, so a run over millions
of images holds a bounded number of futures; results are yielded in input order as they
arrive. A worker that dies
has its tasks run again elsewhere by the scheduler (its outputs are written atomically, so a
task run twice writes each copy once), and each task's results are yielded once.

The workers read the inputs and write the annotated copies themselves: paths must name the
same files on the workers (a shared file system; absolute paths unless the workers share
the run's working folder), which is checked on the first input and on the output folder
before any task is sent. Images in memory travel with their task. Cameras and live streams
are not files to share: they run in this process, in their turn.
"""

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import difflib
import os
import threading
import uuid

import distributed

from . import videos
from .detect import Detector
from .errors import ClusterError
from .files import discard, temporary_beside
from .options import default_threads

LOCAL = "local"
CONNECT_TIMEOUT = 5.0  # seconds to reach a scheduler, and for it to have a worker
IMAGES = 16  # images per task: 4 forward passes
FRAMES = 240  # frames per task of a video cut into ranges
TASKS_PER_THREAD = 2  # tasks in flight per worker thread: one running, one waiting


def connect(scheduler):
    """``(client, owned)``: a ``distributed.Client`` for ``scheduler`` ("local", "local:N", an
    address), and what this module made and must close (nothing for a Client given)."""
    if not isinstance(scheduler, str):
        return scheduler, []
    if "://" not in scheduler and ":" not in scheduler and scheduler != LOCAL:  # no host:port either
        _refuse(scheduler)
    if scheduler == LOCAL or scheduler.startswith(LOCAL + ":"):  # localhost:8786 is an address
        count = scheduler[len(LOCAL) + 1:]
        if scheduler != LOCAL and not (count.isascii() and count.isdigit() and int(count) > 0):
            _refuse(scheduler)
        workers = int(count) if count else default_threads()
        # One single-threaded process per CPU: a worker's engine runs on one thread (darkfold's
        # threads, BLAS's), so the processes do not fight over the CPUs.
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                           dashboard_address=None)
        try:
            client = distributed.Client(cluster)
        except BaseException:
            cluster.close()
            raise
        return client, [client, cluster]
    try:
        client = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as error:
        raise ClusterError(f"{scheduler}: cannot reach a Dask scheduler there within {CONNECT_TIMEOUT:g} s ({error}); "
                           "start one with `dask scheduler`, or give local or local:N for a cluster on this machine",
                           expected="a Dask scheduler", found=str(error)) from None
    try:
        client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as error:
        client.close()
        raise ClusterError(f"{scheduler}: the Dask scheduler has no worker (none joined within {CONNECT_TIMEOUT:g} s); "
                           f"start them with `dask worker {scheduler}`", expected="workers", found="none") from error
    return client, [client]


def _refuse(scheduler):
    near = not scheduler.startswith(LOCAL) and difflib.get_close_matches(scheduler, [LOCAL], cutoff=0.6)
    hint = "; did you mean local?" if near else ""
    raise ClusterError(f"{scheduler}: expected local, local:N (N workers, at least 1) or a scheduler's address such "
                       f"as tcp://host:8786{hint}", expected="local:N", found=scheduler)


class DetectorPlugin(distributed.WorkerPlugin):
    """The model and the detector's options, sent once to every worker (and to those that join
    later); the worker's detector is built at its first task and kept until the run ends. Each
    run's plugin has a name of its own, so that runs sharing a cluster do not share one."""

    def __init__(self, model, options):
        self.model = model
        self.options = options
        self.name = f"darkfold-detector-{uuid.uuid4().hex}"
        self._detector = None
        self._lock = threading.Lock()

    def __getstate__(self):
        return {"model": self.model, "options": self.options, "name": self.name}

    def __setstate__(self, state):
        self.__dict__.update(state, _detector=None, _lock=threading.Lock())

    def detector(self):
        with self._lock:  # a worker with several threads builds one
            if self._detector is None:
                detector = Detector(self.model, **self.options)
                detector.prepare()
                self._detector = detector
            return self._detector


def _on_worker(function, plugin, task, reading):
    """A task on a worker: ``function(task, detector, reading)``'s results, as a list."""
    detector = distributed.get_worker().plugins[plugin].detector()
    return list(function(task, detector, reading))


def _missing(paths):
    """The ``paths`` a worker cannot see."""
    return [path for path in paths if not os.path.exists(path)]


class Cluster:
    """A run's cluster: connected (or made) at ``predict``, the detector's plugin registered,
    closed at the run's end if the run made it. ``images_per_task``, ``frames_per_task``: how
    the run cuts its inputs."""

    def __init__(self, scheduler, model, options, reading):
        self.client, self._owned = connect(scheduler)
        self._plugin = None
        self.images_per_task, self.frames_per_task = IMAGES, FRAMES
        self.reading = reading
        try:
            # A worker is one thread unless told otherwise (one worker process per CPU).
            self._plugin = DetectorPlugin(model, {**options, "threads": options.get("threads") or 1})
            self.client.register_plugin(self._plugin)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def frame_count(item, reading):
        """How many frames to cut the video ``item`` into ranges by: 0 for a camera or live
        stream, or when it is read in real time."""
        realtime = item.live if reading.realtime is None else reading.realtime
        if item.live or realtime:
            return 0
        return videos.frame_count(item.path if item.source is None else item.source, item.path)

    def run(self, tasks, function, here, failed, output=None):
        """The Predictions of ``tasks`` (``function(task, detector, reading)`` on a worker, or
        ``here(task)`` in this process for a camera or live stream), in order; for a task whose
        workers kept dying (an input that crashes or exhausts them), ``failed(task, reason)``,
        and the run goes on. ``output``: the run's output folder (an ``OutputFolder``), which
        the workers must see.

        A stopped run cancels the tasks it sent; one a worker is running ends on that worker,
        and a copy it was writing stays half-written under its hidden temporary name there."""
        tasks = iter(tasks)
        upcoming = collections.deque()  # tasks made, not yet sent
        for task in tasks:  # up to the first that reads a file, which the workers must see
            upcoming.append(task)
            if _files(task):
                break
        self._check_shared(_files(upcoming[-1]) if upcoming else [], output)
        window = max(2, TASKS_PER_THREAD * self._threads())
        pending = collections.deque()  # (task, future, or None for a task run here)

        def fill():
            while len(pending) < window:
                task = upcoming.popleft() if upcoming else next(tasks, None)
                if task is None:
                    return
                if task.kind == "video" and task.items[0].live:
                    pending.append((task, None))
                else:
                    pending.append((task, self.client.submit(_on_worker, function, self._plugin.name,
                                                             _portable(task), self.reading, pure=False)))

        ranges = _Ranges()
        fill()
        try:
            while pending:
                task, future = pending.popleft()
                results = here(task) if future is None else self._result(future, task, failed)
                window = max(2, TASKS_PER_THREAD * self._threads())  # workers may join or leave
                fill()
                yield from ranges.feed(task, results)
        finally:
            for _, future in pending:
                if future is not None:
                    future.cancel()

    def _threads(self):
        """The worker threads the cluster has now."""
        return sum(self.client.nthreads().values())

    @staticmethod
    def _result(future, task, failed):
        """The task's results; ``failed``'s for a task that Dask gave up on; ClusterError when
        the cluster is lost."""
        try:
            return future.result()
        except distributed.KilledWorker:
            return list(failed(task, "every worker that ran this input's task died (out of memory, or a crash in "
                                     "a decoder?), and Dask gave up on it"))
        except (OSError, asyncio.CancelledError, concurrent.futures.CancelledError) as error:
            raise ClusterError(f"the Dask cluster was lost during the run ({type(error).__name__}: {error}); "
                               "--resume continues a run from what it recorded", found=str(error)) from None

    def _check_shared(self, paths, output):
        """ClusterError unless every worker sees the first of the input files ``paths`` and the
        output folder."""
        probe = made = None
        if output is not None:
            output.make()
            made = temporary_beside(os.path.join(output.path, "probe"))
            probe = os.path.join(output.path, os.path.basename(made))  # as the run names it: maybe relative
        try:
            seen = self.client.run(_missing, paths[:1] + ([probe] if probe else []))
        finally:
            if made is not None:
                discard(made)
        for worker, missing in sorted(seen.items()):
            if missing and missing[0] == probe:
                raise ClusterError(f"{output.path}: the worker {worker} does not see this output folder: the "
                                   "workers write the annotated copies themselves; give a folder on a file system "
                                   "they share under the same path, or --no-draw", path=output.path,
                                   expected="a folder the workers share", found="one they do not see")
            if missing:
                raise ClusterError(f"{missing[0]}: the worker {worker} cannot read it: the workers read the inputs "
                                   "themselves; give paths they see under the same names (absolute, on a file "
                                   "system they share)", path=missing[0], expected="an input the workers see",
                                   found="none on the worker")

    def close(self):
        """Close the client and the local cluster this run made; a Client given stays open, and
        its workers drop the model."""
        if not self._owned and self._plugin is not None:
            with contextlib.suppress(Exception):  # a scheduler already gone has nothing to drop
                self.client.unregister_worker_plugin(self._plugin.name)
        self._plugin = None
        for thing in self._owned:
            thing.close()
        self._owned = []


def _files(task):
    """The files the workers read for ``task``."""
    return [item.path for item in task.items if item.source is None and item.kind != "error" and not item.live]


def _portable(task):
    """``task`` as it travels to a worker: a file object's image read into bytes."""
    if not any(hasattr(item.source, "read") for item in task.items):
        return task
    items = tuple(dataclasses.replace(item, source=item.source.read()) if hasattr(item.source, "read") else item
                  for item in task.items)
    return dataclasses.replace(task, items=items)


class _Ranges:
    """Joins the results of a video's frame ranges into those of one run over the video: the
    last frame of a range is the video's last only if no later range has frames, and a
    range's error ends the video (the ranges after it are dropped)."""

    def __init__(self):
        self.held = None  # the last frame so far of the video whose ranges come
        self.failed = False

    def feed(self, task, results):
        if task.parts == 1:
            yield from results
            return
        if task.part == 0:
            self.held, self.failed = None, False
        if self.failed:
            return
        for result in results:
            if self.held is not None:
                yield self.held if result.error is not None else dataclasses.replace(self.held, last=False)
                self.held = None
            if result.error is not None:
                self.failed = True
                yield result
                return
            if result.last:
                self.held = result
            else:
                yield result
        if task.part == task.parts - 1 and self.held is not None:
            yield self.held
            self.held = None
