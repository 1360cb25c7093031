"""Detection over images, folders, videos and streams, one result per image or frame: ``darkfold.predict``.

What `darkfold detect` runs, for Python: the inputs listed (a folder gives its images, by
name), consecutive images detected ``detect.BATCH`` to a forward pass, and so are a video's
frames, decoded on a thread of their own meanwhile (``videos.Video``); a camera or a live
stream detects its newest frame, dropping those it has no time for. With an ``output``
folder, an annotated copy of each image and video is written there through ``files``'
discipline: atomically, and never over one of the run's inputs (an image, the cfg, the
weights, the names file). An input that fails is one ``Prediction`` holding its error, and
the run goes on.

A run is a sequence of ``Task``s (a few consecutive images; a video, or a range of its
frames), each turned into its Predictions by ``run_task``: in this process, or on the
workers of a Dask cluster (``darkfold.cluster``), the same code either way. With ``resume``,
what a JSON Lines file records is left out of the tasks and each result appended to it
(``darkfold.records``).

    for result in darkfold.predict(["photos/", "clip.mp4"], output="predictions"):
        print(result.source, result.frame, result.detections, result.output)
"""

import contextlib
import dataclasses
import os
import time

import numpy as np

from . import images, interrupts, videos
from .detect import BATCH, NMS, THRESH, Detector
from .errors import ClusterError, DarkfoldError, ImageError, ModelError, OutputError
from .files import InputFiles, OutputFolder
from .model import load
from .records import Records
from .runtime import warm_up


@dataclasses.dataclass(frozen=True)
class Prediction:
    """What one image, or one frame of a video, gave.

    ``source``: the input's path, or its URL (a password hidden), camera number, or for an
    image in memory ``<bytes 0>``, ``<array 1>``, ``<file 2>`` (its place among the inputs);
    ``kind``: "image", "video" (a camera or stream too), or "input" for a path that named
    neither (missing, or a folder without images), which always fails; ``frame``: the frame's
    number in its video, from 0, else None (frames a real-time run skipped leave gaps); ``detections``: a tuple of ``Detection``,
    as ``Model.detect`` gives them; ``output``: where the annotated copy goes, or None when
    none is written (a video's copy is complete once its ``last`` frame is yielded);
    ``size``: (width, height) of the image or frame; ``seconds``: the detection's time
    (a batch's time shared among its images or frames); ``frames``: for a video frame, the
    frame count the video's container claims (0 if it does not say, or for a camera or live
    stream; a count can lie); ``last``:
    True on a video's last frame; ``error``: the ``DarkfoldError`` of a failed input, which
    then has no detections (and, for a video, no ``frame``: frames yielded before it stand);
    ``warnings``: what looked wrong without stopping it (a video shorter than its container
    says, a stream that stopped, a copy written in a codec browsers do not play), each a line.
    """

    source: str
    kind: str
    frame: int = None
    detections: tuple = ()
    output: str = None
    size: tuple = None
    seconds: float = None
    frames: int = None
    last: bool = False
    error: DarkfoldError = None
    warnings: tuple = ()

    @property
    def ok(self):
        return self.error is None


def predict(inputs, model=None, *, names=None, thresh=THRESH, nms=NMS, letterbox=None, threads=None,
            output=None, draw=True, max_pixels=None, channels="bgr", realtime=None, backend="numba", precision="f32",
            client=None, resume=None):
    """Detect objects in images, folders, videos and streams: an iterator of ``Prediction``, one
    per image or video frame, in input order.

    ``inputs``: one input or a list of them, each a path (an image, a folder: every image in
    it, sorted by name; a video, known by its extension or, for another one, by not being an
    image; a camera device such as /dev/video0), a stream's URL (rtsp://, http(s)://, ...), a
    camera's number (0, or "0" when no file has that name), or an image in memory: encoded
    bytes, a binary file object, or an array in ``channels`` order ("bgr" or "rgb"). ``model``:
    a loaded ``Model`` (default: the bundled YOLOv3-tiny); ``names``, ``thresh``, ``nms``,
    ``letterbox``, ``threads``, ``backend`` and ``precision`` as for ``Model.detect``. With
    ``output``, a folder (created for the first copy; removed again if the run created it and wrote nothing), each image
    gets an annotated copy there in its own format and each video one as .mp4, named after
    the input (a second ``dog.jpg`` becomes ``dog-2.jpg``; an image in memory ``bytes-2.jpg``
    after its place); an earlier copy of that name is replaced, an input never. ``draw=False``
    writes no copy. An image of more pixels than ``max_pixels`` (default:
    ``images.MAX_PIXELS``) is refused from its header, undecoded.

    ``realtime``: detect a video's newest frame each time, dropping those a slow model has
    no time for, rather than every frame (a file is then played at its own frame rate). None:
    for cameras and live streams (rtsp://, ...) only; files and http(s):// are read whole.

    ``client``: run the detection on a Dask cluster (needs ``darkfold[dask]``): a
    ``distributed.Client``, or ``"local"`` (a cluster of one single-threaded worker process
    per CPU on this machine, ``"local:N"`` for N), or a scheduler's address
    (``"tcp://host:8786"``), connected to for the run and closed after it; see
    ``darkfold.cluster``. The results are the same, in the same order.

    ``resume``: a JSON Lines file of an earlier run (what ``outputs.json_line`` writes, as
    ``darkfold detect --json`` prints it): the images, videos and frames recorded there are
    skipped, and each new result's line is appended to it, so that an interrupted run
    continues where it stopped and the file ends holding every input once (see
    ``records.Records``). A missing file is created.

    The model and names are checked and the inputs listed when ``predict`` is called (errors
    about them raise here, and so does a cluster that cannot be reached); detection runs as
    the iterator is consumed, and ``close()`` ends it early. An input that fails (missing,
    unreadable, a copy that cannot be written, a stream that breaks off) is one Prediction
    with its ``error``, and the run goes on.
    """
    single = isinstance(inputs, (str, os.PathLike, bytes, bytearray, memoryview, int, np.ndarray))
    listed = images.list_inputs([inputs] if single or hasattr(inputs, "read") else list(inputs))
    images.check_channels(channels)
    model = load() if model is None else model
    options = {"names": names, "thresh": thresh, "nms": nms, "letterbox": letterbox, "threads": threads,
               "backend": backend, "precision": precision}
    detector = Detector(model, **options)
    names_file = [os.fspath(names)] if isinstance(names, (str, os.PathLike)) else []
    model_files = [*model.sources, *names_file]
    reading = Reading(max_pixels, channels, realtime, tuple(model_files))
    records = None if resume is None else Records(resume, InputFiles(
        [item.path for item in listed if item.kind != "error" and item.source is None] + model_files))
    cluster = None
    if client is not None:
        # darkfold.cluster imports dask's distributed (an extra, and half a second): only a run
        # on a cluster loads it.
        try:
            from . import cluster
        except ImportError as error:
            raise ClusterError(f"running on a Dask cluster needs dask's distributed package: "
                               f'pip install "darkfold[dask]" ({error})', expected="dask[distributed]",
                               found="not installed") from None
        # The workers build their own detector from the model and these options, the names
        # read here (a names file need not be on the workers' file system).
        try:
            cluster = cluster.Cluster(client, model, {**options, "names": detector.names}, reading)
        except BaseException:
            if records is not None:
                records.close()
            raise
    return PredictionRun(detector, listed, model_files, output if draw else None, reading=reading, cluster=cluster,
                         records=records)


@dataclasses.dataclass(frozen=True)
class Reading:
    """How a run reads its inputs, which every task needs: ``max_pixels`` and ``channels`` for
    images, ``realtime`` for videos (None: for live sources), and the files no annotated copy
    may replace besides the task's own inputs (the model's, the names file)."""

    max_pixels: int = None
    channels: str = "bgr"
    realtime: bool = None
    protected: tuple = ()


@dataclasses.dataclass(frozen=True)
class Task:
    """A share of a run that runs on its own, in the process of the run or on a cluster's worker.

    ``kind``: "images" (``items`` detected ``BATCH`` to a forward pass), "video" (one item,
    its frames from ``start`` up to ``stop``, None for its end; frames before ``shown``
    detected for the annotated copy but not yielded, as an earlier run recorded them), or
    "input" (one item that failed when listed). ``outputs``: each item's annotated copy, None
    for none, or the OutputError that forbids it. ``note``: whether a video copy not in H.264
    says so (once a run). ``part``/``parts``: this video task's place among the frame ranges
    of its video.
    """

    kind: str
    items: tuple
    outputs: tuple
    start: int = 0
    stop: int = None
    shown: int = 0
    note: bool = False
    part: int = 0
    parts: int = 1


def run_task(task, detector, reading, inputs=None):
    """The Predictions of ``task``, as a generator: what a run does with each task, in its own
    process or on a worker. ``inputs``: the ``InputFiles`` no copy may replace (default: the
    task's inputs and ``reading.protected``)."""
    if inputs is None:
        inputs = InputFiles([item.path for item in task.items if item.source is None] + list(reading.protected))
    if task.kind == "images":
        for start in range(0, len(task.items), BATCH):
            yield from _images(detector, task.items[start:start + BATCH], task.outputs[start:start + BATCH],
                               reading, inputs)
    elif task.kind == "video":
        (item,), (output,) = task.items, task.outputs
        try:
            yield from _video(detector, item, output, reading, inputs, task)
        except DarkfoldError as error:
            yield Prediction(item.path, "video", error=error)
    else:
        (item,) = task.items
        yield Prediction(item.path, "input", error=ImageError(item.error, path=item.path))


def failed_task(task, reason):
    """One failed Prediction per input of ``task``, which could not run: ``reason`` says why
    (a cluster's workers died running it). Recorded like any failed input, so a resumed run
    does not try it again."""
    for item in task.items:
        kind = item.kind if item.kind in ("image", "video") else "input"
        yield Prediction(item.path, kind, error=ClusterError(f"{item.path}: {reason}", path=item.path,
                                                             expected="a task that ends", found="workers dying"))


def _images(detector, items, outputs, reading, inputs):
    """Images in one forward pass: each read (or failed) alone, detected together, then drawn
    and yielded one by one."""
    read = []  # (path, image, output, error) in input order
    for item, output in zip(items, outputs):
        try:
            image = images.load_image(item.path if item.source is None else item.source, reading.channels,
                                      reading.max_pixels)
            if isinstance(output, DarkfoldError):
                raise output
            read.append((item.path, image, output, None))
        except DarkfoldError as error:
            read.append((item.path, None, None, error))
    loaded = [image for _, image, _, error in read if error is None]
    if loaded:
        started = time.perf_counter()
        found = iter(detector.detect_many(loaded, batch=len(loaded)))
        seconds = (time.perf_counter() - started) / len(loaded)
    for path, image, output, error in read:
        if error is None:
            detections = next(found)
            try:
                if output is not None:
                    images.write_image(output, images.draw_detections(image, detections, detector.classes),
                                       inputs=inputs)
            except DarkfoldError as failure:
                error = failure
        if error is not None:
            yield Prediction(path, "image", error=error)
            continue
        yield Prediction(path, "image", detections=tuple(detections), output=output,
                         size=(image.shape[1], image.shape[0]), seconds=seconds)


def _video(detector, item, output, reading, inputs, task):
    """The frames of a video from ``task.start`` to ``task.stop``, detected in batches as its
    reader thread decodes them. A camera or live stream, which has no end but the user's
    signal, ends at the first SIGINT/SIGTERM with its copy finished (``interrupts.finishing``)."""
    if isinstance(output, DarkfoldError):
        raise output
    realtime = item.live if reading.realtime is None else reading.realtime
    video = videos.Video(item.path if item.source is None else item.source, item.path, live=item.live,
                         realtime=realtime, start=task.start, stop=task.stop)
    try:
        what = item.path if output is None else f"the annotated copy {output} of {item.path}"
        with interrupts.finishing(what) if item.live else contextlib.nullcontext():
            yield from _frames(detector, video, item, output, inputs, task)
    finally:
        video.close()


def _frames(detector, video, item, output, inputs, task):
    """``_video``'s frames, detected and drawn into ``output``; each batch's last frame is
    yielded once the next batch (or the end) is known, so that the last one knows it is last
    and comes when the annotated video is in place. A reading failure ends the video like its
    end, the frames before it kept, then is its error; the copy is then removed."""
    writer = None
    noted = not task.note
    try:
        batches = video.batches(BATCH)
        batch, failure = next(batches, []), None  # ImageError if no frame decodes
        while batch:
            if interrupts.stop_requested():
                video.close()  # the frames it holds are still detected and written
            started = time.perf_counter()
            found = detector.detect_many([frame for _, frame in batch], batch=len(batch))
            seconds = (time.perf_counter() - started) / len(batch)
            following = []
            for position, ((number, frame), detections) in enumerate(zip(batch, found)):
                notes = []
                if output is not None and writer is None:
                    writer = videos.VideoOutput(output, video.fps, (frame.shape[1], frame.shape[0]), inputs=inputs)
                    if writer.note is not None and not noted:
                        notes.append(writer.note)
                        noted = True
                if writer is not None:
                    writer.write(images.draw_detections(frame, detections, detector.classes))
                if position == len(batch) - 1:
                    try:
                        following = next(batches, [])
                    except DarkfoldError as error:
                        failure = error
                last = position == len(batch) - 1 and not following
                result = Prediction(item.path, "video", number, tuple(detections), output=output,
                                    size=(frame.shape[1], frame.shape[0]), seconds=seconds, frames=len(video),
                                    last=last, warnings=tuple(notes + (video.warnings if last else [])))
                if last and writer is not None:
                    try:
                        writer.close()
                    except DarkfoldError:
                        yield dataclasses.replace(result, last=False)  # its detections stand; the error follows
                        raise
                if number >= task.shown:
                    yield result
            batch = following
        if failure is not None:
            raise failure
    except BaseException:
        if writer is not None:
            writer.abort()
        raise


class PredictionRun:
    """The iterator ``predict`` returns. ``images``: how many images it reads (folders
    expanded, those a resumed run recorded left out), a progress bar's total; ``warnings``:
    what looked wrong about the run itself (a resumed file's cut last line, or one that
    records every input already, known up front for images); ``close()`` stops it, removing
    what a stopped video left half-written and an output folder the run made and left empty."""

    def __init__(self, detector, inputs, model_files, output, reading=None, cluster=None, records=None):
        self.detector = detector
        self.reading = Reading(protected=tuple(model_files)) if reading is None else reading
        self.warnings = [] if records is None else list(records.warnings)
        self._records = records
        self._cluster = cluster
        # The inputs a resumed run recorded are skipped, but keep their place: the copies of the
        # others get the names a whole run gives them, and none replaces one of theirs.
        self._recorded = set() if records is None else {
            number for number, item in enumerate(inputs) if records.done(item)}
        if inputs and len(self._recorded) == len(inputs):
            self.warnings.append(f"{records.path}: every input is recorded there already: nothing to do")
        self.images = sum(item.kind == "image" for number, item in enumerate(inputs) if number not in self._recorded)
        self._inputs = inputs
        # Every file the run reads, so that no annotated copy replaces one of them.
        self._sources = InputFiles([item.path for item in inputs if item.kind != "error" and item.source is None]
                                   + list(model_files))
        self._folder = None if output is None else OutputFolder(output)
        self._taken = set()  # output names given so far
        self._results = self._run()

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._results)

    def close(self):
        self._results.close()
        # A run closed before its first result never entered _run, whose end closes these.
        if self._cluster is not None:
            self._cluster.close()
        if self._records is not None:
            self._records.close()

    def _run(self):
        results = None
        try:
            if self._cluster is None:
                self.detector.prepare()  # before the first image's time is taken
                results = (result for task in self._tasks() for result in
                           run_task(task, self.detector, self.reading, self._sources))
            else:
                results = self._cluster.run(
                    self._tasks(), run_task, lambda task: run_task(task, self.detector, self.reading, self._sources),
                    failed_task, self._folder)
            for result in results:
                if self._records is not None:
                    self._records.append(result)
                yield result
        finally:
            if results is not None:
                results.close()  # a video stopped midway removes its half-written copy first
            if self._cluster is not None:
                self._cluster.close()
            if self._records is not None:
                self._records.close()
            if self._folder is not None:
                self._folder.remove_if_unused()

    def _tasks(self):
        """The run's tasks, in input order, made as they are asked for: consecutive images
        ``BATCH`` to a task (``cluster.IMAGES`` on a cluster), a video one task (on a cluster
        without copies, one per ``cluster.FRAMES`` frames of a file), a failed input one."""
        per_task = BATCH if self._cluster is None else self._cluster.images_per_task
        noted = False
        for group in _image_batches(self._named(), per_task):
            item, output = group[0]
            if item.kind == "image":
                yield Task("images", tuple(item for item, _ in group), tuple(output for _, output in group))
            elif item.kind == "video":
                shown = 0 if self._records is None else self._records.next_frame(item)
                yield from self._video_tasks(item, output, shown, note=not noted and output is not None)
                noted = noted or output is not None
            else:
                yield Task("input", (item,), (None,))

    def _named(self):
        """``(input, where its annotated copy goes)`` for each input to run, in order; a recorded
        input's name is taken all the same."""
        for number, item in enumerate(self._inputs):
            output = self._output(item, video=item.kind == "video") if item.kind in ("image", "video") else None
            if number not in self._recorded:
                yield item, output

    def _video_tasks(self, item, output, shown, note):
        """A video's tasks: one for the whole video, or on a cluster without a copy, its frames
        from ``shown`` on in ranges; with a copy, every frame is detected again for it."""
        start = 0 if output is not None else shown
        frames = 0 if self._cluster is None or output is not None else self._cluster.frame_count(item, self.reading)
        if frames <= start:
            yield Task("video", (item,), (output,), start=start, shown=shown, note=note)
            return
        size = self._cluster.frames_per_task
        starts = range(start, frames, size)
        for part, first in enumerate(starts):
            stop = None if part == len(starts) - 1 else first + size  # the last range reads to the real end
            yield Task("video", (item,), (None,), start=first, stop=stop, shown=shown, part=part, parts=len(starts))

    def _output(self, item, video=False):
        """Where the annotated copy of the input ``item`` goes (None when none is written);
        the OutputError, instead, if that is one of the run's inputs."""
        if self._folder is None:
            return None
        try:
            self._folder.make()
        except OutputError as error:
            return error
        output = images.output_path(item.name or item.path, self._folder.path, self._taken, video=video)
        source = self._sources.matching(output)
        if source is not None:
            if os.path.realpath(source) == os.path.realpath(item.path):
                return OutputError(f"{output}: the annotated copy would overwrite the image itself; choose another -o",
                                   path=output, expected="a file that is not an input", found="the image itself")
            return OutputError(f"{output}: the annotated copy of {item.path} would overwrite the input {source}; "
                               "choose another -o", path=output, expected="a file that is not an input",
                               found=f"the input {source}")
        return output


def _image_batches(named, size):
    """Consecutive ``(image input, output)`` pairs in groups of up to ``size``; the other
    inputs' pairs (videos, errors) alone."""
    group = []
    for pair in named:
        if pair[0].kind == "image":
            group.append(pair)
            if len(group) == size:
                yield group
                group = []
            continue
        if group:
            yield group
            group = []
        yield [pair]
    if group:
        yield group


def warmup(model=None, *, threads=None):
    """``darkfold.warmup``: have numba compile every kernel ``model`` (default: the bundled
    one) runs to detect, ahead of its first image: in a container image's build, or as an
    app starts. numba keeps them in its cache (once per install: the package's
    ``__pycache__`` folders, or ``NUMBA_CACHE_DIR``), where later processes load them from.
    Returns the seconds spent compiling, 0 when the cache held every kernel. A model that
    darkfold does not detect with gets the kernels of its forward pass."""
    model = load() if model is None else model
    try:
        detector = Detector(model, threads=threads)
    except ModelError:  # not a detection model, or no weights (which warm_up reports)
        return warm_up(model, threads=threads, everything=True)
    return detector.prepare(everything=True)
