"""Videos in and out of detection: frames of a file, a camera or a network stream, decoded on a
thread of their own; annotated copies written as H.264 where OpenCV can.

Darknet's ``demo`` reads cameras and streams with a fetch thread beside the detection one, and
detects on the newest frame it holds; ``Video`` does the same with ``realtime``, and without it
hands over every frame, in batches, the decoding of the next ones overlapping the detection
of these.

    video = Video("clip.mp4")                    # or a camera number, "rtsp://...", "http://..."
    for batch in video.batches(4):               # [(frame number, BGR array), ...]
        ...
    video.warnings                               # after the end: a truncated file, a stream that stopped
"""

import collections
import contextlib
import os
import threading
import time
import urllib.parse

# FFmpeg would print its own complaint about an unreadable video ("moov atom not found") next to
# darkfold's one-line error; OpenCV reads this when it first opens a video, so setting it before
# then is enough. A user's own setting wins.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

from .errors import ImageError, OutputError
from .files import atomic_outputs, check_readable, discard, temporary_beside
from .opencv import cv2

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv",
                              ".3gp", ".ts", ".mjpeg"})
# Network streams OpenCV's FFmpeg opens. Live ones (a camera's feed) are read in real time by
# default; http(s) usually serves a file, read whole.
LIVE_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "udp", "tcp", "srt"})
STREAM_SCHEMES = LIVE_SCHEMES | {"http", "https"}
STREAM_TIMEOUT = 10.0  # seconds to open a network stream, and to wait for one of its frames
QUEUED = 8  # frames decoded ahead of detection (two batches)
MAX_FPS = 1000  # a frame rate above this is a stream's clock, not its frames


# --------------------------------------------------------------------------------------------
# what names a video


def stream_scheme(text):
    """The scheme of a network stream's URL (``rtsp``, ``http``, ...), or None if ``text`` is not one."""
    scheme, separator, _ = text.partition("://")
    scheme = scheme.lower()
    return scheme if separator and scheme in STREAM_SCHEMES else None


def shown_url(url):
    """``url`` as messages show it: a password in it hidden (``rtsp://user:***@host/...``)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def url_name(url):
    """The file name an annotated copy of the stream at ``url`` takes: its last path segment's
    stem (``clip`` of ``http://host/media/clip.mp4``), else its host, with ``.mp4``."""
    parts = urllib.parse.urlsplit(url)
    stem = os.path.splitext(parts.path.rstrip("/").rpartition("/")[2])[0]
    return (stem or parts.hostname or "stream") + ".mp4"


# --------------------------------------------------------------------------------------------
# reading


class Video:
    """Frames of a video file, a camera or a network stream, decoded on a thread of their own.

    ``source``: a path, a camera number (int), or a stream's URL; ``name``: how results and
    messages call it (default: ``source``); ``live``: a camera or a live stream, whose end is
    reported as a stream stopping. With ``realtime``, the reader keeps only the newest frame,
    so that a consumer slower than the source skips the frames it had no time for rather than
    falling behind; a file is then read at its own frame rate, as if it were live. Without it,
    every frame is handed over, the reader waiting while ``QUEUED`` frames wait.

    ``start`` and ``stop``: a file's frames from ``start`` (a seek, the frames keeping their
    numbers in the whole video) up to, not including, ``stop``; a video that ends before
    ``start`` gives no frame, and no error (its frames were all read before).

    ``fps`` and ``len()`` (the frame count the container claims, 0 if none or live) are known
    once it is open; ``warnings`` once ``batches`` has ended. ImageError if it cannot be opened.
    """

    def __init__(self, source, name=None, *, live=False, realtime=False, start=0, stop=None):
        self.name = str(source) if name is None else name
        self.live = live
        self.realtime = realtime
        self.start, self.stop = start, stop
        self.warnings = []
        self.read = 0  # frames decoded so far
        # A file's path goes in errors' path field; a stream's URL or a camera's number does not.
        self._path = source if isinstance(source, str) and not live and stream_scheme(source) is None else None
        self._capture = _open(source, self.name, live)
        fps, count = self._capture.get(cv2.CAP_PROP_FPS), self._capture.get(cv2.CAP_PROP_FRAME_COUNT)
        # Streams may say 0, -1, NaN, or their clock's rate (90000) here.
        self.fps = fps if 0 < fps <= MAX_FPS else 25.0
        self.frame_count = int(count) if count > 0 and not live else 0
        if start:
            # OpenCV's FFmpeg reader seeks to the key frame before and decodes up to the frame asked for.
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, start)
        self._frames = collections.deque()  # (number, frame), oldest first
        self._changed = threading.Condition()
        self._done = self._stopping = False
        self._error = None
        self._thread = threading.Thread(target=self._decode, name=f"darkfold video reader: {self.name}", daemon=True)
        self._thread.start()

    def __len__(self):
        return self.frame_count

    def _decode(self):
        """The reader thread: frames into ``_frames`` until the source ends, fails or ``close()``."""
        try:
            started = time.monotonic()
            while not self._stopping and (self.stop is None or self.start + self.read < self.stop):
                ok, frame = self._capture.read()  # OpenCV releases the GIL while it decodes
                if not ok:
                    break
                number = self.start + self.read
                self.read += 1
                with self._changed:
                    if self.realtime and not self.live:  # a file played as if live: at its own pace
                        self._changed.wait_for(lambda: self._stopping, timeout=max(
                            0.0, started + (number - self.start) / self.fps - time.monotonic()))
                    if self.realtime:
                        self._frames.clear()  # stale: detection had no time for it
                    while len(self._frames) >= QUEUED and not self._stopping:
                        self._changed.wait()
                    self._frames.append((number, frame))
                    self._changed.notify_all()
        except Exception as error:  # noqa: BLE001 - OpenCV's, from a stream that failed: reported by batches()
            self._error = error
        finally:
            self._capture.release()
            with self._changed:
                self._done = True
                self._changed.notify_all()

    def batches(self, size):
        """Lists of ``(frame number, frame)``, in order: with ``realtime`` the newest frame alone
        as soon as there is one, else ``size`` frames (fewer at the end). When the frames end,
        ``warnings`` says so if the end was early; ImageError if no frame could be decoded, or
        if reading failed (after the frames read before)."""
        wanted = 1 if self.realtime else size
        while True:
            with self._changed:
                while len(self._frames) < wanted and not self._done:
                    self._changed.wait()
                batch = [self._frames.popleft() for _ in range(min(wanted, len(self._frames)))]
                self._changed.notify_all()
            if not batch:
                break
            yield batch
        end = self.start + self.read
        if self._error is not None:
            raise ImageError(f"{self.name}: reading stopped after {end} frames: {self._error}", path=self._path,
                             expected="frames", found=str(self._error))
        if self.read == 0 and self.start:
            return  # the video ended before ``start``: said by the range that read its end
        if self.read == 0:
            raise ImageError(f"{self.name}: no frame could be decoded (corrupt or unsupported video)", path=self._path,
                             expected="video frames", found="none decodable")
        if self.live and not self._stopping:
            self.warnings.append(f"{self.name}: the stream stopped after {end} frames")
        elif end < min(self.frame_count, self.stop or self.frame_count):
            self.warnings.append(f"{self.name}: the video ended after {end} frames, though its container "
                                 f"says {self.frame_count}: a truncated or damaged file?")

    def close(self):
        """Stop the reader (at its next frame: a stream's read may take ``STREAM_TIMEOUT``)."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        self._thread.join(timeout=0.1)


def frame_count(source, name=None):
    """The frame count the container of the video file (or http(s):// URL) ``source`` claims; 0
    when it does not say, or when the video does not open (reading it says why)."""
    try:
        capture = _open(source, str(source) if name is None else name, live=False)
    except ImageError:
        return 0
    try:
        count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        return int(count) if count > 0 else 0
    finally:
        capture.release()


def _open(source, name, live):
    """A cv2.VideoCapture of ``source``, open; ImageError if it cannot be."""
    if isinstance(source, int):
        with _opencv_quiet():
            capture = cv2.VideoCapture(source)
        if not capture.isOpened():
            raise ImageError(f"camera {source}: cannot open it (no camera with this number, or another program is "
                             "using it)", expected="a camera", found="none that opens")
        return capture
    if stream_scheme(source) is not None:
        milliseconds = int(STREAM_TIMEOUT * 1000)
        with _opencv_quiet():
            if hasattr(cv2, "CAP_PROP_READ_TIMEOUT_MSEC"):  # OpenCV 4.5.2 on
                capture = cv2.VideoCapture(source, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, milliseconds,
                                                                    cv2.CAP_PROP_READ_TIMEOUT_MSEC, milliseconds])
            else:  # FFmpeg's own timeouts
                capture = cv2.VideoCapture(source, cv2.CAP_FFMPEG)
        if not capture.isOpened():
            raise ImageError(f"{name}: cannot open the stream (unreachable, refused, or not a video)",
                             expected="a video stream", found="none that opens")
        return capture
    if not live:
        check_readable(source, "video")
    with _opencv_quiet():
        capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        if live:  # a device: /dev/video0
            what = "cannot open it as a camera (no camera there, or another program is using it)"
        elif os.path.splitext(source)[1].lower() in VIDEO_EXTENSIONS:
            what = "cannot open as a video (unknown format or corrupt file)"
        else:
            what = "not an image or a video OpenCV can read (unknown format or corrupt file)"
        raise ImageError(f"{source}: {what}", path=source, expected="a video OpenCV reads", found="one it cannot open")
    return capture


@contextlib.contextmanager
def _opencv_quiet():
    """OpenCV's own log silenced while the block runs: its warnings about a camera or codec it
    cannot open would come on top of darkfold's one message."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)  # not in every OpenCV 4.5 build
    if logging is None:
        yield
        return
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(level)


# --------------------------------------------------------------------------------------------
# writing


# Codecs an annotated copy is written with, best first: H.264 (avc1), which browsers play, where
# this OpenCV's FFmpeg has an encoder for it (the opencv-python wheels do not), else MPEG-4 Part 2.
CODECS = ("avc1", "mp4v")
_unwritable = set()  # codecs this OpenCV failed to open a writer for: not tried again


class VideoOutput:
    """An .mp4 written frame by frame to a hidden file, renamed to ``path`` on ``close()``.

    ``codec``: the first of ``CODECS`` this OpenCV writes; ``note`` says why, when it is not
    H.264 (None otherwise).
    """

    def __init__(self, path, fps, size, inputs=None):
        self.path = path
        self._inputs = inputs
        # VideoWriter picks the container from the extension, so the temporary name keeps it;
        # the rest of it is short, so that a long output name still fits beside it.
        self._temporary = temporary_beside(path, suffix=".mp4")
        self.codec = self._writer = None
        for codec in CODECS:
            if codec in _unwritable:
                continue
            with _opencv_quiet():
                writer = cv2.VideoWriter(self._temporary, cv2.VideoWriter_fourcc(*codec), fps, size)
            if writer.isOpened():
                self.codec, self._writer = codec, writer
                break
            _unwritable.add(codec)
        if self._writer is None:
            self._discard()
            raise OutputError(f"{path}: OpenCV cannot write an mp4 video here", path=path)
        self.note = None if self.codec == CODECS[0] else (
            f"{path}: written as MPEG-4 Part 2 ({self.codec}), which web browsers do not play: this OpenCV has no "
            "H.264 (avc1) encoder; 'ffmpeg -i IN -c:v libx264 OUT' converts it")

    def write(self, frame):
        self._writer.write(frame)

    def close(self):
        self._writer.release()
        try:
            with atomic_outputs(self.path, inputs=self._inputs) as (temporary,):
                os.replace(self._temporary, temporary)
        finally:
            self._discard()

    def abort(self):
        self._writer.release()
        self._discard()

    def _discard(self):
        discard(self._temporary)
