"""Images in and out of detection: reading, Darknet's preprocessing, inputs, drawing.

Preprocessing matches AlexeyAB Darknet's ``test_detector`` (detector.c): the
image is loaded as RGB floats in [0, 1], then stretched to the network size by
``resize_image``, or, with ``letter_box``, scaled to fit by ``letterbox_image``
and centred on 0.5 grey. The network input is NCHW float32.
"""

import contextlib
import os
import sys
import tempfile
import threading
from dataclasses import dataclass

import numpy as np

# FFmpeg would print its own complaint about an unreadable video ("moov atom not found")
# next to darkfold's one-line error; OpenCV reads this when it loads FFmpeg. A user's own
# setting wins.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
from .opencv import cv2

from .errors import ImageError, OutputError
from .files import atomic_outputs, check_readable, discard, read_bytes, temporary_beside
from .resize import resize_bgr_to_rgb

# What cv2.imread decodes (OpenEXR is off in OpenCV's wheels); a folder's other files are skipped.
IMAGE_EXTENSIONS = frozenset({".bmp", ".dib", ".jpeg", ".jpg", ".jpe", ".jp2", ".png", ".webp", ".avif", ".pbm",
                              ".pgm", ".ppm", ".pxm", ".pnm", ".pfm", ".sr", ".ras", ".tiff", ".tif", ".hdr",
                              ".pic"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv",
                              ".3gp", ".ts", ".mjpeg"})
LETTERBOX_GREY = 0.5  # letterbox_image fills with .5
MAX_PIXELS = 2**28
"""The most pixels (width x height) ``read_image`` decodes: 16384 x 16384, 768 MB as BGR.

A PNG or JPEG header can promise 40000 x 40000 pixels in 200 bytes; such an
image is refused from its header, before any memory is taken (other formats
once decoded). Raise it here, with ``read_image(..., max_pixels=)`` or with
``darkfold detect --max-pixels``; OpenCV refuses more than 2**30 pixels
itself unless OPENCV_IO_MAX_IMAGE_PIXELS is set before it is imported.
"""


# --------------------------------------------------------------------------------------------
# reading


def read_image(path, max_pixels=None):
    """The image at ``path`` as a BGR uint8 array, as ``cv2.imread`` gives it; ImageError if unreadable.

    An image of more than ``max_pixels`` (default: ``MAX_PIXELS``) is an
    ImageError too, found from the header of a PNG or JPEG before decoding.
    """
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    data = read_bytes(path, "image")
    if not data:
        raise ImageError(f"{path}: empty file, not an image", path=path, expected="an image", found="0 bytes")
    size = header_size(data)
    if size is not None:
        _check_pixels(path, *size, max_pixels)
    try:
        with _decoder_warnings_dropped():
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except (cv2.error, MemoryError) as error:
        raise _decode_error(path, error, size) from None
    # Some OpenCV builds decode a cut JPEG without error and paint the missing part grey.
    if data[:2] == b"\xff\xd8" and (image is None or not _jpeg_complete(data)):
        raise ImageError(f"{path}: corrupt JPEG: OpenCV cannot decode it (truncated or damaged file)", path=path,
                         expected="a complete JPEG", found="a JPEG OpenCV cannot decode")
    if image is None:
        raise ImageError(f"{path}: not an image OpenCV can read (unknown format or corrupt file)", path=path,
                         expected="an image OpenCV reads", found="undecodable bytes")
    _check_pixels(path, image.shape[1], image.shape[0], max_pixels)
    return image


def header_size(data):
    """``(width, height)`` from the header of a PNG (IHDR) or a JPEG (its SOFn frame header), read
    without decoding; None for other formats and for a header that cannot be read."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


# SOF0-SOF15 carry the frame's size; C4 (Huffman tables), C8 and CC (arithmetic coding) do not.
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data):
    # After SOI, segments are FF, a marker byte and a 2-byte length (RSTn and TEM have none);
    # FF bytes may pad between them. The frame header comes before the first scan (SOS, DA).
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:
            position += 1
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:
            position += 2
        elif marker in _JPEG_FRAME_MARKERS:
            if position + 9 > len(data):
                return None
            height = int.from_bytes(data[position + 5:position + 7], "big")
            return int.from_bytes(data[position + 7:position + 9], "big"), height
        elif marker == 0xDA:
            return None
        else:
            position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
    return None


def _check_pixels(path, width, height, max_pixels):
    if width * height > max_pixels:
        raise ImageError(f"{path}: {width} x {height} = {width * height:,} pixels, more than the {max_pixels:,} "
                         "darkfold decodes (raise it with --max-pixels, or darkfold.images.MAX_PIXELS)", path=path,
                         expected=f"at most {max_pixels} pixels", found=width * height)


def _decode_error(path, error, size):
    """The ImageError for OpenCV's refusal (its own pixel limit) or a failed allocation."""
    pixels = "" if size is None else f" of {size[0]} x {size[1]} pixels"
    if isinstance(error, MemoryError) or error.code == cv2.Error.StsNoMem:
        return ImageError(f"{path}: not enough memory to decode this image{pixels}", path=path,
                          expected="an image that fits in memory", found="out of memory")
    if "CV_IO_MAX_IMAGE_PIXELS" in error.err:
        return ImageError(f"{path}: OpenCV refuses to decode this image{pixels}: more than its limit of pixels "
                          "(2**30 unless the environment variable OPENCV_IO_MAX_IMAGE_PIXELS sets another)",
                          path=path, expected="at most OpenCV's pixel limit", found="more pixels")
    return ImageError(f"{path}: OpenCV cannot decode it: {error.err}", path=path, expected="an image OpenCV reads",
                      found=error.err)


# What libpng and libjpeg print about a damaged but decodable file. OpenCV leaves their default
# handlers, which write to the process's stderr (file descriptor 2) around any Python-level
# setting, and cv2's log level does not reach them.
_DECODER_WARNINGS = (b"libpng warning: ", b"libpng error: ", b"Corrupt JPEG data", b"Premature end of JPEG file")
_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def _decoder_warnings_dropped():
    """While the block runs, send file descriptor 2 to a file; then pass on all but the decoders' warnings."""
    with _STDERR_LOCK, tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all: nothing to keep clean
            yield
            return
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture if not line.startswith(_DECODER_WARNINGS)]
            if kept:
                os.write(2, b"".join(kept))


def _jpeg_complete(data):
    # Entropy-coded data never holds 0xFF followed by a marker byte, so the last
    # start-of-scan marker is the image's own, and its end marker must follow it.
    return data.rfind(b"\xff\xd9") > data.rfind(b"\xff\xda")


def as_bgr(image):
    """Check an array given as an image: HxWx3 (BGR) or HxW (grey) uint8."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected an image path or a numpy array, got {type(image).__name__}",
                         expected="a path or a numpy array", found=type(image).__name__)
    if image.dtype != np.uint8:
        raise ImageError(f"expected a uint8 image array as cv2.imread returns, got dtype {image.dtype}",
                         expected="uint8", found=str(image.dtype))
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or min(image.shape[:2]) < 1:
        raise ImageError(f"expected an image array of shape (height, width, 3), got {image.shape}",
                         expected="(height, width, 3)", found=str(image.shape))
    return image[:, :, :3]


# --------------------------------------------------------------------------------------------
# preprocessing


def letterbox_size(image_w, image_h, net_w, net_h):
    """Size of the image inside the letterbox: letterbox_image (image.c), correct_yolo_boxes (yolo_layer.c)."""
    if np.float32(net_w) / np.float32(image_w) < np.float32(net_h) / np.float32(image_h):
        return net_w, max(1, image_h * net_w // image_w)
    return max(1, image_w * net_h // image_h), net_h


def preprocess(image, net_w, net_h, letterbox=False):
    """The network input for a BGR uint8 image: a (3, net_h, net_w) float32 RGB array in [0, 1].

    Stretched with Darknet's ``resize_image``, or with ``letterbox``, scaled to
    fit with the aspect ratio kept and centred on 0.5 grey (``letterbox_image``).
    """
    image = np.ascontiguousarray(as_bgr(image))
    out = np.empty((3, net_h, net_w), np.float32)
    height, width = image.shape[:2]
    if not letterbox:
        resize_bgr_to_rgb(image, out, 0, 0, net_w, net_h)
        return out
    new_w, new_h = letterbox_size(width, height, net_w, net_h)
    out.fill(LETTERBOX_GREY)
    resize_bgr_to_rgb(image, out, (net_w - new_w) // 2, (net_h - new_h) // 2, new_w, new_h)
    return out


# --------------------------------------------------------------------------------------------
# inputs: images, folders, videos


@dataclass(frozen=True)
class Input:
    """One thing to detect on: ``kind`` is "image" or "video"; or "error", with ``error`` saying why."""

    path: str
    kind: str
    error: str = None


def list_inputs(paths):
    """Expand ``paths`` into Inputs, in order: a folder gives its images, sorted by name.

    Problems found here (a missing path, an empty folder) become "error"
    Inputs, so that the caller reports them in turn and goes on.
    """
    inputs = []
    for path in map(os.fspath, paths):
        if os.path.isdir(path):
            inputs += _folder_inputs(path)
        elif not os.path.exists(path) and not os.path.islink(path):  # a broken link: reading it says why
            inputs.append(Input(path, "error", f"{path}: no such file or folder"))
        else:
            kind = "video" if _extension(path) in VIDEO_EXTENSIONS else "image"
            inputs.append(Input(path, kind))
    return inputs


def _folder_inputs(folder):
    try:
        names = sorted(os.listdir(folder))
    except OSError as error:
        return [Input(folder, "error", f"{folder}: cannot list folder: {error.strerror}")]
    images = [os.path.join(folder, name) for name in names
              if _extension(name) in IMAGE_EXTENSIONS and os.path.isfile(os.path.join(folder, name))]
    if not images:
        return [Input(folder, "error", f"{folder}: folder holds no images ({', '.join(_SHOWN_EXTENSIONS)}, ...)")]
    return [Input(path, "image") for path in images]


_SHOWN_EXTENSIONS = (".jpg", ".png", ".bmp", ".webp", ".tif")


def _extension(path):
    return os.path.splitext(path)[1].lower()


class Video:
    """Frames of a video file: ``len()`` is the frame count the container claims (0 if unknown)."""

    def __init__(self, path):
        check_readable(path, "video")
        self.path = path
        self._capture = cv2.VideoCapture(path)
        if not self._capture.isOpened():
            raise ImageError(f"{path}: cannot open as a video (unknown format or corrupt file)", path=path,
                             expected="a video OpenCV reads", found="a file it cannot open")
        self.fps = self._capture.get(cv2.CAP_PROP_FPS) or 25.0
        self.frame_count = max(0, int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)))

    def __len__(self):
        return self.frame_count

    def __iter__(self):
        read = 0
        while True:
            ok, frame = self._capture.read()
            if not ok:
                break
            read += 1
            yield frame
        if read == 0:
            raise ImageError(f"{self.path}: no frame could be decoded (corrupt or unsupported video)",
                             path=self.path, expected="video frames", found="none decodable")

    def close(self):
        self._capture.release()


# --------------------------------------------------------------------------------------------
# outputs


def output_path(input_path, folder, taken, video=False):
    """Where the annotated copy of ``input_path`` goes in ``folder``; ``taken`` collects names used."""
    stem, extension = os.path.splitext(os.path.basename(input_path))
    extension = ".mp4" if video else (extension if extension.lower() in _KEPT_EXTENSIONS else ".jpg")
    path = os.path.join(folder, stem + extension)
    number = 1
    while os.path.normcase(os.path.abspath(path)) in taken:
        number += 1
        path = os.path.join(folder, f"{stem}-{number}{extension}")
    taken.add(os.path.normcase(os.path.abspath(path)))
    return path


# Colour formats an annotated copy keeps; others (grey PGM, float PFM, ...) become JPEG.
_KEPT_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


def write_image(path, image, inputs=None):
    """Encode ``image`` by the extension of ``path`` and write it atomically, never over ``inputs``."""
    ok, encoded = cv2.imencode(os.path.splitext(path)[1], image)
    if not ok:
        raise OutputError(f"{path}: OpenCV cannot encode an image of this type", path=path)
    with atomic_outputs(path, inputs=inputs) as (temporary,):
        encoded.tofile(temporary)


class VideoOutput:
    """An .mp4 written frame by frame to a hidden file, renamed to ``path`` on ``close()``."""

    def __init__(self, path, fps, size, inputs=None):
        self.path = path
        self._inputs = inputs
        # VideoWriter picks the container from the extension, so the temporary name keeps it;
        # the rest of it is short, so that a long output name still fits beside it.
        self._temporary = temporary_beside(path, suffix=".mp4")
        self._writer = cv2.VideoWriter(self._temporary, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not self._writer.isOpened():
            self._discard()
            raise OutputError(f"{path}: OpenCV cannot write an mp4 video here", path=path)

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


# --------------------------------------------------------------------------------------------
# drawing


def class_color(class_id, classes):
    """Darknet's colour for a class (draw_detections_v3, get_color in image.c), as BGR 0-255."""
    offset = class_id * 123457 % classes
    return tuple(round(255 * _color_channel(channel, offset, classes)) for channel in (0, 1, 2))


_PALETTE = ((1, 0, 1), (0, 0, 1), (0, 1, 1), (0, 1, 0), (1, 1, 0), (1, 0, 0))


def _color_channel(channel, x, top):
    # get_color(c, x, max): red is channel 2, green 1, blue 0; BGR order is 0, 1, 2.
    ratio = x / top * 5
    low, high = int(np.floor(ratio)), int(np.ceil(ratio))
    ratio -= low
    return (1 - ratio) * _PALETTE[low][channel] + ratio * _PALETTE[high][channel]


def draw_detections(image, detections, classes):
    """A copy of ``image`` with a box and a label per detected object.

    Detections that share a box are drawn once, labelled with the most
    probable class and its confidence, then the other classes' names, as
    Darknet labels them.
    """
    canvas = as_bgr(image).copy()
    height, width = canvas.shape[:2]
    thickness = max(1, round(min(height, width) / 300))
    scale = max(0.4, min(height, width) / 900)
    for group in _by_box(detections):
        best = group[0]
        color = class_color(best.class_id, classes)
        left, top, box_w, box_h = best.box
        x1, y1 = _clip(left, width), _clip(top, height)
        x2, y2 = _clip(left + box_w, width), _clip(top + box_h, height)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
        label = ", ".join([f"{best.name}: {best.confidence:.2f}"] + [d.name for d in group[1:]])
        (text_w, text_h), baseline = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        label_top = y1 - text_h - baseline if y1 - text_h - baseline >= 0 else y1
        cv2.rectangle(canvas, (x1, label_top), (x1 + text_w, label_top + text_h + baseline), color, cv2.FILLED)
        text_color = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
        cv2.putText(canvas, label, (x1, label_top + text_h), cv2.FONT_HERSHEY_SIMPLEX, scale, text_color, 1,
                    cv2.LINE_AA)
    return canvas


def _by_box(detections):
    groups = {}
    for detection in detections:
        groups.setdefault(detection.box, []).append(detection)
    return [sorted(group, key=lambda d: -d.confidence) for group in groups.values()]


def _clip(value, size):
    return int(min(max(round(value), 0), size - 1))
