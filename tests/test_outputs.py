"""The formats `darkfold detect` prints a Prediction in: Darknet's lines and JSON Lines."""

import json

from darkfold import ImageError, outputs
from darkfold.detect import Detection
from darkfold.prediction import Prediction

DOG = Detection(16, "dog", 0.8092, (123.6, 219.8, 258.2, 298.4))


def test_text_is_a_header_then_darknets_line_per_detection():
    image = Prediction("dog.jpg", "image", detections=(DOG,), output="out/dog.jpg", seconds=0.1154)
    assert outputs.text(image) == ("dog.jpg: 1 detected in 115 ms -> out/dog.jpg\n"
                                   "dog: 81%  (left_x: 124  top_y: 220  width: 258  height: 298)")
    assert outputs.text(Prediction("dog.jpg", "image", seconds=0.02)) == "dog.jpg: 0 detected in 20 ms"


def test_text_of_a_videos_last_frame_ends_with_the_video_line():
    frame = Prediction("clip.avi", "video", 1, (DOG,), output="out/clip.mp4", frames=2)
    assert outputs.text(frame).splitlines()[0] == "clip.avi frame 1: 1 detected"
    last = Prediction("clip.avi", "video", 1, (), output="out/clip.mp4", frames=2, last=True)
    assert outputs.text(last).splitlines() == ["clip.avi frame 1: 0 detected", "clip.avi: 2 frames -> out/clip.mp4"]
    assert outputs.text(Prediction("clip.avi", "video", 0, last=True)).splitlines()[-1] == "clip.avi: 1 frames"


def test_text_leaves_a_failed_input_to_the_error_stream():
    assert outputs.text(Prediction("x.jpg", "image", error=ImageError("x.jpg: not an image"))) == ""


def test_json_line_is_one_object_per_image_frame_or_failed_input():
    image = json.loads(outputs.json_line(Prediction("dog.jpg", "image", detections=(DOG,), seconds=0.1)))
    assert image == {"image": "dog.jpg", "detections": [DOG.as_dict()]}
    frame = outputs.json_line(Prediction("clip.avi", "video", 3, ()))
    assert frame == '{"video": "clip.avi", "frame": 3, "detections": []}'
    failed = Prediction("a\x1b.jpg", "input", error=ImageError("a\x1b.jpg: no such file or folder"))
    assert outputs.json_line(failed) == '{"input": "a\\u001b.jpg", "error": "a\\u001b.jpg: no such file or folder"}'
