"""`darkfold detect`: Darknet-style lines, JSON, annotated outputs, and one message per bad input."""

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import zlib

import cv2
import numpy as np
import pytest
from conftest import CFG_DIR, DATA_DIR, REPO, make_video, run_cli, truncated_video, write
from fixtures import NET

import darkfold
from darkfold import videos
from darkfold.cli import main
from darkfold.images import read_image
from darkfold.threads import default_threads

# Darknet's lines for the bundled yolov3-tiny on dog.jpg (DESIGN.md), as darkfold prints them.
DOG_LINES = [
    "dog: 81%  (left_x: 124  top_y: 220  width: 258  height: 298)",
    "bicycle: 38%  (left_x: 229  top_y: 196  width: 330  height: 249)",
    "car: 71%  (left_x: 466  top_y: 83  width: 222  height: 89)",
    "truck: 41%  (left_x: 466  top_y: 83  width: 222  height: 89)",
    "truck: 62%  (left_x: 530  top_y: 95  width: 100  height: 67)",
    "car: 40%  (left_x: 530  top_y: 95  width: 100  height: 67)",
]


def run(capsys, *argv):
    """Exit code, stdout and stderr of ``darkfold detect argv``; stderr without the note that a
    video's copy is not H.264 (the opencv-python wheels have no H.264 encoder), which has its test,
    and without the one-time compile lines (conftest.run_cli)."""
    code, out, err = run_cli(capsys, "detect", *argv)
    return code, out, "".join(line for line in err.splitlines(keepends=True) if CODEC_NOTE not in line)


CODEC_NOTE = ": written as MPEG-4 Part 2 (mp4v), which web browsers do not play"


def count_frames(path):
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    return count


def test_detect_alone_runs_the_bundled_model_on_the_sample_image(capsys, tmp_cwd):
    code, out, err = run(capsys)
    header, *lines = out.splitlines()
    assert code == 0 and err == ""
    assert header.startswith(f"{darkfold.bundled.SAMPLE_IMAGE}: 6 detected in ")
    assert header.endswith(" ms -> predictions/dog.jpg")
    assert [line[:12] for line in lines] == [line[:12] for line in DOG_LINES]  # names and percentages
    for line, expected in zip(lines, DOG_LINES):  # pixel boxes may differ by one after rounding
        numbers = [int(v) for v in line.replace(")", "").split()[3::2]]
        assert np.abs(np.array(numbers) - [int(v) for v in expected.replace(")", "").split()[3::2]]).max() <= 1
    annotated = read_image(str(tmp_cwd / "predictions" / "dog.jpg"))
    assert annotated.shape == (576, 768, 3)
    assert np.abs(annotated.astype(int) - cv2.imread(str(DATA_DIR / "dog.jpg")).astype(int)).max() > 100  # drawn on


def json_lines(out):
    return [json.loads(line) for line in out.splitlines()]


def test_json_is_one_line_per_image_of_a_folder(capsys, tmp_path):
    code, out, _ = run(capsys, DATA_DIR, "--json", "-o", tmp_path)
    results = json_lines(out)
    assert code == 0
    assert [r["image"] for r in results] == [str(p) for p in sorted(DATA_DIR.glob("*.jpg"))]
    dog = results[0]["detections"][0]
    assert set(dog) == {"class", "class_id", "confidence", "box"}
    assert (dog["class"], dog["class_id"], round(dog["confidence"], 2)) == ("dog", 16, 0.81)
    assert np.abs(np.array(dog["box"]) - [124, 220, 258, 298]).max() <= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in DATA_DIR.glob("*.jpg"))


def test_thresh_and_letterbox_change_what_is_reported(capsys, tmp_path, tiny_model):
    _, out, _ = run(capsys, DATA_DIR / "dog.jpg", "--json", "--thresh", "0.6", "-o", tmp_path)
    assert [d["class"] for d in json_lines(out)[0]["detections"]] == ["dog", "car", "truck"]
    _, out, _ = run(capsys, DATA_DIR / "dog.jpg", "--json", "--letterbox", "-o", tmp_path)
    expected = tiny_model.detect(str(DATA_DIR / "dog.jpg"), letterbox=True)
    assert json_lines(out)[0]["detections"] == [d.as_dict() for d in expected]


def test_a_video_gets_an_annotated_copy_and_one_json_line_per_frame(capsys, tmp_path):
    video = make_video(tmp_path / "clip.avi", frames=3)
    code, out, err = run(capsys, video, "--json", "-o", tmp_path / "out")
    lines = json_lines(out)
    assert code == 0 and err == ""
    assert [(line["video"], line["frame"]) for line in lines] == [(str(video), i) for i in range(3)]
    assert all(any(d["class"] == "dog" for d in line["detections"]) for line in lines)
    assert count_frames(tmp_path / "out" / "clip.mp4") == 3
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["clip.mp4"]  # no temporary left


def test_video_text_output_is_darknet_lines_per_frame(capsys, tmp_path):
    code, out, _ = run(capsys, make_video(tmp_path / "clip.avi", frames=2), "-o", tmp_path / "out")
    assert code == 0
    assert out.splitlines()[0] == f"{tmp_path / 'clip.avi'} frame 0: 6 detected"
    assert out.splitlines()[-1] == f"{tmp_path / 'clip.avi'}: 2 frames -> {tmp_path / 'out' / 'clip.mp4'}"


def test_no_draw_prints_the_detections_and_writes_nothing(capsys, tmp_cwd):
    video = make_video(tmp_cwd / "clip.avi", frames=2)
    code, out, err = run(capsys, DATA_DIR / "dog.jpg", video, "--no-draw")
    lines = out.splitlines()
    assert code == 0 and err == ""
    assert lines[0].startswith(f"{DATA_DIR / 'dog.jpg'}: 6 detected in ") and lines[0].endswith(" ms")
    assert [line[:12] for line in lines[1:7]] == [line[:12] for line in DOG_LINES]
    assert lines[-1] == f"{video}: 2 frames"
    assert sorted(os.listdir(tmp_cwd)) == ["clip.avi"]  # no predictions/ folder


def test_json_lines_hold_an_error_object_for_each_failed_input_in_order(capsys, tmp_path, tiny_model):
    inputs = [tmp_path / "missing.jpg", write(tmp_path / "bad.jpg", "not a jpeg"), DATA_DIR / "eagle.jpg",
              write(tmp_path / "broken.mp4", b"\0garbage" * 64)]
    code, out, err = run(capsys, *inputs, "--json", "--no-draw")
    assert code == 2
    assert json_lines(out) == [
        {"input": str(inputs[0]), "error": f"{inputs[0]}: no such file or folder"},
        {"image": str(inputs[1]), "error": f"{inputs[1]}: not an image OpenCV can read (unknown format or "
                                           "corrupt file)"},
        {"image": str(inputs[2]), "detections": [d.as_dict() for d in tiny_model.detect(str(inputs[2]))]},
        {"video": str(inputs[3]), "error": f"{inputs[3]}: cannot open as a video (unknown format or corrupt file)"},
    ]
    assert len(err.splitlines()) == 3 and all(line.startswith("darkfold: error: ") for line in err.splitlines())


def test_each_bad_input_gets_one_message_and_the_others_are_still_processed(capsys, tmp_path):
    data = (DATA_DIR / "eagle.jpg").read_bytes()
    inputs = [
        tmp_path / "missing.jpg",
        write(tmp_path / "notes.txt", "not an image\n"),
        write(tmp_path / "cut.jpg", data[: len(data) // 2]),
        tmp_path / "empty",
        write(tmp_path / "broken.mp4", b"\0garbage" * 64),
        DATA_DIR / "eagle.jpg",
    ]
    (tmp_path / "empty").mkdir()
    code, out, err = run(capsys, *inputs, "-o", tmp_path / "out")
    assert code == 2
    assert out.splitlines()[0].startswith(f"{DATA_DIR / 'eagle.jpg'}: 1 detected in ")
    errors = [line for line in err.splitlines() if line.startswith("darkfold: error: ")]
    assert errors == [
        f"darkfold: error: {inputs[0]}: no such file or folder",
        f"darkfold: error: {inputs[1]}: not an image or a video OpenCV can read (unknown format or corrupt file)",
        f"darkfold: error: {inputs[2]}: corrupt JPEG: OpenCV cannot decode it (truncated or damaged file)",
        f"darkfold: error: {inputs[3]}: folder holds no images (.jpg, .png, .bmp, .webp, .tif, ...)",
        f"darkfold: error: {inputs[4]}: cannot open as a video (unknown format or corrupt file)",
    ]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["eagle.jpg"]


def test_an_annotated_copy_never_replaces_an_input(capsys, tmp_path):
    image = tmp_path / "dog.jpg"
    shutil.copy(DATA_DIR / "dog.jpg", image)
    code, _, err = run(capsys, image, "-o", tmp_path)
    assert code == 2
    assert err == f"darkfold: error: {image}: the annotated copy would overwrite the image itself; choose another -o\n"
    assert image.read_bytes() == (DATA_DIR / "dog.jpg").read_bytes()


def test_the_image_named_once_when_its_copy_would_replace_it_in_the_current_folder(capsys, tmp_cwd):
    shutil.copy(DATA_DIR / "dog.jpg", tmp_cwd / "dog.jpg")
    code, _, err = run(capsys, "dog.jpg", "-o", ".")
    assert code == 2
    assert err == "darkfold: error: ./dog.jpg: the annotated copy would overwrite the image itself; choose another -o\n"


def test_an_annotated_copy_never_replaces_the_model_files(capsys, tmp_path, tiny_cfg, tiny_weights):
    # The reproduction: weights saved under the name the annotated copy of dog.jpg takes.
    out = tmp_path / "out"
    out.mkdir()
    weights = out / "dog.jpg"
    shutil.copy(tiny_weights, weights)
    code, _, err = run(capsys, DATA_DIR / "dog.jpg", "--cfg", tiny_cfg, "--weights", weights, "-o", out)
    assert code == 2
    assert err == (f"darkfold: error: {weights}: the annotated copy of {DATA_DIR / 'dog.jpg'} would overwrite the "
                   f"input {weights}; choose another -o\n")
    assert weights.read_bytes() == tiny_weights.read_bytes()
    names = write(tmp_path / "dog.jpg", "\n".join(f"class {i}" for i in range(80)))
    code, _, err = run(capsys, DATA_DIR / "dog.jpg", "--names", names, "-o", tmp_path)
    assert code == 2 and "would overwrite the input" in err and names.read_text().startswith("class 0")


def test_a_run_that_writes_nothing_leaves_no_output_folder(capsys, tmp_path):
    code, _, _ = run(capsys, tmp_path / "missing.jpg", write(tmp_path / "bad.jpg", "not a jpeg"),
                     "-o", tmp_path / "a" / "out")
    assert code == 2 and sorted(os.listdir(tmp_path)) == ["bad.jpg"]


def test_a_video_with_a_long_name_is_written(capsys, tmp_path):
    # The temporary name was ".darkfold-<pid>-" + the name: past 255 bytes for a long name.
    video = make_video(tmp_path / ("v" * 240 + ".avi"), frames=1)
    code, _, err = run(capsys, video, "-o", tmp_path / "out", "--json")
    assert code == 0 and err == ""
    assert os.listdir(tmp_path / "out") == ["v" * 240 + ".mp4"]


def test_same_named_inputs_get_distinct_outputs(capsys, tmp_path):
    (tmp_path / "a").mkdir()
    shutil.copy(DATA_DIR / "dog.jpg", tmp_path / "a" / "dog.jpg")
    code, _, _ = run(capsys, DATA_DIR / "dog.jpg", tmp_path / "a" / "dog.jpg", "-o", tmp_path / "out")
    assert code == 0 and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dog-2.jpg", "dog.jpg"]


def test_a_names_file_names_the_classes_of_another_model(capsys, tmp_path, tiny_cfg, tiny_weights):
    cfg = write(tmp_path / "mine.cfg", tiny_cfg.read_text())
    names = write(tmp_path / "mine.names", "".join(f"class{i}\n" for i in range(80)))
    _, out, _ = run(capsys, DATA_DIR / "dog.jpg", "--cfg", cfg, "--weights", tiny_weights, "-o", tmp_path)
    assert out.splitlines()[1].startswith("16: 81%")  # no names: class ids
    _, out, _ = run(capsys, DATA_DIR / "dog.jpg", "--cfg", cfg, "--weights", tiny_weights, "--names", names,
                    "-o", tmp_path)
    assert out.splitlines()[1].startswith("class16: 81%")


NO_HEAD_CFG = NET + "[convolutional]\nfilters=4\nsize=3\nactivation=leaky\n"


@pytest.mark.parametrize("argv, message", [
    (["--cfg", CFG_DIR / "yolov3-tiny.cfg"], "detect needs both --cfg and --weights, or neither"),
    (["--cfg", "plain.cfg", "--weights", "plain.weights"], "plain.cfg: no [yolo] or [region] layer"),
    (["--names", "missing.names"], "missing.names: names file not found"),
])
def test_model_problems_are_one_error_before_any_input(capsys, tmp_cwd, argv, message):
    write(tmp_cwd / "plain.cfg", NO_HEAD_CFG)
    write(tmp_cwd / "plain.weights", np.zeros(4 + 4 + 4 * 27, "<i4").tobytes())  # version 0.0 header, 112 floats
    code, out, err = run(capsys, DATA_DIR / "dog.jpg", *argv)
    assert code == 2 and out == "" and message in err and len(err.splitlines()) == 1
    assert not (tmp_cwd / "predictions").exists()


def test_help_names_the_default_output_folder(capsys):
    with pytest.raises(SystemExit):
        main(["detect", "--help"])
    out = capsys.readouterr().out
    assert "./predictions" in out and "darkfold detect photos/ clip.mp4 -o out/" in out


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_folders_and_videos_show_progress_on_a_terminal_only(capsys, monkeypatch, tmp_path):
    video = make_video(tmp_path / "clip.avi", frames=2)
    code, _, err = run(capsys, DATA_DIR / "dog.jpg", DATA_DIR / "eagle.jpg", video, "-o", tmp_path / "out")
    assert code == 0 and err == ""
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert main(["detect", str(DATA_DIR / "dog.jpg"), str(DATA_DIR / "eagle.jpg"), str(video),
                 "-o", str(tmp_path / "out")]) == 0
    shown = terminal.getvalue()
    assert "] 2/2 images" in shown and "] 2/2 frames of clip.avi" in shown
    assert shown.endswith("\r\033[K")  # the bar is gone when the command ends


def test_threads_option_runs_the_engine_on_that_many_workers(capsys, tmp_path):
    code, out, _ = run(capsys, DATA_DIR / "dog.jpg", "--threads", "1", "--json", "-o", tmp_path)
    assert code == 0 and len(json_lines(out)[0]["detections"]) == 6


def huge_png():
    """196 bytes of grey PNG whose header says 40000 x 40000: 1.6G pixels to decode."""

    def chunk(kind, data):
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = (40000).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(40001)))
            + chunk(b"IEND", b""))


def test_an_image_too_large_for_its_header_is_one_error_and_the_images_around_it_still_run(capsys, tmp_path):
    huge = write(tmp_path / "huge.png", huge_png())
    code, out, err = run(capsys, DATA_DIR / "dog.jpg", huge, DATA_DIR / "eagle.jpg", "-o", tmp_path / "out")
    assert code == 2
    assert [line.split(":")[0] for line in out.splitlines() if " detected in " in line] == [
        str(DATA_DIR / "dog.jpg"), str(DATA_DIR / "eagle.jpg")]
    assert err == (f"darkfold: error: {huge}: 40000 x 40000 = 1,600,000,000 pixels, more than the 268,435,456 "
                   "darkfold decodes (raise it with --max-pixels, or darkfold.images.MAX_PIXELS)\n")


def test_max_pixels_sets_the_largest_image_detect_decodes(capsys, tmp_path):
    code, out, err = run(capsys, DATA_DIR / "dog.jpg", "--max-pixels", 768 * 576 - 1, "-o", tmp_path)
    assert (code, out) == (2, "") and "768 x 576 = 442,368 pixels, more than the 442,367 darkfold decodes" in err
    code, out, err = run(capsys, DATA_DIR / "dog.jpg", "--max-pixels", 768 * 576, "-o", tmp_path)
    assert (code, err) == (0, "") and " 6 detected in " in out


def test_a_file_name_with_control_characters_is_printed_escaped_on_one_line(capsys, tmp_path):
    image = tmp_path / "dog\nfake: 99 detected\x1b[2J.jpg"
    shutil.copy(DATA_DIR / "dog.jpg", image)
    code, out, _ = run(capsys, image, "-o", tmp_path / "out")
    header, *lines = out.splitlines()
    assert code == 0 and len(lines) == 6
    assert header.startswith(f"{tmp_path}/dog\\nfake: 99 detected\\x1b[2J.jpg: 6 detected in ")
    assert header.endswith(f" -> {tmp_path}/out/dog\\nfake: 99 detected\\x1b[2J.jpg")


def test_more_threads_than_cpus_are_capped_with_a_warning(capsys, tmp_path):
    cpus = default_threads()
    code, out, err = run(capsys, DATA_DIR / "dog.jpg", "--threads", cpus + 1, "--json", "-o", tmp_path)
    assert code == 0 and len(json_lines(out)[0]["detections"]) == 6
    assert err == (f"darkfold: warning: --threads {cpus + 1} is more than the {cpus} CPUs this process may use; "
                   f"running {cpus} threads\n")


def test_weights_holding_nan_are_an_error_naming_the_layer_that_holds_them(capsys, tmp_path, tiny_cfg, tiny_weights):
    # They were "0 detected" and exit 0: NaN compares false with every threshold.
    model = darkfold.load()
    data = bytearray(tiny_weights.read_bytes())
    batchnorm = 4 * model.layers[4].filters  # biases, scales, rolling_mean, rolling_variance, then weights
    offset = model.header.size + 4 * (sum(layer.param_count for layer in model.layers[:4]) + batchnorm + 5)
    data[offset:offset + 4] = np.float32("nan").tobytes()
    weights = write(tmp_path / "nan.weights", bytes(data))
    code, out, err = run(capsys, DATA_DIR / "dog.jpg", "--cfg", tiny_cfg, "--weights", weights, "-o", tmp_path)
    assert (code, out) == (2, "")
    assert err == (f"darkfold: error: {tiny_cfg}:49: layer 4 [convolutional] holds NaN in its weights (1 of "
                   "18,432): the weights file is damaged (or its exporter wrote them); get it again\n")


# --------------------------------------------------------------------------------------------
# cameras, streams, and videos that end early


def test_a_camera_or_stream_that_does_not_open_is_one_error_each(capsys, tmp_path):
    code, out, err = run(capsys, "57", "/dev/null", "rtsp://127.0.0.1:1/live", DATA_DIR / "eagle.jpg", "--no-draw")
    assert code == 2 and " 1 detected in " in out
    assert err.splitlines() == [
        "darkfold: error: camera 57: cannot open it (no camera with this number, or another program is using it)",
        "darkfold: error: /dev/null: cannot open it as a camera (no camera there, or another program is using it)",
        "darkfold: error: rtsp://127.0.0.1:1/live: cannot open the stream (unreachable, refused, or not a video)",
    ]


def test_a_video_over_http_is_detected_and_copied_as_the_file(capsys, tmp_path, http_folder):
    folder, url = http_folder
    make_video(folder / "clip.avi", frames=3)
    code, out, err = run(capsys, f"{url}/clip.avi", "--json", "-o", tmp_path / "out")
    assert (code, err) == (0, "")
    assert [(line["video"], line["frame"]) for line in json_lines(out)] == [(f"{url}/clip.avi", i) for i in range(3)]
    assert count_frames(tmp_path / "out" / "clip.mp4") == 3


def test_a_truncated_video_keeps_its_frames_and_warns_with_the_counts(capsys, tmp_path):
    video = truncated_video(tmp_path / "cut.avi", frames=30)
    code, out, err = run(capsys, video, "--json", "--no-draw")
    lines = json_lines(out)
    warning = f"{video}: the video ended after {len(lines)} frames, though its container says 30: a truncated or " \
              "damaged file?"
    assert code == 0 and 0 < len(lines) < 30
    assert err == f"darkfold: warning: {warning}\n" and lines[-1]["warnings"] == [warning]


@pytest.mark.parametrize("argv, realtime", [([], None), (["--realtime"], True), (["--no-realtime"], False)])
def test_realtime_is_asked_for_or_refused_or_left_to_the_source(capsys, monkeypatch, argv, realtime):
    asked = {}

    class Run:
        images = 0
        warnings = ()

        def __iter__(self):
            return iter(())

        def close(self):
            pass

    def predict(inputs, model, **options):
        asked.update(options)
        return Run()

    monkeypatch.setattr("darkfold.prediction.predict", predict)
    assert run(capsys, "0", *argv)[0] == 0
    assert asked["realtime"] is realtime


def test_a_copy_not_in_h264_is_noted_once_per_run(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(videos, "CODECS", ("XXXX", "mp4v"))  # as the opencv-python wheels, without H.264
    clips = [make_video(tmp_path / name, frames=2) for name in ("a.avi", "b.avi")]
    assert main(["detect", *map(str, clips), "-o", str(tmp_path / "out")]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if CODEC_NOTE in line]
    assert notes == [f"darkfold: warning: {tmp_path / 'out' / 'a.mp4'}{CODEC_NOTE}: this OpenCV has no H.264 (avc1) "
                     "encoder; 'ffmpeg -i IN -c:v libx264 OUT' converts it"]


# -- --backend -------------------------------------------------------------------------------------


@pytest.mark.parametrize("letterbox", [[], ["--letterbox"]], ids=["default", "letterbox"])
@pytest.mark.parametrize("backend", [pytest.param("onnxruntime", marks=pytest.mark.onnxruntime),
                                     pytest.param("openvino", marks=pytest.mark.openvino)])
def test_every_backend_prints_the_engines_detections_on_the_sample_images(capsys, backend, letterbox):
    """Same classes in the same order, pixel boxes within a pixel, confidences within 0.005."""
    def detected(*options):
        code, out, err = run(capsys, DATA_DIR, "--json", "--no-draw", *letterbox, *options)
        assert code == 0 and err == ""
        return [json.loads(line) for line in out.splitlines()]

    expected, actual = detected(), detected("--backend", backend)
    assert [image["image"] for image in actual] == [image["image"] for image in expected]
    assert len(expected) == 7 and sum(len(image["detections"]) for image in expected) > 20
    for got, want in zip(actual, expected):
        assert [d["class"] for d in got["detections"]] == [d["class"] for d in want["detections"]]
        for d, e in zip(got["detections"], want["detections"]):
            assert abs(d["confidence"] - e["confidence"]) <= 0.005
            assert np.abs(np.subtract(d["box"], e["box"])).max() <= 1


@pytest.mark.openvino
def test_backend_auto_names_the_backend_it_chose_with_debug(capsys):
    code, out, err = run(capsys, DATA_DIR / "dog.jpg", "--no-draw", "--backend", "auto", "--debug")
    assert code == 0 and "darkfold: backend auto: openvino in f32\n" in err
    assert [line[:12] for line in out.splitlines()[1:]] == [line[:12] for line in DOG_LINES]


# --------------------------------------------------------------------------------------------
# archives: --resume, --dask


def test_resume_after_a_killed_run_ends_with_every_image_once(capsys, tmp_path):
    folder = tmp_path / "archive"
    folder.mkdir()
    images = sorted(DATA_DIR.glob("*.jpg"))
    for k in range(40):
        os.symlink(images[k % len(images)], folder / f"{k:02d}.jpg")
    code, expected, _ = run(capsys, folder, "--json", "--no-draw")
    record = tmp_path / "run.jsonl"
    command = [sys.executable, "-m", "darkfold", "detect", str(folder), "--no-draw", "--resume", str(record)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while process.poll() is None and (not record.exists() or record.read_bytes().count(b"\n") < 5):
            time.sleep(0.01)
    finally:
        process.kill()  # SIGKILL: no handler runs; a line may be cut short
        process.wait()
    recorded = record.read_bytes().count(b"\n")
    assert 5 <= recorded < 40
    code, out, err = run(capsys, folder, "--no-draw", "--json", "--resume", record)
    assert code == 0 and len(out.splitlines()) == 40 - recorded
    assert record.read_text().splitlines() == expected.splitlines()


def test_without_dask_the_dask_option_is_one_error_naming_the_extra(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "darkfold.cluster", None)  # as where dask is not installed
    monkeypatch.delattr(darkfold, "cluster", raising=False)  # imported by an earlier test
    code, out, err = run(capsys, DATA_DIR, "--dask", "local")
    assert code == 2 and out == ""
    assert err.startswith("darkfold: error: running on a Dask cluster needs dask's distributed package: "
                          'pip install "darkfold[dask]"')


@pytest.mark.dask
def test_dask_local_prints_the_json_lines_of_one_process(capsys, tmp_path):
    code, expected, _ = run(capsys, DATA_DIR, "--json", "--no-draw")
    code, out, err = run(capsys, DATA_DIR, "--json", "--no-draw", "--dask", "local:2")
    assert code == 0 and out == expected


@pytest.mark.dask
def test_an_unreachable_scheduler_is_one_error_and_exit_2(capsys):
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    code, out, err = run(capsys, DATA_DIR, "--dask", address)
    assert code == 2 and out == ""
    assert err.startswith(f"darkfold: error: {address}: cannot reach a Dask scheduler there within 5 s (")
    assert len(err.splitlines()) == 1
