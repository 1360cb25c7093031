"""Images in and out of detection: reading, Darknet's preprocessing, inputs, drawing.

Preprocessing matches AlexeyAB Darknet's ``test_detector`` (detector.c): the
image is loaded as RGB floats in [0, 1], then stretched to the network size by
``resize_image``, or, with ``letter_box``, scaled to fit by ``letterbox_image``
and centred on 0.5 grey. The network input is NCHW float32.
"""

import contextlib
import os
import re
import stat
import sys
import tempfile
import threading
from dataclasses import dataclass, field

import numpy as np

from .opencv import cv2

from .errors import ImageError, OutputError
from .files import atomic_outputs, read_bytes
from .resize import resize_bgr_to_rgb
from .videos import VIDEO_EXTENSIONS, shown_url, stream_scheme, url_name

# What cv2.imread decodes (OpenEXR is off in OpenCV's wheels); a folder's other files are skipped.
IMAGE_EXTENSIONS = frozenset({".bmp", ".dib", ".jpeg", ".jpg", ".jpe", ".jp2", ".png", ".webp", ".avif", ".pbm",
                              ".pgm", ".ppm", ".pxm", ".pnm", ".pfm", ".sr", ".ras", ".tiff", ".tif", ".hdr",
                              ".pic"})
LETTERBOX_GREY = 0.5  # letterbox_image fills with .5
MAX_PIXELS = 2**28
"""The most pixels (width x height) ``read_image`` decodes: 16384 x 16384, 768 MB as BGR.

An image header can promise 40000 x 40000 pixels in 200 bytes; such an image
is refused from its header (PNG, JPEG, BMP, WebP, TIFF, PBM/PGM/PPM), before any
memory is taken (other formats once decoded). Raise it here, with ``read_image(..., max_pixels=)`` or with
``darkfold detect --max-pixels``; OpenCV refuses more than 2**30 pixels
itself unless OPENCV_IO_MAX_IMAGE_PIXELS is set before it is imported.
"""


# --------------------------------------------------------------------------------------------
# reading


def read_image(path, max_pixels=None):
    """The image at ``path`` as a BGR uint8 array, as ``cv2.imread`` gives it; ImageError if unreadable.

    An image of more than ``max_pixels`` (default: ``MAX_PIXELS``) is an
    ImageError too, found from the header before decoding (``header_size``'s formats).
    """
    return decode_image(read_bytes(path, "image"), path, max_pixels)


def decode_image(data, path=None, max_pixels=None, what="image bytes"):
    """An encoded image (the bytes of a JPEG, PNG, ... file) as ``read_image`` reads it; errors
    start with ``path``, or with ``what`` the bytes are when they have none."""
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    name = what if path is None else path
    if not data:
        raise ImageError(f"{name}: empty{' file' if path else ''}, not an image", path=path, expected="an image",
                         found="0 bytes")
    size = header_size(data)
    if size is not None:
        _check_pixels(name, path, *size, max_pixels)
    try:
        with _decoder_warnings_dropped():
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except (cv2.error, MemoryError) as error:
        raise _decode_error(name, path, error, size) from None
    # Some OpenCV builds decode a cut JPEG without error and paint the missing part grey.
    if data[:2] == b"\xff\xd8" and (image is None or not _jpeg_complete(data)):
        raise ImageError(f"{name}: corrupt JPEG: OpenCV cannot decode it (truncated or damaged file)", path=path,
                         expected="a complete JPEG", found="a JPEG OpenCV cannot decode")
    if image is None:
        raise ImageError(f"{name}: not an image OpenCV can read (unknown format or corrupt file)", path=path,
                         expected="an image OpenCV reads", found="undecodable bytes")
    _check_pixels(name, path, image.shape[1], image.shape[0], max_pixels)
    return image


def load_image(image, channels="bgr", max_pixels=None):
    """An image given any way ``Model.detect`` takes one, as a BGR uint8 array: a path, the
    bytes of an encoded image (JPEG, PNG, ...), a binary file object holding one (an upload,
    ``open(path, "rb")``, ``io.BytesIO``), or an array (see ``as_bgr``, which ``channels``
    is for: encoded images know their own). ImageError for anything else."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(os.fspath(image), max_pixels)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image(bytes(image), None, max_pixels)
    if hasattr(image, "read") and not isinstance(image, np.ndarray):
        name = getattr(image, "name", None)
        path = name if isinstance(name, str) else None
        data = image.read()
        if isinstance(data, str):
            raise ImageError(f"{path or 'image file object'}: a text file object; open the image in binary mode "
                             "('rb')", path=path, expected="a binary file object", found="a text one")
        return decode_image(data, path, max_pixels, what="image file object")
    return as_bgr(image, channels)


def header_size(data):
    """``(width, height)`` from the header of a PNG (IHDR), a JPEG (its SOFn frame header), a BMP,
    a WebP, a TIFF (its first image) or a PBM/PGM/PPM, read without decoding; None for other
    formats and for a header that cannot be read."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    if data[:2] == b"BM" and len(data) >= 26:
        return _bmp_size(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        return _webp_size(data)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_size(data)
    if data[:1] == b"P" and len(data) >= 3 and data[1:2] in b"123456" and data[2:3].isspace():
        return _pnm_size(data)
    return None


def _bmp_size(data):
    # BITMAPCOREHEADER (12 bytes) has 16-bit sizes; the later headers 32-bit ones, the height
    # negative for rows stored top-down.
    if int.from_bytes(data[14:18], "little") == 12:
        return int.from_bytes(data[18:20], "little"), int.from_bytes(data[20:22], "little")
    return (abs(int.from_bytes(data[18:22], "little", signed=True)),
            abs(int.from_bytes(data[22:26], "little", signed=True)))


def _webp_size(data):
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: a key frame's 14-bit sizes after its start code
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    if chunk == b"VP8L":  # lossless: 14 bits each of width - 1 and height - 1
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: the canvas, 24 bits each of width - 1 and height - 1
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


_TIFF_WIDTH, _TIFF_HEIGHT = 256, 257  # the ImageWidth and ImageLength tags
_TIFF_VALUE_SIZES = {3: 2, 4: 4}  # SHORT and LONG, the types a size may have


def _tiff_size(data):
    order = "little" if data[:2] == b"II" else "big"
    directory = int.from_bytes(data[4:8], order)
    count = int.from_bytes(data[directory:directory + 2], order)
    sizes = {}
    for entry in range(directory + 2, min(directory + 2 + 12 * count, len(data) - 11), 12):
        tag, kind = int.from_bytes(data[entry:entry + 2], order), int.from_bytes(data[entry + 2:entry + 4], order)
        if tag in (_TIFF_WIDTH, _TIFF_HEIGHT) and kind in _TIFF_VALUE_SIZES:
            sizes[tag] = int.from_bytes(data[entry + 8:entry + 8 + _TIFF_VALUE_SIZES[kind]], order)
    if len(sizes) < 2:
        return None
    return sizes[_TIFF_WIDTH], sizes[_TIFF_HEIGHT]


def _pnm_size(data):
    # "P6", then width and height as decimal text, with whitespace and # comments between.
    fields = re.sub(rb"#[^\n]*", b" ", data[2:1024]).split()[:2]
    if len(fields) < 2 or not all(field.isdigit() for field in fields):
        return None
    return int(fields[0]), int(fields[1])


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


def _check_pixels(name, path, width, height, max_pixels):
    if width * height > max_pixels:
        raise ImageError(f"{name}: {width} x {height} = {width * height:,} pixels, more than the {max_pixels:,} "
                         "darkfold decodes (raise it with --max-pixels, or darkfold.images.MAX_PIXELS)", path=path,
                         expected=f"at most {max_pixels} pixels", found=width * height)


def _decode_error(name, path, error, size):
    """The ImageError for OpenCV's refusal (its own pixel limit) or a failed allocation."""
    pixels = "" if size is None else f" of {size[0]} x {size[1]} pixels"
    if isinstance(error, MemoryError) or error.code == cv2.Error.StsNoMem:
        return ImageError(f"{name}: not enough memory to decode this image{pixels}", path=path,
                          expected="an image that fits in memory", found="out of memory")
    if "CV_IO_MAX_IMAGE_PIXELS" in error.err:
        return ImageError(f"{name}: OpenCV refuses to decode this image{pixels}: more than its limit of pixels "
                          "(2**30 unless the environment variable OPENCV_IO_MAX_IMAGE_PIXELS sets another)",
                          path=path, expected="at most OpenCV's pixel limit", found="more pixels")
    return ImageError(f"{name}: OpenCV cannot decode it: {error.err}", path=path, expected="an image OpenCV reads",
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


CHANNELS = ("bgr", "rgb")


def check_channels(channels):
    """ImageError unless ``channels`` is one of ``CHANNELS``."""
    if not isinstance(channels, str) or channels not in CHANNELS:
        raise ImageError(f"channels={channels!r}: expected 'bgr' or 'rgb', the order of an image array's "
                         "colour channels", expected="'bgr' or 'rgb'", found=repr(channels))


def as_bgr(image, channels="bgr"):
    """An image array as BGR uint8, read as ``cv2.imread`` reads the file it could come from.

    ``channels``: the order of a colour array's channels, "bgr" (OpenCV's) or "rgb" (PIL's,
    imageio's, a browser canvas's). Height x width (x 1) is grey; a fourth channel (alpha) is
    dropped, as imread drops a PNG's; uint16 values keep their high byte, as imread reads a
    16-bit PNG. Any other array, or anything else, is an ImageError.
    """
    check_channels(channels)
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected an image: a path, encoded image bytes, a binary file object or a numpy array; "
                         f"got {type(image).__name__}", expected="an image", found=type(image).__name__)
    if image.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"expected an image array of uint8 (or uint16) values, as cv2.imread and PIL give them, "
                         f"got {image.dtype}: scale it to 0-255 and use .astype(np.uint8)",
                         expected="uint8 or uint16", found=str(image.dtype))
    grey = image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1)
    if not (grey or (image.ndim == 3 and image.shape[2] in (3, 4))) or min(image.shape[:2], default=0) < 1:
        hint = " (the bytes of an encoded image go as bytes: array.tobytes())" if image.ndim == 1 else ""
        raise ImageError(f"expected an image array of shape (height, width, 3), (height, width, 4) or (height, "
                         f"width), got {image.shape}{hint}", expected="(height, width, 3)", found=str(image.shape))
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)  # libpng's png_set_strip_16, which imread uses
    if grey:
        return cv2.cvtColor(np.ascontiguousarray(image.reshape(image.shape[:2])), cv2.COLOR_GRAY2BGR)
    return image[:, :, 2::-1] if channels == "rgb" else image[:, :, :3]


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
    """One thing to detect on: ``kind`` is "image" or "video"; or "error", with ``error`` saying why.

    ``path`` names it in results and messages: a file's path, a stream's URL (a password in it
    hidden), a camera's number, or for an image given in memory ``<bytes 2>``, ``<array 0>``
    (its place among the inputs) or a file object's name. ``source`` is what is read when it
    is not ``path`` itself: the URL, the camera number (int), the bytes, file object or array.
    ``name``: the file name its annotated copy takes, when not ``path``'s. ``live``: a camera or
    a live stream (rtsp://, ...), read in real time unless asked otherwise.
    """

    path: str
    kind: str
    error: str = None
    source: object = field(default=None, compare=False, repr=False)
    name: str = None
    live: bool = False


def list_inputs(items):
    """Expand ``items`` into Inputs, in order: a folder gives its images, sorted by name.

    An item is a path (an image, a folder, a video, a camera device such as /dev/video0), a
    stream's URL (rtsp://, http://, ...), a camera's number (an int, or a string of digits
    that names no file), or an image in memory: encoded bytes, a binary file object, an
    array. Problems found here (a missing path, an empty folder) become "error" Inputs, so
    that the caller reports them in turn and goes on; an item of another type is an ImageError.
    """
    inputs = []
    for position, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            inputs += _path_inputs(os.fspath(item))
        elif isinstance(item, int) and not isinstance(item, bool) and item >= 0:
            inputs.append(Input(str(item), "video", source=item, name=f"camera-{item}.mp4", live=True))
        elif isinstance(item, (bytes, bytearray, memoryview, np.ndarray)) or hasattr(item, "read"):
            kind = "array" if isinstance(item, np.ndarray) else "file" if hasattr(item, "read") else "bytes"
            name = getattr(item, "name", None) if kind == "file" else None
            label = name if isinstance(name, str) else f"<{kind} {position}>"
            inputs.append(Input(label, "image", source=item, name=os.path.basename(label) if isinstance(name, str)
                                else f"{kind}-{position}.jpg"))
        else:
            raise ImageError(f"expected images, folders, videos, stream URLs or camera numbers, got "
                             f"{type(item).__name__}", expected="a path, URL, camera number or image",
                             found=type(item).__name__)
    return inputs


def _path_inputs(path):
    if stream_scheme(path) is not None:
        return [Input(shown_url(path), "video", source=path, name=url_name(path),
                      live=stream_scheme(path) not in ("http", "https"))]
    if path.isascii() and path.isdigit() and not os.path.lexists(path):
        return [Input(path, "video", source=int(path), name=f"camera-{path}.mp4", live=True)]
    if os.path.isdir(path):
        return _folder_inputs(path)
    if not os.path.exists(path) and not os.path.islink(path):  # a broken link: reading it says why
        return [Input(path, "error", f"{path}: no such file or folder")]
    if os.path.exists(path) and stat.S_ISCHR(os.stat(path).st_mode):  # a camera device, /dev/video0
        return [Input(path, "video", live=True)]
    extension = _extension(path)
    if extension in IMAGE_EXTENSIONS:
        return [Input(path, "image")]
    # Another extension (clip.dat): an image if OpenCV knows its signature, else tried as a video.
    image = extension not in VIDEO_EXTENSIONS and cv2.haveImageReader(path)
    return [Input(path, "image" if image else "video")]


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
