"""videos.py: frames of files, cameras and streams read on their own thread; annotated copies."""

import time

import cv2
import numpy as np
import pytest
from conftest import make_video, truncated_video

from darkfold import ImageError, videos
from darkfold.videos import Video, VideoOutput, shown_url, stream_scheme, url_name


def all_frames(video, size=4):
    return [item for batch in video.batches(size) for item in batch]


def opencv_frames(path):
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def test_every_frame_comes_in_order_in_batches_of_the_size_asked(tmp_path):
    path = make_video(tmp_path / "clip.avi", frames=10)
    video = Video(str(path))
    batches = list(video.batches(4))
    assert [len(batch) for batch in batches] == [4, 4, 2] and len(video) == 10 and video.fps == 5
    assert [number for batch in batches for number, _ in batch] == list(range(10))
    expected = opencv_frames(path)
    assert all(np.array_equal(frame, expected[number]) for batch in batches for number, frame in batch)
    assert video.warnings == []


def test_a_video_shorter_than_its_container_says_is_read_to_its_end_with_a_warning(tmp_path):
    path = truncated_video(tmp_path / "cut.avi", frames=30)
    video = Video(str(path))
    read = len(all_frames(video))
    assert len(video) == 30 and 0 < read < 30
    assert video.warnings == [f"{path}: the video ended after {read} frames, though its container says 30: a "
                              "truncated or damaged file?"]


def test_in_realtime_a_slow_consumer_gets_the_newest_frame_and_skips_the_rest(tmp_path):
    video = Video(str(make_video(tmp_path / "clip.avi", frames=8, fps=10)), realtime=True)  # played over 0.8 s
    numbers = []
    for batch in video.batches(4):
        assert len(batch) == 1  # the newest frame alone
        numbers.append(batch[0][0])
        time.sleep(0.35)  # a model slower than the video
    assert numbers[0] == 0 and numbers[-1] == 7 and len(numbers) < 8 and numbers == sorted(numbers)


def test_a_live_source_that_ends_says_the_stream_stopped(tmp_path):
    video = Video(str(make_video(tmp_path / "clip.avi", frames=3)), "camera 0", live=True)
    assert len(all_frames(video)) == 3 and len(video) == 0  # a live source has no frame count
    assert video.warnings == ["camera 0: the stream stopped after 3 frames"]


class FailingCapture:
    """A capture that gives two frames, then fails as a broken stream does."""

    def __init__(self):
        self.reads = 0

    def get(self, prop):
        return {cv2.CAP_PROP_FPS: 25.0, cv2.CAP_PROP_FRAME_COUNT: 100}.get(prop, 0)

    def read(self):
        self.reads += 1
        if self.reads > 2:
            raise cv2.error("connection reset")
        return True, np.zeros((4, 4, 3), np.uint8)

    def release(self):
        pass


def test_a_stream_that_fails_gives_its_frames_then_one_error(monkeypatch):
    monkeypatch.setattr(videos, "_open", lambda source, name, live: FailingCapture())
    video = Video("rtsp://camera.local/stream")
    batches = video.batches(1)
    assert [next(batches)[0][0], next(batches)[0][0]] == [0, 1]
    with pytest.raises(ImageError, match=r"^rtsp://camera.local/stream: reading stopped after 2 frames: "
                                         ".*connection reset"):
        next(batches)


def test_a_camera_that_does_not_open_is_one_error():
    with pytest.raises(ImageError) as error:
        Video(57)
    assert str(error.value) == ("camera 57: cannot open it (no camera with this number, or another program is "
                                "using it)")
    with pytest.raises(ImageError, match="^/dev/null: cannot open it as a camera"):
        Video("/dev/null", live=True)  # a character device, as /dev/video0 is


def test_a_stream_that_does_not_open_is_one_error():
    with pytest.raises(ImageError, match=r"^rtsp://127.0.0.1:1/live: cannot open the stream \(unreachable, "
                                         r"refused, or not a video\)$"):
        Video("rtsp://127.0.0.1:1/live")


def test_a_stream_served_over_http_gives_every_frame_of_the_file(http_folder):
    folder, url = http_folder
    path = make_video(folder / "clip.avi", frames=6)
    frames = all_frames(Video(f"{url}/clip.avi"))
    assert len(frames) == 6 and all(np.array_equal(frame, expected)
                                    for (_, frame), expected in zip(frames, opencv_frames(path)))


def test_a_file_that_is_neither_image_nor_video_says_so(tmp_path):
    path = tmp_path / "notes.dat"
    path.write_text("not a video")
    with pytest.raises(ImageError, match="notes.dat: not an image or a video OpenCV can read"):
        Video(str(path))


def test_stream_urls_are_known_by_scheme_and_their_passwords_hidden():
    assert [stream_scheme(text) for text in ("rtsp://h/s", "HTTP://h/x.mp4", "file://x", "clip.mp4")] == [
        "rtsp", "http", None, None]
    assert shown_url("rtsp://admin:secret@10.0.0.2:554/live") == "rtsp://admin:***@10.0.0.2:554/live"
    assert shown_url("rtsp://10.0.0.2/live") == "rtsp://10.0.0.2/live"
    assert [url_name(u) for u in ("http://h/media/clip.webm", "rtsp://cam.local:554/", "rtsp://[::1]")] == [
        "clip.mp4", "cam.local.mp4", "::1.mp4"]


def test_a_copy_is_h264_where_opencv_writes_it_else_mp4v_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setattr(videos, "_unwritable", set())
    output = VideoOutput(str(tmp_path / "out.mp4"), 5, (64, 48))
    output.write(np.zeros((48, 64, 3), np.uint8))
    output.close()
    assert len(opencv_frames(tmp_path / "out.mp4")) == 1
    if output.codec == "avc1":
        assert output.note is None
    else:  # the opencv-python wheels have no H.264 encoder
        assert output.codec == "mp4v" and videos._unwritable == {"avc1"}
        assert "out.mp4: written as MPEG-4 Part 2 (mp4v), which web browsers do not play" in output.note
    monkeypatch.setattr(videos, "CODECS", ("XXXX", "mp4v"))  # a codec no OpenCV writes: the next one, with a note
    fallback = VideoOutput(str(tmp_path / "other.mp4"), 5, (64, 48))
    fallback.abort()
    assert fallback.codec == "mp4v" and fallback.note is not None and "XXXX" in videos._unwritable
