"""Detection over images, folders, videos and streams, one result per image or frame: ``darkfold.predict``.

What `darkfold detect` runs, for Python: the inputs listed (a folder gives its images, by
name), consecutive images detected ``detect.BATCH`` to a forward pass, and so are a video's
frames, decoded on a thread of their own meanwhile (``videos.Video``); a camera or a live
stream detects its newest frame, dropping those it has no time for. With an ``output``
folder, an annotated copy of each image and video is written there through ``files``'
discipline: atomically, and never over one of the run's inputs (an image, the cfg, the
weights, the names file). An input that fails is one ``Prediction`` holding its error, and
the run goes on.

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
from .errors import DarkfoldError, ImageError, ModelError, OutputError
from .files import InputFiles, OutputFolder
from .model import load
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
            output=None, draw=True, max_pixels=None, channels="bgr", realtime=None, backend="numba", precision="f32"):
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

    The model and names are checked and the inputs listed when ``predict`` is called (errors
    about them raise here); detection runs as the iterator is consumed, and ``close()`` ends
    it early. An input that fails (missing, unreadable, a copy that cannot be written, a
    stream that breaks off) is one Prediction with its ``error``, and the run goes on.
    """
    single = isinstance(inputs, (str, os.PathLike, bytes, bytearray, memoryview, int, np.ndarray))
    listed = images.list_inputs([inputs] if single or hasattr(inputs, "read") else list(inputs))
    images.check_channels(channels)
    model = load() if model is None else model
    detector = Detector(model, names=names, thresh=thresh, nms=nms, letterbox=letterbox, threads=threads,
                        backend=backend, precision=precision)
    names_file = [os.fspath(names)] if isinstance(names, (str, os.PathLike)) else []
    return PredictionRun(detector, listed, [*model.sources, *names_file], output if draw else None, max_pixels,
                         channels, realtime)


class PredictionRun:
    """The iterator ``predict`` returns. ``images``: how many images it reads (folders
    expanded), a progress bar's total; ``close()`` stops it, removing what a stopped video
    left half-written and an output folder the run made and left empty."""

    def __init__(self, detector, inputs, model_files, output, max_pixels=None, channels="bgr", realtime=None):
        self.detector = detector
        self.max_pixels = max_pixels
        self.channels = channels
        self.realtime = realtime
        self.images = sum(item.kind == "image" for item in inputs)
        self._inputs = inputs
        # Every file the run reads, so that no annotated copy replaces one of them.
        self._sources = InputFiles([item.path for item in inputs if item.kind != "error" and item.source is None]
                                   + model_files)
        self._folder = None if output is None else OutputFolder(output)
        self._taken = set()  # output names given so far
        self._noted = False  # whether the note on the video codec was given
        self._results = self._run()

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._results)

    def close(self):
        self._results.close()

    def _run(self):
        try:
            self.detector.prepare()  # before the first image's time is taken
            for group in _image_batches(self._inputs, BATCH):
                item = group[0]
                if item.kind == "image":
                    yield from self._images(group)
                elif item.kind == "video":
                    try:
                        yield from self._video(item)
                    except DarkfoldError as error:
                        yield Prediction(item.path, "video", error=error)
                else:
                    yield Prediction(item.path, "input", error=ImageError(item.error, path=item.path))
        finally:
            if self._folder is not None:
                self._folder.remove_if_unused()

    def _images(self, items):
        """Images in one forward pass: each read (or failed) alone, detected together, then
        drawn and yielded one by one."""
        read = []  # (path, image, output, error) in input order
        for item in items:
            try:
                image = images.load_image(item.path if item.source is None else item.source, self.channels,
                                          self.max_pixels)
                read.append((item.path, image, self._output(item), None))
            except DarkfoldError as error:
                read.append((item.path, None, None, error))
        loaded = [image for _, image, _, error in read if error is None]
        if loaded:
            started = time.perf_counter()
            found = iter(self.detector.detect_many(loaded, batch=len(loaded)))
            seconds = (time.perf_counter() - started) / len(loaded)
        for path, image, output, error in read:
            if error is None:
                detections = next(found)
                try:
                    if output is not None:
                        images.write_image(output, images.draw_detections(image, detections, self.detector.classes),
                                           inputs=self._sources)
                except DarkfoldError as failure:
                    error = failure
            if error is not None:
                yield Prediction(path, "image", error=error)
                continue
            yield Prediction(path, "image", detections=tuple(detections), output=output,
                             size=(image.shape[1], image.shape[0]), seconds=seconds)

    def _video(self, item):
        """The frames of a video, detected in batches as its reader thread decodes them; each
        batch's last frame is yielded once the next batch (or the end) is known, so that the
        last one knows it is last and comes when the annotated video is in place. A reading
        failure ends the video like its end, the frames before it kept, then is its error."""
        realtime = item.live if self.realtime is None else self.realtime
        video = videos.Video(item.path if item.source is None else item.source, item.path, live=item.live,
                             realtime=realtime)
        output = None
        try:
            if item.live and self._folder is not None:
                output = self._output(item, video=True)
            what = item.path if output is None else f"the annotated copy {output} of {item.path}"
            with interrupts.finishing(what) if item.live else contextlib.nullcontext():
                yield from self._frames(item, video, output)
        finally:
            video.close()

    def _frames(self, item, video, output):
        """``_video``'s frames, detected and drawn into ``output``: the annotated copy is in
        place when the last frame comes, and removed if the frames end in an error."""
        writer = None
        try:
            batches = video.batches(BATCH)
            batch, failure = next(batches), None  # ImageError if no frame decodes
            while batch:
                if interrupts.stop_requested():
                    video.close()  # the frames it holds are still detected and written
                started = time.perf_counter()
                found = self.detector.detect_many([frame for _, frame in batch], batch=len(batch))
                seconds = (time.perf_counter() - started) / len(batch)
                following = []
                for position, ((number, frame), detections) in enumerate(zip(batch, found)):
                    notes = []
                    if self._folder is not None and writer is None:
                        output = output or self._output(item, video=True)
                        writer = videos.VideoOutput(output, video.fps, (frame.shape[1], frame.shape[0]),
                                                    inputs=self._sources)
                        if writer.note is not None and not self._noted:
                            notes.append(writer.note)
                            self._noted = True
                    if writer is not None:
                        writer.write(images.draw_detections(frame, detections, self.detector.classes))
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
                    yield result
                batch = following
            if failure is not None:
                raise failure
        except BaseException:
            if writer is not None:
                writer.abort()
            raise

    def _output(self, item, video=False):
        """Where the annotated copy of the input ``item`` goes (None when none is written);
        OutputError if that is one of the run's inputs."""
        if self._folder is None:
            return None
        self._folder.make()
        output = images.output_path(item.name or item.path, self._folder.path, self._taken, video=video)
        source = self._sources.matching(output)
        if source is not None:
            if os.path.realpath(source) == os.path.realpath(item.path):
                raise OutputError(f"{output}: the annotated copy would overwrite the image itself; choose another -o",
                                  path=output, expected="a file that is not an input", found="the image itself")
            raise OutputError(f"{output}: the annotated copy of {item.path} would overwrite the input {source}; "
                              "choose another -o", path=output, expected="a file that is not an input",
                              found=f"the input {source}")
        return output


def _image_batches(inputs, size):
    """Consecutive image inputs in groups of up to ``size`` (one forward pass each); the
    other inputs (videos, errors) alone."""
    group = []
    for item in inputs:
        if item.kind == "image":
            group.append(item)
            if len(group) == size:
                yield group
                group = []
            continue
        if group:
            yield group
            group = []
        yield [item]
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
