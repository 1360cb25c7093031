"""Images: Darknet's preprocessing (resize_image, letterbox_image), reading, inputs, outputs."""

import io
import os
import shutil
import struct
import zlib

import cv2
import numpy as np
import pytest
from conftest import DATA_DIR, make_video, write

from darkfold import ImageError, images
from darkfold.images import (
    Input,
    class_color,
    header_size,
    letterbox_size,
    list_inputs,
    output_path,
    preprocess,
    read_image,
)


def darknet_resize_reference(rgb, width, height):
    """resize_image (image.c) in float64: corner-aligned bilinear, columns then rows, last row/column exact."""
    in_h, in_w, _ = rgb.shape
    sx = np.arange(width) * ((in_w - 1) / (width - 1))
    ix = np.minimum(sx.astype(int), in_w - 2)
    dx = (sx - ix)[None, :, None]
    part = (1 - dx) * rgb[:, ix] + dx * rgb[:, ix + 1]
    sy = np.arange(height) * ((in_h - 1) / (height - 1))
    iy = np.minimum(sy.astype(int), in_h - 2)
    dy = (sy - iy)[:, None, None]
    return ((1 - dy) * part[iy] + dy * part[iy + 1]).transpose(2, 0, 1)


@pytest.mark.parametrize("in_size, out_size", [((53, 37), (29, 41)), ((20, 15), (61, 47)), ((768, 576), (416, 416))])
def test_stretch_is_darknets_corner_aligned_bilinear_resize(in_size, out_size):
    image = np.random.default_rng(0).integers(0, 256, (in_size[1], in_size[0], 3), dtype=np.uint8)
    out = preprocess(image, *out_size)
    expected = darknet_resize_reference(image[:, :, ::-1] / 255.0, *out_size)
    assert out.dtype == np.float32 and out.shape == (3, out_size[1], out_size[0])
    # resize_image computes sample positions in float32 (an ulp is 6e-5 near 768): within 1e-4.
    # The last row has its own test, below.
    np.testing.assert_allclose(out[:, :-1], expected[:, :-1], atol=1e-4)


def test_stretch_keeps_the_last_row_of_darknets_resize_image():
    # For 3 -> 160 rows, float32 puts row 159 at 1.9999999: resize_image keeps
    # only (1 - dy) * row[1] there, a nearly black row in a white image.
    white = np.full((3, 5, 3), 255, np.uint8)
    out = preprocess(white, 5, 160)
    assert out[:, -1].max() < 1e-5
    np.testing.assert_allclose(out[:, :-1], 1, atol=1e-6)


def test_preprocess_gives_rgb_in_unit_range():
    blue = np.zeros((4, 6, 3), np.uint8)
    blue[..., 0] = 255  # BGR
    out = preprocess(blue, 8, 8)
    assert out[2].min() == 1 and out[0].max() == 0 and out[1].max() == 0


def test_letterbox_keeps_the_aspect_and_pads_with_grey():
    image = np.random.default_rng(1).integers(0, 256, (576, 768, 3), dtype=np.uint8)
    assert letterbox_size(768, 576, 416, 416) == (416, 312)
    out = preprocess(image, 416, 416, letterbox=True)
    assert (out[:, :52] == 0.5).all() and (out[:, 52 + 312:] == 0.5).all()
    np.testing.assert_array_equal(out[:, 52:364], preprocess(image, 416, 312))


def test_letterbox_of_a_tall_image_pads_left_and_right():
    image = np.zeros((300, 100, 3), np.uint8)
    assert letterbox_size(100, 300, 96, 96) == (32, 96)
    out = preprocess(image, 96, 96, letterbox=True)
    assert (out[:, :, :32] == 0.5).all() and (out[:, :, 32:64] == 0).all() and (out[:, :, 64:] == 0.5).all()


def test_preprocess_rejects_arrays_that_are_not_images():
    with pytest.raises(ImageError, match="uint8"):
        preprocess(np.zeros((4, 4, 3), np.float32), 8, 8)
    with pytest.raises(ImageError, match="shape"):
        preprocess(np.zeros((4, 4, 2), np.uint8), 8, 8)


# --------------------------------------------------------------------------------------------
# reading and inputs


def test_read_image_gives_opencvs_bgr_array():
    image = read_image(str(DATA_DIR / "dog.jpg"))
    np.testing.assert_array_equal(image, cv2.imread(str(DATA_DIR / "dog.jpg")))


def test_a_jpeg_without_its_end_marker_is_corrupt(tmp_path):
    # Builds whose libjpeg decodes a cut file (painting the rest grey) must still refuse it.
    data = (DATA_DIR / "eagle.jpg").read_bytes()
    assert data.endswith(b"\xff\xd9")
    for cut in (write(tmp_path / "a.jpg", data[:-2]), write(tmp_path / "b.jpg", data[: len(data) // 3])):
        with pytest.raises(ImageError, match="corrupt JPEG"):
            read_image(str(cut))
    with pytest.raises(ImageError, match="empty file"):
        read_image(str(write(tmp_path / "c.png", b"")))


def png_chunk(kind, data, crc=None):
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def grey_png(width, height, extra=b""):
    """A grey 8-bit PNG of ``width`` x ``height`` as its header says, with one zero row of data;
    ``extra``: chunks between the header and the data."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    data = png_chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))
    return b"\x89PNG\r\n\x1a\n" + header + extra + data + png_chunk(b"IEND", b"")


def with_jpeg_size(data, width, height):
    """``data`` (a JPEG) with its frame header (SOF0) saying ``width`` x ``height``."""
    sof = data.index(b"\xff\xc0")
    return data[:sof + 5] + struct.pack(">HH", height, width) + data[sof + 9:]


def test_the_size_of_a_png_or_jpeg_is_read_from_its_header():
    dog = (DATA_DIR / "dog.jpg").read_bytes()
    assert header_size(dog) == (768, 576) and header_size(with_jpeg_size(dog, 40000, 30000)) == (40000, 30000)
    assert header_size(grey_png(40000, 20)) == (40000, 20)
    assert header_size(b"GIF89a" + bytes(60)) is None and header_size(dog[:100]) is None


@pytest.mark.parametrize("extension, options", [
    (".bmp", []), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]),
    (".tiff", []), (".ppm", []), (".pgm", [])], ids=["bmp", "webp-lossless", "webp-lossy", "tiff", "ppm", "pgm"])
def test_the_size_of_bmp_webp_tiff_and_pnm_images_is_read_from_their_header(extension, options):
    image = np.zeros((37, 61, 3), np.uint8)
    data = cv2.imencode(extension, image[:, :, 0] if extension == ".pgm" else image, options)[1].tobytes()
    assert header_size(data) == (61, 37)  # what OpenCV wrote


# Headers of 40000 x 40000 pixels with next to no pixel data, as a hostile upload sends them.
LYING_HEADERS = {
    "huge.bmp": struct.pack("<2sI4xI", b"BM", 0, 54) + struct.pack("<IiiHH", 40, 40000, -40000, 1, 24) + bytes(24),
    "huge.webp": b"RIFF" + struct.pack("<I", 30) + b"WEBPVP8X" + struct.pack("<I", 10) + bytes(4)
                 + (39999).to_bytes(3, "little") * 2 + bytes(8),
    "huge.tiff": b"MM\x00*" + struct.pack(">IH", 8, 2) + struct.pack(">HHIHH", 256, 3, 1, 40000, 0)
                 + struct.pack(">HHII", 257, 4, 1, 40000) + bytes(4),
    "huge.ppm": b"P6\n# a comment\n40000 40000\n255\n" + bytes(10),
}


@pytest.mark.parametrize("name, data", [("huge.png", lambda: grey_png(40000, 40000)),
                                        ("huge.jpg", lambda: with_jpeg_size((DATA_DIR / "dog.jpg").read_bytes(),
                                                                            40000, 40000)),
                                        *((name, lambda data=data: data) for name, data in LYING_HEADERS.items())])
def test_an_image_whose_header_promises_too_many_pixels_is_refused_before_decoding(tmp_path, monkeypatch, name,
                                                                                   data):
    # 196 bytes of PNG claiming 40000 x 40000 ended in OpenCV's pixel limit as an internal error.
    path = write(tmp_path / name, data())
    monkeypatch.setattr(cv2, "imdecode", lambda *args: pytest.fail("decoded"))
    with pytest.raises(ImageError) as error:
        read_image(str(path))
    assert str(error.value) == (f"{path}: 40000 x 40000 = 1,600,000,000 pixels, more than the 268,435,456 darkfold "
                                "decodes (raise it with --max-pixels, or darkfold.images.MAX_PIXELS)")
    assert (error.value.found, error.value.expected) == (1_600_000_000, "at most 268435456 pixels")


def test_the_pixel_limit_can_be_raised_or_lowered_and_holds_for_formats_without_a_header_check(tmp_path,
                                                                                               monkeypatch):
    dog = str(DATA_DIR / "dog.jpg")
    with pytest.raises(ImageError, match="768 x 576 = 442,368 pixels, more than the 442,367"):
        read_image(dog, max_pixels=768 * 576 - 1)
    raster = tmp_path / "dog.ras"  # Sun raster: no header check, the limit holds after decoding
    cv2.imwrite(str(raster), cv2.imread(dog))
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(ImageError, match="dog.ras: 768 x 576 = 442,368 pixels, more than the 1,000"):
        read_image(str(raster))
    assert read_image(str(raster), max_pixels=768 * 576).shape == (576, 768, 3)


def test_what_opencv_refuses_or_cannot_allocate_is_an_image_error(tmp_path, monkeypatch):
    path = str(write(tmp_path / "big.png", grey_png(40000, 40000)))
    with pytest.raises(ImageError, match="big.png: OpenCV refuses to decode this image of 40000 x 40000 pixels: more "
                                         "than its limit of pixels"):
        read_image(path, max_pixels=2**31)  # past OpenCV's own 2**30

    def no_memory(*args):
        error = cv2.error("Failed to allocate 1200000000 bytes")
        error.code, error.err = cv2.Error.StsNoMem, "Failed to allocate 1200000000 bytes"
        raise error

    for failure in (no_memory, lambda *args: np.empty(2**62, np.uint8)):
        monkeypatch.setattr(cv2, "imdecode", failure)
        with pytest.raises(ImageError, match="big.png: not enough memory to decode this image of 40000 x 40000 pixels"):
            read_image(path, max_pixels=2**31)


def test_decoder_warnings_do_not_reach_stderr_but_other_output_does(tmp_path, capfd):
    bad_crc = png_chunk(b"tEXt", b"Comment\0hello", crc=1)  # libpng warns "tEXt: CRC error", and decodes
    path = write(tmp_path / "warns.png", grey_png(8, 1, extra=bad_crc))
    assert read_image(str(path)).shape == (1, 8, 3)
    assert capfd.readouterr().err == ""
    with images._decoder_warnings_dropped():
        os.write(2, b"libpng warning: dropped\nkept\n")
    assert capfd.readouterr().err == "kept\n"


def test_inputs_expand_folders_to_their_images_in_name_order(tmp_path):
    for name in ("b.png", "a.JPG", "notes.txt", "clip.mp4"):
        write(tmp_path / name, b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.jpg").write_bytes(b"x")
    assert list_inputs([tmp_path, tmp_path / "clip.mp4", tmp_path / "none.jpg"]) == [
        Input(str(tmp_path / "a.JPG"), "image"),
        Input(str(tmp_path / "b.png"), "image"),
        Input(str(tmp_path / "clip.mp4"), "video"),
        Input(str(tmp_path / "none.jpg"), "error", f"{tmp_path / 'none.jpg'}: no such file or folder"),
    ]
    assert list_inputs([tmp_path / "sub" / "missing"])[0].kind == "error"


def test_inputs_name_cameras_streams_and_videos_of_any_extension(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "5", (DATA_DIR / "dog.jpg").read_bytes())  # a file named 5 is that file, not camera 5
    shutil.copy(make_video(tmp_path / "clip.avi", frames=1), tmp_path / "clip.dat")
    shutil.copy(DATA_DIR / "dog.jpg", tmp_path / "photo.dat")
    found = list_inputs(["0", 2, "5", "rtsp://cam/live", "HTTPS://host/v/clip.webm", "/dev/null", "clip.dat",
                         "photo.dat"])
    assert [(i.path, i.kind, i.source, i.name, i.live) for i in found] == [
        ("0", "video", 0, "camera-0.mp4", True),
        ("2", "video", 2, "camera-2.mp4", True),
        ("5", "image", None, None, False),
        ("rtsp://cam/live", "video", "rtsp://cam/live", "live.mp4", True),
        ("HTTPS://host/v/clip.webm", "video", "HTTPS://host/v/clip.webm", "clip.mp4", False),
        ("/dev/null", "video", None, None, True),  # a character device: a camera, as /dev/video0
        ("clip.dat", "video", None, None, False),  # not an image by its signature: tried as a video
        ("photo.dat", "image", None, None, False),
    ]


def test_images_in_memory_are_inputs_named_by_their_place(tmp_path):
    array, data = np.zeros((2, 2, 3), np.uint8), b"\x89PNG..."
    with open(write(tmp_path / "up.png", data), "rb") as named:
        found = list_inputs([data, array, io.BytesIO(data), named])
    assert [(i.path, i.kind, i.name) for i in found] == [
        ("<bytes 0>", "image", "bytes-0.jpg"), ("<array 1>", "image", "array-1.jpg"),
        ("<file 2>", "image", "file-2.jpg"), (str(tmp_path / "up.png"), "image", "up.png")]
    assert found[1].source is array
    with pytest.raises(ImageError, match="expected images, folders, videos, stream URLs or camera numbers, got "
                                         "NoneType"):
        list_inputs([None])


def test_outputs_keep_the_image_type_and_never_share_a_name(tmp_path):
    taken = set()
    assert output_path("x/dog.png", "out", taken) == "out/dog.png"
    assert output_path("y/dog.png", "out", taken) == "out/dog-2.png"
    assert output_path("y/dog.pgm", "out", taken) == "out/dog.jpg"  # grey formats become JPEG
    assert output_path("clip.avi", "out", taken, video=True) == "out/clip.mp4"


def test_class_colours_are_darknets():
    # draw_detections_v3: offset = class * 123457 % classes; get_color interpolates six colours.
    assert class_color(0, 80) == (255, 0, 255)  # offset 0: colours[0] = (1, 0, 1)
    assert class_color(16, 80) == (0, 255, 255)  # offset 32, ratio 2.0: colours[2] = (0, 1, 1), yellow
