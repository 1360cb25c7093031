"""darkfold.records: a resumable run's JSON Lines file, read back and appended to."""

import json
import os

import pytest
from conftest import DATA_DIR, make_video, write

import darkfold
from darkfold import OutputError, outputs
from darkfold.images import Input
from darkfold.records import Records

SAMPLE_IMAGES = sorted(DATA_DIR.glob("*.jpg"))


def test_recorded_images_failed_inputs_and_video_frames_are_known_by_their_names(tmp_path):
    record = write(tmp_path / "run.jsonl", '{"image": "a.jpg", "detections": []}\n'
                                          '{"image": "bad.jpg", "error": "bad.jpg: corrupt JPEG"}\n'
                                          '{"input": "gone/", "error": "gone/: no such file or folder"}\n'
                                          '{"video": "clip.avi", "frame": 0, "detections": []}\n'
                                          '{"video": "clip.avi", "frame": 1, "detections": []}\n'
                                          '{"video": "cut.avi", "error": "cut.avi: cannot open"}\n')
    records = Records(record)
    assert [records.done(Input(path, "image")) for path in ("a.jpg", "bad.jpg", "b.jpg", "./a.jpg")] == [
        True, True, False, False]
    assert records.done(Input("gone/", "error", "gone/: no such file or folder"))
    assert not records.done(Input("clip.avi", "video")) and records.next_frame(Input("clip.avi", "video")) == 2
    assert records.done(Input("cut.avi", "video")) and records.next_frame(Input("other.avi", "video")) == 0
    assert not records.done(Input("0", "video", live=True)) and records.next_frame(Input("0", "video", live=True)) == 0
    records.close()


def test_a_last_line_cut_short_is_dropped_with_a_warning_and_its_input_runs_again(tmp_path):
    record = write(tmp_path / "run.jsonl", '{"image": "a.jpg", "detections": []}\n{"image": "b.jp')
    records = Records(record)
    assert records.warnings == [f"{record}: its last line was cut short (15 bytes, an interrupted run): dropped, "
                                "and its input runs again"]
    assert record.read_text() == '{"image": "a.jpg", "detections": []}\n'
    assert records.done(Input("a.jpg", "image")) and not records.done(Input("b.jpg", "image"))
    records.close()


def test_a_file_that_is_not_a_runs_json_lines_is_refused_with_its_line(tmp_path):
    record = write(tmp_path / "run.jsonl", '{"image": "a.jpg", "detections": []}\n[1, 2]\n')
    with pytest.raises(OutputError, match=r"run.jsonl:2: not a line of darkfold detect --json"):
        Records(record)


def test_the_resume_file_is_never_an_input(tmp_path, tiny_model):
    image = tmp_path / "dog.jpg"
    image.write_bytes((DATA_DIR / "dog.jpg").read_bytes())
    with pytest.raises(OutputError, match="the resume file would overwrite the input"):
        darkfold.predict(image, tiny_model, resume=image)
    assert image.read_bytes() == (DATA_DIR / "dog.jpg").read_bytes()


def test_a_resumed_run_appends_what_was_not_recorded_and_the_file_ends_complete(tmp_path, tiny_model):
    video = make_video(tmp_path / "clip.avi", frames=10)
    inputs = [*SAMPLE_IMAGES[:3], video, *SAMPLE_IMAGES[3:]]
    expected = [outputs.json_line(result) for result in darkfold.predict(inputs, tiny_model)]
    record = tmp_path / "run.jsonl"
    run = darkfold.predict(inputs, tiny_model, resume=record)
    for _ in range(3 + 6):  # interrupted after the sixth frame of the video
        next(run)
    run.close()
    resumed = darkfold.predict(inputs, tiny_model, resume=record)
    assert resumed.images == len(SAMPLE_IMAGES) - 3
    assert [(r.source, r.frame) for r in resumed][:4] == [(str(video), frame) for frame in range(6, 10)]
    assert record.read_text().splitlines() == expected
    assert list(darkfold.predict(inputs, tiny_model, resume=record)) == []  # nothing left
    # Images recorded are known before any reading: a run with none left says so.
    finished = darkfold.predict(SAMPLE_IMAGES, tiny_model, resume=record)
    assert finished.warnings == [f"{record}: every input is recorded there already: nothing to do"]
    assert list(finished) == []
    assert record.read_text().splitlines() == expected


def test_a_video_continued_with_a_copy_is_detected_again_for_it_but_printed_from_where_it_stopped(
        tmp_path, tiny_model):
    video = make_video(tmp_path / "clip.avi", frames=6)
    record = write(tmp_path / "run.jsonl", "".join(outputs.json_line(result) + "\n" for result in
                                                   list(darkfold.predict(video, tiny_model))[:4]))
    results = list(darkfold.predict(video, tiny_model, resume=record, output=tmp_path / "out"))
    assert [(r.frame, r.last) for r in results] == [(4, False), (5, True)]
    assert os.listdir(tmp_path / "out") == ["clip.mp4"]
    assert [json.loads(line)["frame"] for line in record.read_text().splitlines()] == list(range(6))


def test_an_input_given_twice_is_skipped_as_often_as_it_is_recorded_and_images_in_memory_never(tmp_path):
    record = write(tmp_path / "run.jsonl", '{"image": "a.jpg", "detections": []}\n'
                                          '{"image": "<bytes 0>", "detections": []}\n')
    records = Records(record)
    assert [records.done(Input("a.jpg", "image")) for _ in range(2)] == [True, False]
    assert not records.done(Input("<bytes 0>", "image", source=b"new data"))
    records.close()


def test_a_resumed_run_gives_each_copy_the_name_a_whole_run_gives_it(tmp_path, tiny_model):
    # Two inputs named dog.jpg: a whole run writes dog.jpg and dog-2.jpg. With the first recorded,
    # the second's copy is still dog-2.jpg, not the first's dog.jpg.
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    inputs = [write(tmp_path / folder / "dog.jpg", (DATA_DIR / image).read_bytes())
              for folder, image in (("a", "dog.jpg"), ("b", "person.jpg"))]
    out, record = tmp_path / "out", tmp_path / "run.jsonl"
    run = darkfold.predict(inputs, tiny_model, output=out, resume=record)
    first = next(run)
    run.close()
    assert first.output == str(out / "dog.jpg")
    drawn = (out / "dog.jpg").read_bytes()
    [second] = darkfold.predict(inputs, tiny_model, output=out, resume=record)
    assert second.output == str(out / "dog-2.jpg") and (out / "dog.jpg").read_bytes() == drawn
    assert [json.loads(line)["image"] for line in record.read_text().splitlines()] == list(map(str, inputs))
