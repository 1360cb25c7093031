"""darkfold.predict: images, folders and videos in, one Prediction per image or frame, in order."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import DATA_DIR, REPO, make_video, write

import darkfold
from darkfold import DarkfoldError, ImageError, OutputError, images
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

    monkeypatch.setattr(images.VideoOutput, "close", fail)
    video = make_video(tmp_path / "clip.avi", frames=2)
    results = list(darkfold.predict([video, DATA_DIR / "eagle.jpg"], tiny_model, output=tmp_path / "out"))
    assert [(r.kind, r.frame, r.last, r.ok) for r in results] == [
        ("video", 0, False, True), ("video", 1, False, True), ("video", None, False, False), ("image", None, False, True)]
    assert "No space left" in str(results[2].error) and os.listdir(tmp_path / "out") == ["eagle.jpg"]


def test_model_and_argument_problems_raise_at_the_call(tiny_model, tmp_path):
    with pytest.raises(DarkfoldError, match="missing.names: names file not found"):
        darkfold.predict(DATA_DIR, tiny_model, names=tmp_path / "missing.names")
    with pytest.raises(ImageError, match="predict takes paths .* got ndarray"):
        darkfold.predict([np.zeros((8, 8, 3), np.uint8)], tiny_model)


def test_import_darkfold_loads_neither_opencv_nor_the_prediction_module():
    code = "import sys, darkfold; print('cv2' in sys.modules, 'darkfold.prediction' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
