"""Detection over images, folders and videos, one result per image or frame: ``darkfold.predict``.

What `darkfold detect` runs, for Python: the inputs listed (a folder gives its images, by
name), consecutive images detected ``detect.BATCH`` to a forward pass, each video frame by
frame, and, with an ``output`` folder, an annotated copy of each image and video written there
through ``files``' discipline: atomically, and never over one of the run's inputs (an image,
the cfg, the weights, the names file). An input that fails is one ``Prediction`` holding its
error, and the run goes on.

    for result in darkfold.predict(["photos/", "clip.mp4"], output="predictions"):
        print(result.source, result.frame, result.detections, result.output)
"""

import dataclasses
import os
import time

from . import images
from .detect import BATCH, NMS, THRESH, Detector
from .errors import DarkfoldError, ImageError, OutputError
from .files import InputFiles, OutputFolder
from .model import load


@dataclasses.dataclass(frozen=True)
class Prediction:
    """What one image, or one frame of a video, gave.

    ``source``: the input's path; ``kind``: "image", "video", or "input" for a path that
    named neither (missing, or a folder without images), which always fails; ``frame``: the
    frame's number in its video, from 0, else None; ``detections``: a tuple of ``Detection``,
    as ``Model.detect`` gives them; ``output``: where the annotated copy goes, or None when
    none is written (a video's copy is complete once its ``last`` frame is yielded);
    ``size``: (width, height) of the image or frame; ``seconds``: the detection's time
    (a batch's time shared among its images); ``frames``: for a video frame, the frame
    count the video's container claims (0 if it does not say; a count can lie); ``last``:
    True on a video's last frame; ``error``: the ``DarkfoldError`` of a failed input, which
    then has no detections (and, for a video, no ``frame``: frames yielded before it stand).
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

    @property
    def ok(self):
        return self.error is None


def predict(inputs, model=None, *, names=None, thresh=THRESH, nms=NMS, letterbox=None, threads=None,
            output=None, draw=True, max_pixels=None):
    """Detect objects in images, folders and videos: an iterator of ``Prediction``, one per image
    or video frame, in input order.

    ``inputs``: a path or a list of paths, each an image, a folder (every image in it, sorted
    by name) or a video (by its extension: .mp4, .avi, .mkv, ...). ``model``: a loaded
    ``Model`` (default: the bundled YOLOv3-tiny); ``names``, ``thresh``, ``nms``,
    ``letterbox`` and ``threads`` as for ``Model.detect``. With ``output``, a folder (created
    for the first copy; removed again if the run created it and wrote nothing), each image
    gets an annotated copy there in its own format and each video one as .mp4, named after
    the input (a second ``dog.jpg`` becomes ``dog-2.jpg``); an earlier copy of that name is
    replaced, an input never. ``draw=False`` writes no copy. An image of more pixels than
    ``max_pixels`` (default: ``images.MAX_PIXELS``) is refused from its header, undecoded.

    The model and names are checked and the inputs listed when ``predict`` is called (errors
    about them raise here); detection runs as the iterator is consumed, and ``close()`` ends
    it early. An input that fails (missing, unreadable, a copy that cannot be written) is one
    Prediction with its ``error``, and the run goes on.
    """
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    for item in inputs:
        if not isinstance(item, (str, os.PathLike)):
            raise ImageError(f"predict takes paths of images, folders and videos, got {type(item).__name__} "
                             "(Model.detect takes image arrays)", expected="a path", found=type(item).__name__)
    model = load() if model is None else model
    detector = Detector(model, names=names, thresh=thresh, nms=nms, letterbox=letterbox, threads=threads)
    names_file = [os.fspath(names)] if isinstance(names, (str, os.PathLike)) else []
    return PredictionRun(detector, images.list_inputs(inputs), [*model.sources, *names_file],
                         output if draw else None, max_pixels)


class PredictionRun:
    """The iterator ``predict`` returns. ``images``: how many images it reads (folders
    expanded), a progress bar's total; ``close()`` stops it, removing what a stopped video
    left half-written and an output folder the run made and left empty."""

    def __init__(self, detector, inputs, model_files, output, max_pixels=None):
        self.detector = detector
        self.max_pixels = max_pixels
        self.images = sum(item.kind == "image" for item in inputs)
        self._inputs = inputs
        # Every file the run reads, so that no annotated copy replaces one of them.
        self._sources = InputFiles([item.path for item in inputs if item.kind != "error"] + model_files)
        self._folder = None if output is None else OutputFolder(output)
        self._taken = set()  # output names given so far
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
                        yield from self._video(item.path)
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
                image = images.read_image(item.path, self.max_pixels)
                read.append((item.path, image, self._output(item.path), None))
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

    def _video(self, path):
        """The frames of a video, each yielded once the next one is read, so that the last one
        knows it is last and comes when the annotated video is in place."""
        video = images.Video(path)
        writer = output = None
        try:
            frames = iter(video)
            frame, number = next(frames, None), 0  # ImageError if no frame decodes
            while frame is not None:
                if self._folder is not None and writer is None:
                    output = self._output(path, video=True)
                    writer = images.VideoOutput(output, video.fps, (frame.shape[1], frame.shape[0]),
                                                inputs=self._sources)
                started = time.perf_counter()
                detections = self.detector.detect(frame)
                seconds = time.perf_counter() - started
                if writer is not None:
                    writer.write(images.draw_detections(frame, detections, self.detector.classes))
                following = next(frames, None)
                result = Prediction(path, "video", number, tuple(detections), output=output,
                                    size=(frame.shape[1], frame.shape[0]), seconds=seconds, frames=len(video),
                                    last=following is None)
                if result.last and writer is not None:
                    try:
                        writer.close()
                    except DarkfoldError:
                        yield dataclasses.replace(result, last=False)  # its detections stand; the error follows
                        raise
                yield result
                frame, number = following, number + 1
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        finally:
            video.close()

    def _output(self, path, video=False):
        """Where the annotated copy of ``path`` goes (None when none is written); OutputError if
        that is one of the run's inputs."""
        if self._folder is None:
            return None
        self._folder.make()
        output = images.output_path(path, self._folder.path, self._taken, video=video)
        source = self._sources.matching(output)
        if source is not None:
            what = "the image itself" if os.path.realpath(source) == os.path.realpath(path) else f"the input {source}"
            raise OutputError(f"{output}: the annotated copy of {path} would overwrite {what}; choose another -o",
                              path=output, expected="a file that is not an input", found=f"the input {source}")
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
