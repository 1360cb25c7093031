"""darkfold.predict: images, folders and videos in, one Prediction per image or frame, in order."""

import io
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import DATA_DIR, REPO, make_video, modules_loaded_by, truncated_video, write

import darkfold
from darkfold import DarkfoldError, ImageError, OutputError, images, videos
from darkfold.detect import BATCH

SAMPLE_IMAGES = sorted(DATA_DIR.glob("*.jpg"))


def test_results_come_in_input_order_across_a_folder_a_video_and_bad_inputs(tmp_path, tiny_model):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("b.jpg", "a.jpg"):
        shutil.copy(DATA_DIR / "eagle.jpg", folder / name)
    video = make_video(tmp_path / "clip.avi", frames=2)
    bad = write(tmp_path / "bad.jpg", "not a jpeg")
    results = list(darkfold.predict([folder, video, tmp_path / "missing.jpg", bad, DATA_DIR / "dog.jpg"],
                                    tiny_model))
    assert [(r.source, r.kind, r.frame, r.ok) for r in results] == [
        (str(folder / "a.jpg"), "image", None, True),
        (str(folder / "b.jpg"), "image", None, True),
        (str(video), "video", 0, True),
        (str(video), "video", 1, True),
        (str(tmp_path / "missing.jpg"), "input", None, False),
        (str(bad), "image", None, False),
        (str(DATA_DIR / "dog.jpg"), "image", None, True),
    ]
    assert [(r.frames, r.last) for r in results[2:4]] == [(2, False), (2, True)]
    assert [type(r.error) for r in results[4:6]] == [ImageError, ImageError] and results[5].detections == ()
    assert str(results[4].error) == f"{tmp_path / 'missing.jpg'}: no such file or folder"
    assert results[-1].size == (768, 576) and results[2].size == (384, 288) and results[-1].seconds > 0
    assert all(r.output is None for r in results)  # no output folder: nothing written


def test_detections_are_those_of_model_detect(tiny_model):
    results = list(darkfold.predict(DATA_DIR, tiny_model, thresh=0.4, letterbox=True))
    expected = tiny_model.detect([str(p) for p in SAMPLE_IMAGES], thresh=0.4, letterbox=True)
    assert len(SAMPLE_IMAGES) > BATCH  # more than one forward pass
    assert [r.source for r in results] == [str(p) for p in SAMPLE_IMAGES]
    assert [list(r.detections) for r in results] == expected


def test_without_a_model_it_runs_the_bundled_one(tiny_model):
    (result,) = darkfold.predict(DATA_DIR / "dog.jpg")
    assert list(result.detections) == tiny_model.detect(str(DATA_DIR / "dog.jpg"))
    assert [d.name for d in result.detections][:2] == ["dog", "bicycle"]


def test_output_gets_annotated_copies_and_draw_false_none(tmp_path, tiny_model):
    video = make_video(tmp_path / "clip.avi", frames=2)
    results = list(darkfold.predict([DATA_DIR / "dog.jpg", video], tiny_model, output=tmp_path / "out"))
    assert [r.output for r in results] == [str(tmp_path / "out" / name) for name in ("dog.jpg", "clip.mp4", "clip.mp4")]
    assert sorted(os.listdir(tmp_path / "out")) == ["clip.mp4", "dog.jpg"]
    drawn = images.read_image(str(tmp_path / "out" / "dog.jpg"))
    assert np.abs(drawn.astype(int) - images.read_image(str(DATA_DIR / "dog.jpg"))).max() > 100
    results = list(darkfold.predict([DATA_DIR / "dog.jpg", video], tiny_model, output=tmp_path / "none",
                                    draw=False))
    assert [r.output for r in results] == [None, None, None] and all(r.ok for r in results)
    assert not (tmp_path / "none").exists()


def test_an_annotated_copy_never_replaces_an_input_and_the_run_goes_on(tmp_path, tiny_cfg, tiny_weights):
    image = tmp_path / "dog.jpg"
    shutil.copy(DATA_DIR / "dog.jpg", image)
    (tmp_path / "out").mkdir()
    weights = tmp_path / "out" / "eagle.jpg"  # weights saved under the name eagle.jpg's copy takes
    shutil.copy(tiny_weights, weights)
    model = darkfold.load(tiny_cfg, weights)
    results = list(darkfold.predict([image, DATA_DIR / "eagle.jpg", DATA_DIR / "kite.jpg"], model, output=tmp_path))
    assert isinstance(results[0].error, OutputError) and "would overwrite the image itself" in str(results[0].error)
    assert results[1].ok and results[2].ok  # eagle.jpg goes to tmp_path, not over out/eagle.jpg
    assert image.read_bytes() == (DATA_DIR / "dog.jpg").read_bytes()
    (failed,) = darkfold.predict(DATA_DIR / "eagle.jpg", model, output=tmp_path / "out")
    assert isinstance(failed.error, OutputError) and f"would overwrite the input {weights}" in str(failed.error)
    assert weights.read_bytes() == tiny_weights.read_bytes()


def test_results_come_as_the_iterator_is_consumed(tmp_path, tiny_model):
    out = tmp_path / "out"
    run = darkfold.predict(DATA_DIR, tiny_model, output=out)
    assert not out.exists()  # nothing read or written yet
    first = next(run)
    assert first.source == str(SAMPLE_IMAGES[0]) and os.listdir(out) == ["dog.jpg"]
    next(run)
    assert sorted(os.listdir(out)) == ["dog.jpg", "eagle.jpg"]
    run.close()
    assert sorted(os.listdir(out)) == ["dog.jpg", "eagle.jpg"]


def test_closing_during_a_video_leaves_no_half_written_file(tmp_path, tiny_model):
    run = darkfold.predict(make_video(tmp_path / "clip.avi", frames=3), tiny_model, output=tmp_path / "out")
    assert next(run).frame == 0 and len(os.listdir(tmp_path / "out")) == 1  # the hidden temporary
    run.close()
    assert not (tmp_path / "out").exists()  # the temporary gone, and the folder the run made


def test_a_videos_last_frame_comes_once_its_copy_is_in_place(tmp_path, tiny_model):
    seen = []
    for result in darkfold.predict(make_video(tmp_path / "clip.avi", frames=2), tiny_model, output=tmp_path):
        seen.append((result.frame, result.last, os.path.exists(result.output)))
    assert seen == [(0, False, False), (1, True, True)]


def test_a_video_copy_that_cannot_be_written_gives_the_frames_then_the_error(tmp_path, tiny_model, monkeypatch):
    def fail(self):
        self.abort()
        raise OutputError(f"{self.path}: cannot write: No space left on device", path=self.path)

    monkeypatch.setattr(videos.VideoOutput, "close", fail)
    video = make_video(tmp_path / "clip.avi", frames=2)
    results = list(darkfold.predict([video, DATA_DIR / "eagle.jpg"], tiny_model, output=tmp_path / "out"))
    assert [(r.kind, r.frame, r.last, r.ok) for r in results] == [
        ("video", 0, False, True), ("video", 1, False, True), ("video", None, False, False), ("image", None, False, True)]
    assert "No space left" in str(results[2].error) and os.listdir(tmp_path / "out") == ["eagle.jpg"]


def test_model_and_argument_problems_raise_at_the_call(tiny_model, tmp_path):
    with pytest.raises(DarkfoldError, match="missing.names: names file not found"):
        darkfold.predict(DATA_DIR, tiny_model, names=tmp_path / "missing.names")
    with pytest.raises(ImageError, match="expected images, folders, videos, stream URLs or camera numbers, got float"):
        darkfold.predict([DATA_DIR, 1.5], tiny_model)
    with pytest.raises(darkfold.ModelError, match="thresh=5: expected a number from 0 to 1"):
        darkfold.predict(DATA_DIR, tiny_model, thresh=5)
    with pytest.raises(ImageError, match="channels='BGR': expected 'bgr' or 'rgb'"):
        darkfold.predict(DATA_DIR, tiny_model, channels="BGR")


def test_import_darkfold_loads_neither_opencv_nor_the_prediction_module():
    code = "import sys, darkfold; print('cv2' in sys.modules, 'darkfold.prediction' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------------------------------
# images in memory, videos in batches, streams


def test_images_in_memory_are_detected_and_named_by_their_place(tmp_path, tiny_model):
    dog = DATA_DIR / "dog.jpg"
    rgb = cv2.imread(str(dog))[:, :, ::-1]
    results = list(darkfold.predict([dog.read_bytes(), io.BytesIO(dog.read_bytes()), rgb, open(dog, "rb")],
                                    tiny_model, channels="rgb", output=tmp_path / "out"))
    assert [r.source for r in results] == ["<bytes 0>", "<file 1>", "<array 2>", str(dog)]
    assert [r.detections for r in results] == [tuple(d) for d in tiny_model.detect([dog] * 4)]
    assert sorted(os.listdir(tmp_path / "out")) == ["array-2.jpg", "bytes-0.jpg", "dog.jpg", "file-1.jpg"]
    (single,) = darkfold.predict(dog.read_bytes(), tiny_model)  # one input, not a list of them
    assert single.source == "<bytes 0>" and single.ok


def test_a_videos_frames_in_batches_give_the_detections_of_frame_by_frame(tmp_path, tiny_model):
    video = make_video(tmp_path / "clip.avi", frames=BATCH + 2)  # a full batch and a partial one
    results = list(darkfold.predict(video, tiny_model))
    assert [r.frame for r in results] == list(range(BATCH + 2)) and [r.last for r in results][-2:] == [False, True]
    for result, frame in zip(results, video_frames(video)):
        alone = tiny_model.detect(frame)
        assert [d.class_id for d in result.detections] == [d.class_id for d in alone]
        np.testing.assert_allclose([d.box for d in result.detections], [d.box for d in alone], atol=1e-3)
        np.testing.assert_allclose([d.confidence for d in result.detections], [d.confidence for d in alone],
                                   atol=1e-5)


def video_frames(path):
    capture = cv2.VideoCapture(str(path))
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        yield frame


def test_a_truncated_video_warns_with_its_counts_on_its_last_frame(tmp_path, tiny_model):
    video = truncated_video(tmp_path / "cut.avi", frames=30)
    results = list(darkfold.predict(video, tiny_model))
    read = len(results)
    assert 0 < read < 30 and all(r.ok for r in results) and results[-1].last
    assert [r.warnings for r in results] == [()] * (read - 1) + [(
        f"{video}: the video ended after {read} frames, though its container says 30: a truncated or damaged file?",)]


def test_an_http_stream_gives_every_frame_with_the_files_detections(http_folder, tiny_model):
    folder, url = http_folder
    video = make_video(folder / "clip.avi", frames=5)
    streamed = list(darkfold.predict(f"{url}/clip.avi", tiny_model))
    from_file = list(darkfold.predict(video, tiny_model))
    assert [r.source for r in streamed] == [f"{url}/clip.avi"] * 5 and [r.frames for r in streamed] == [5] * 5
    assert [(r.frame, r.detections, r.last) for r in streamed] == [(r.frame, r.detections, r.last) for r in from_file]


def test_cameras_and_live_streams_are_read_in_realtime_unless_told_otherwise(monkeypatch, tiny_model):
    opened = []

    def record(source, name, *, live, realtime, start=0, stop=None):
        opened.append((source, live, realtime))
        raise ImageError(f"{name}: not opened in this test")

    monkeypatch.setattr(videos, "Video", record)
    inputs = [0, "1", "rtsp://user:pw@cam/live", "http://host/clip.mp4"]
    results = list(darkfold.predict(inputs, tiny_model))
    assert [r.source for r in results] == ["0", "1", "rtsp://user:***@cam/live", "http://host/clip.mp4"]
    assert [type(r.error) for r in results] == [ImageError] * 4
    assert opened == [(0, True, True), (1, True, True), ("rtsp://user:pw@cam/live", True, True),
                      ("http://host/clip.mp4", False, False)]
    opened.clear()
    list(darkfold.predict(inputs, tiny_model, realtime=False))
    assert [realtime for _, _, realtime in opened] == [False] * 4
    opened.clear()
    list(darkfold.predict(inputs, tiny_model, realtime=True))
    assert [realtime for _, _, realtime in opened] == [True] * 4


def test_a_copy_not_in_h264_is_noted_once_per_run(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setattr(videos, "CODECS", ("XXXX", "mp4v"))  # as an OpenCV without an H.264 encoder
    clips = [make_video(tmp_path / name, frames=2) for name in ("a.avi", "b.avi")]
    results = list(darkfold.predict(clips, tiny_model, output=tmp_path / "out"))
    notes = [note for r in results for note in r.warnings]
    assert len(notes) == 1 and list(results[0].warnings) == notes
    assert notes[0].startswith(f"{tmp_path / 'out' / 'a.mp4'}: written as MPEG-4 Part 2 (mp4v)")


def test_a_run_in_one_process_does_not_import_dask():
    script = f"import darkfold; list(darkfold.predict({str(DATA_DIR / 'dog.jpg')!r}))"
    assert modules_loaded_by(script, "distributed", "dask", "darkfold.cluster") == set()
