"""Detection: yolo/region decoding, NMS, reporting, and the whole pipeline.

Unit tests check each step against Darknet's formulas worked out by hand. Oracle tests run
darkfold's whole pipeline (its engine included) and compare with OpenCV 4.14's Darknet
importer (its [yolo] and [region] layers, and the usual OpenCV post-processing: per-class
score threshold and cv2.dnn.NMSBoxes) fed the very same network input, and with Darknet's
own output on data/dog.jpg (DESIGN.md).
"""

import io
import os
import re
import subprocess
import sys
import threading
import warnings

import cv2
import numpy as np
import oracle
import pytest
from conftest import CFG_DIR, DATA_DIR, REPO

import darkfold
from darkfold import DarkfoldError, ModelError
from darkfold.detect import (
    Detection,
    Detector,
    correct_boxes,
    decode_region,
    decode_yolo,
    nms,
    to_detections,
)
from darkfold.heads import Head, model_heads
from darkfold.images import preprocess

SAMPLE_IMAGES = sorted(DATA_DIR.glob("*.jpg"))


def pixel_iou(a, b):
    """IoU of two (left, top, width, height) boxes."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def logit(p):
    return float(np.log(p / (1 - p)))


# --------------------------------------------------------------------------------------------
# decoding


def yolo_head(anchors, classes=2, **options):
    return Head(index=1, type="yolo", classes=classes, anchors=np.array(anchors, np.float32), **options)


def raw_yolo(values, grid=(2, 2), classes=2):
    """A (boxes * (5 + classes), H, W) head input: box entries 0, scores -20, but ``values[(anchor, entry, row, col)]``."""
    boxes = 1 + max(key[0] for key in values)
    entries = 5 + classes
    x = np.full((boxes, entries, *grid), -20.0, np.float32)
    x[:, :4] = 0
    for (anchor, entry, row, col), value in values.items():
        x[anchor, entry, row, col] = value
    return x.reshape(boxes * entries, *grid)


def test_yolo_box_is_cell_plus_logistic_offset_and_anchor_times_exp():
    x = raw_yolo({(0, 0, 1, 0): logit(0.25), (0, 1, 1, 0): logit(0.75), (0, 2, 1, 0): np.log(2.0),
                  (0, 3, 1, 0): np.log(0.5), (0, 4, 1, 0): logit(0.9), (0, 6, 1, 0): logit(0.5)})
    boxes, probs = decode_yolo(x, yolo_head([(16, 32)]), 64, 128, 0.25)
    # col 0, row 1 of a 2 x 2 grid; anchors in network pixels.
    np.testing.assert_allclose(boxes, [[(0 + 0.25) / 2, (1 + 0.75) / 2, 2 * 16 / 64, 0.5 * 32 / 128]], rtol=1e-6)
    np.testing.assert_allclose(probs, [[0, 0.9 * 0.5]], rtol=1e-6)  # class 0: 0.9 * ~0 is below thresh


def test_yolo_scale_x_y_stretches_the_offset_about_the_cell_centre():
    x = raw_yolo({(0, 0, 0, 1): logit(0.25), (0, 4, 0, 1): logit(0.9)})
    boxes, _ = decode_yolo(x, yolo_head([(1, 1)], scale_x_y=2.0), 8, 8, 0.25)
    np.testing.assert_allclose(boxes[0, :2], [(1 + 0.25 * 2 - 0.5) / 2, (0 + 0.5 * 2 - 0.5) / 2], rtol=1e-6)


def test_yolo_new_coords_takes_activated_values_and_squares_the_size():
    # new_coords=1: the conv before applied logistic, so the head reads the values as they are.
    x = raw_yolo({(0, 0, 0, 0): 0.3, (0, 1, 0, 0): 0.6, (0, 2, 0, 0): 0.5, (0, 3, 0, 0): 0.25,
                  (0, 4, 0, 0): 0.8, (0, 5, 0, 0): 0.5, (0, 6, 0, 0): 0.0})
    boxes, probs = decode_yolo(x, yolo_head([(10, 20)], scale_x_y=2.0, new_coords=1), 40, 40, 0.25)
    np.testing.assert_allclose(boxes, [[(0 + 0.3 * 2 - 0.5) / 2, (0 + 0.6 * 2 - 0.5) / 2,
                                        4 * 0.25 * 10 / 40, 4 * 0.0625 * 20 / 40]], rtol=1e-6)
    np.testing.assert_allclose(probs, [[0.4, 0]], rtol=1e-6)


def test_yolo_keeps_boxes_whose_objectness_exceeds_the_threshold_in_darknets_order():
    x = raw_yolo({(0, 4, 0, 1): logit(0.9), (1, 4, 0, 0): logit(0.9), (0, 4, 1, 1): logit(0.25),
                  (1, 5, 0, 0): logit(0.2), (0, 6, 0, 1): logit(0.5)})
    boxes, probs = decode_yolo(x, yolo_head([(1, 1), (2, 2)]), 8, 8, 0.25)
    # location-major, anchor within a location (get_yolo_detections): (0,0)/anchor 1, then (0,1)/anchor 0;
    # (1,1) has objectness 0.25, not above 0.25.
    np.testing.assert_allclose(boxes[:, :2], [[0.25, 0.25], [0.75, 0.25]])
    np.testing.assert_allclose(probs, [[0, 0], [0, 0.45]], rtol=1e-6)  # 0.9 * 0.2 = 0.18 is below


def test_region_boxes_use_anchors_in_grid_cells_and_softmax_classes():
    head = Head(index=1, type="region", classes=2, anchors=np.array([(1.5, 0.5)], np.float32), softmax=1)
    x = np.zeros((1, 7, 2, 4), np.float32)
    x[0, :, 1, 3] = [logit(0.5), logit(0.25), np.log(2.0), 0.0, logit(0.8), np.log(3.0), 0.0]
    boxes, probs = decode_region(x.reshape(7, 2, 4), head, 0.25)
    assert boxes.shape == (8, 4) and probs.shape == (8, 2)  # every location and anchor
    # location 7 = row 1, col 3 of a 4 x 2 grid; w = exp(tw) * anchor_w / grid_w.
    np.testing.assert_allclose(boxes[7], [(3 + 0.5) / 4, (1 + 0.25) / 2, 2 * 1.5 / 4, 1 * 0.5 / 2], rtol=1e-6)
    np.testing.assert_allclose(probs[7], [0.8 * 0.75, 0], rtol=1e-6)  # softmax(log 3, 0) = (.75, .25)
    assert not probs[:7].any()  # objectness 0.5 x class 0.5 = 0.25, not above 0.25


def test_letterbox_undo_maps_the_padded_band_back_to_the_image():
    # A 200 x 100 image in a 100 x 100 letterbox is 100 x 50 at rows 25..75.
    boxes = np.array([[0.5, 0.25, 0.2, 0.2], [0.5, 0.5, 1.0, 0.5]], np.float32)
    np.testing.assert_allclose(correct_boxes(boxes, 200, 100, 100, 100, True),
                               [[0.5, 0.0, 0.2, 0.4], [0.5, 0.5, 1.0, 1.0]], atol=1e-6)
    assert correct_boxes(boxes, 200, 100, 100, 100, False) is boxes


# --------------------------------------------------------------------------------------------
# NMS and reporting


def test_nms_is_greedy_per_class():
    boxes = np.array([[0.5, 0.5, 0.4, 0.4], [0.52, 0.5, 0.4, 0.4], [0.9, 0.9, 0.1, 0.1]], np.float32)
    probs = np.array([[0.6, 0.3], [0.9, 0.8], [0.7, 0]], np.float32)
    kept = nms(boxes, probs, 0.45)
    # class 0: box 1 (0.9) suppresses box 0; box 2 does not overlap. class 1: box 1 suppresses box 0.
    np.testing.assert_array_equal(kept, np.array([[0, 0], [0.9, 0.8], [0.7, 0]], np.float32))
    assert probs[0, 0] == np.float32(0.6)  # the input is left alone


def test_diou_nms_discounts_overlap_by_the_distance_of_the_centres():
    # IoU 7/9 > 0.45; the DIoU measures subtract (centre distance² / enclosing diagonal²) ** beta.
    boxes = np.array([[0.5, 0.5, 0.4, 0.1], [0.55, 0.5, 0.4, 0.1]], np.float32)
    probs = np.array([[0.9], [0.8]], np.float32)
    assert nms(boxes, probs, 0.45)[1, 0] == 0
    # distance² / diagonal² = 0.0025 / 0.2125: ** 0.6 = 0.07 (0.71 left, suppressed); ** 0.1 = 0.64 (0.14, kept)
    assert nms(boxes, probs, 0.45, "diounms", beta=0.6)[1, 0] == 0
    assert nms(boxes, probs, 0.45, "diounms", beta=0.1)[1, 0] == np.float32(0.8)
    # box.c's greedynms is box_diou, whose exponent is always 0.6, whatever beta_nms says.
    assert nms(boxes, probs, 0.45, "greedynms", beta=0.1)[1, 0] == 0


def test_every_class_above_the_threshold_is_reported_best_first_sorted_by_left_edge():
    boxes = np.array([[0.6, 0.5, 0.2, 0.2], [0.3, 0.5, 0.2, 0.4]], np.float32)
    probs = np.array([[0.3, 0.7, 0.0], [0.0, 0.26, 0.9]], np.float32)
    found = to_detections(boxes, probs, 200, 100, ["a", "b", "c"], 0.25)
    assert [(d.name, round(d.confidence, 2)) for d in found] == [("c", 0.9), ("b", 0.26), ("b", 0.7), ("a", 0.3)]
    assert found[0].box == pytest.approx((40, 30, 40, 40)) and found[2].box == pytest.approx((100, 40, 40, 20))


def test_classes_named_dont_show_are_never_reported():
    boxes = np.array([[0.5, 0.5, 0.2, 0.2]], np.float32)
    probs = np.array([[0.9, 0.5]], np.float32)
    assert [d.name for d in to_detections(boxes, probs, 10, 10, ["dont_show_x", "b"], 0.25)] == ["b"]


def test_darknet_line_and_json_form():
    detection = Detection(16, "dog", 0.8092, (123.998, 219.95, 258.47, 297.93))
    assert detection.darknet_line() == "dog: 81%  (left_x: 124  top_y: 220  width: 258  height: 298)"
    assert detection.as_dict() == {"class": "dog", "class_id": 16, "confidence": 0.8092, "box": [124, 220, 258, 298]}


# --------------------------------------------------------------------------------------------
# models


def test_the_bundled_model_detects_with_coco_names(tiny_model):
    detector = Detector(tiny_model)
    assert len(detector.names) == 80 and detector.names[16] == "dog"
    assert not detector.letterbox and [h.index for h in detector.heads] == [16, 23]


def test_other_models_name_classes_by_number_or_by_a_names_file(tmp_path, tiny_cfg, tiny_weights):
    copy = tmp_path / "copy.cfg"
    copy.write_text(tiny_cfg.read_text())
    model = darkfold.load(copy, tiny_weights)
    assert Detector(model).names[:3] == ["0", "1", "2"]
    names = tmp_path / "x.names"
    names.write_text("\n".join(f"thing{i}" for i in range(80)) + "\n\n")
    assert Detector(model, names=names).names[79] == "thing79"
    names.write_text("one\ntwo\n")
    with pytest.raises(DarkfoldError, match="2 class names, but the model has classes=80"):
        Detector(model, names=names)


def test_detection_needs_weights_and_a_detection_head(tiny_cfg):
    with pytest.raises(ModelError, match="needs the model's weights"):
        Detector(darkfold.load(tiny_cfg))
    model = darkfold.load(CFG_DIR / "darknet19.cfg")
    model.header = (0, 2, 0, 0)
    with pytest.raises(ModelError, match="no \\[yolo\\] or \\[region\\] layer"):
        Detector(model)


def test_yolo9000s_tree_softmax_is_refused():
    model = darkfold.load(CFG_DIR / "yolo9000.cfg")
    model.header = (0, 2, 0, 0)
    with pytest.raises(ModelError, match="tree=.*not supported") as error:
        Detector(model)
    last = model.layers[-1]
    assert (error.value.path, error.value.line, error.value.layer) == (last.section.path, last.section.line, last.index)


@pytest.mark.parametrize("name, head", [("Gaussian_yolov3_BDD.cfg", "Gaussian_yolo"), ("yolov1.cfg", "detection")])
def test_heads_detect_does_not_decode_are_refused_by_name(name, head):
    model = darkfold.load(CFG_DIR / name)
    first = next(layer for layer in model.layers if layer.is_head)
    with pytest.raises(ModelError, match=rf"layer {first.index} \[{head}\]: darkfold detect decodes \[yolo\] and "
                                         r"\[region\] heads only"):
        model_heads(model)


def test_letterbox_follows_the_cfg_unless_asked_for():
    model = darkfold.load(CFG_DIR / "yolov4-csp.cfg")  # [net] letter_box=1
    model.header = (0, 2, 0, 0)
    assert Detector(model).letterbox and Detector(model, letterbox=False).letterbox is False
    assert Detector(model).heads[-1].nms_kind == "diounms"


def test_nms_kind_comes_from_the_last_yolo_layer():
    model = darkfold.load(CFG_DIR / "yolov4.cfg")
    model.header = (0, 2, 0, 0)
    heads = Detector(model).heads
    assert heads[-1].nms_kind == "greedynms" and heads[-1].beta_nms == 0.6


# --------------------------------------------------------------------------------------------
# the pipeline against Darknet and OpenCV

# DESIGN.md: Darknet (AlexeyAB, default mode) with the real yolov3-tiny on data/dog.jpg.
DARKNET_DOG = [("dog", 0.81, (124, 220, 258, 298)), ("bicycle", 0.38, (229, 196, 330, 249)),
               ("car", 0.71, (465, 83, 222, 89)), ("truck", 0.42, (465, 83, 222, 89)),
               ("truck", 0.62, (530, 95, 100, 67)), ("car", 0.40, (530, 95, 100, 67))]


def test_yolov3_tiny_on_dog_gives_darknets_boxes(tiny_model):
    found = tiny_model.detect(str(DATA_DIR / "dog.jpg"))
    assert len(found) == len(DARKNET_DOG)  # in Darknet's printing order: by left edge, best class first
    for (name, confidence, box), detection in zip(DARKNET_DOG, found):
        assert detection.name == name
        assert detection.confidence == pytest.approx(confidence, abs=0.02)
        assert pixel_iou(detection.box, box) >= 0.95


def opencv_pipeline(cfg, weights, blob, to_pixels, thresh, nms_threshold):
    """OpenCV's usual YOLO post-processing on its [yolo] outputs: ``[(class_id, score, pixel box)]``.

    ``to_pixels`` maps (N, 4) boxes relative to the network input (centre x, y, w, h) to
    (left, top, width, height) image pixels.
    """
    net = oracle.opencv_net(cfg, weights)
    net.setInput(blob)
    rows = np.concatenate(net.forward(net.getUnconnectedOutLayersNames()))
    boxes = to_pixels(rows[:, :4].astype(np.float64))
    found = []
    for class_id in range(rows.shape[1] - 5):
        scores = rows[:, 5 + class_id]
        for i in cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), thresh, nms_threshold):
            found.append((class_id, float(scores[i]), tuple(boxes[i])))
    return found


def assert_same_detections(found, expected, thresh, tolerance):
    """Each side's detections are on the other, by class, confidence and box, up to ``tolerance``.

    A detection within ``tolerance`` of the threshold may be on one side only.
    """
    def matched(d, others):
        return any(d[0] == o[0] and abs(d[1] - o[1]) <= tolerance and pixel_iou(d[2], o[2]) > 0.99 for o in others)

    ours = [(d.class_id, d.confidence, d.box) for d in found]
    for side, other in ((ours, expected), (expected, ours)):
        for d in side:
            assert matched(d, other) or d[1] - thresh < tolerance, (d, other)


@oracle.needs_opencv_darknet
@pytest.mark.parametrize("image_path", SAMPLE_IMAGES, ids=lambda p: p.name)
def test_detections_match_opencvs_pipeline_on_every_sample_image(tiny_model, tiny_cfg, tiny_weights,
                                                                 image_path):
    image = cv2.imread(str(image_path))
    height, width = image.shape[:2]
    blob = preprocess(image, 416, 416)[None]

    def to_pixels(b):
        return np.stack([(b[:, 0] - b[:, 2] / 2) * width, (b[:, 1] - b[:, 3] / 2) * height,
                         b[:, 2] * width, b[:, 3] * height], axis=1)

    expected = opencv_pipeline(tiny_cfg, tiny_weights, blob, to_pixels, 0.25, 0.45)
    assert_same_detections(tiny_model.detect(image), expected, 0.25, 2e-3)


@oracle.needs_opencv_darknet
def test_letterboxed_detections_map_back_to_the_image_as_opencvs_do(tiny_model, tiny_cfg, tiny_weights):
    image = cv2.imread(str(DATA_DIR / "dog.jpg"))  # 768 x 576: 416 x 312 in the letterbox, 52 rows of grey above
    blob = preprocess(image, 416, 416, letterbox=True)[None]
    scale = 768 / 416

    def to_pixels(b):
        return np.stack([(b[:, 0] - b[:, 2] / 2) * 416 * scale, ((b[:, 1] - b[:, 3] / 2) * 416 - 52) * scale,
                         b[:, 2] * 416 * scale, b[:, 3] * 416 * scale], axis=1)

    expected = opencv_pipeline(tiny_cfg, tiny_weights, blob, to_pixels, 0.25, 0.45)
    assert_same_detections(tiny_model.detect(image, letterbox=True), expected, 0.25, 2e-3)


@pytest.fixture(scope="module")
def small_yolov2(tmp_path_factory):
    """YOLOv2 (80 classes) at 160 x 160 with random weights.

    OpenCV's importer takes its region layer's threshold from the [region] thresh= (a
    training key in Darknet), set here to .02: softmax over 80 random scores seldom gives a
    class more. Returns (cfg, weights, OpenCV's copy of the weights with BatchNorm variances
    bumped).
    """
    folder = tmp_path_factory.mktemp("yolov2")
    (folder / "full.cfg").write_text((CFG_DIR / "yolov2.cfg").read_text().replace("thresh = .6", "thresh = .02"))
    cfg = oracle.resized_cfg(folder / "full.cfg", folder / "yolov2-small.cfg", 160, 160)
    layers, _ = oracle.write_random_weights(cfg, folder / "random.weights", seed=5)
    bumped = oracle.write_bumped_copy(folder / "random.weights", folder / "opencv.weights", layers)
    return cfg, folder / "random.weights", bumped


@oracle.needs_opencv_darknet
@pytest.mark.parametrize("seed", [0, 1])
def test_region_decoding_matches_opencvs_region_layer_on_yolov2(small_yolov2, seed):
    cfg, weights, opencv_weights = small_yolov2
    image = np.random.default_rng(seed).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    net = oracle.opencv_net(cfg, opencv_weights)
    net.setInput(preprocess(image, 160, 160)[None])
    rows = net.forward("detection_out")  # OpenCV's region layer: thresh from the cfg, then NMS at 0.4
    expected = [(int(k), float(rows[i, 5 + k]), (float(rows[i, 0] - rows[i, 2] / 2) * 160,
                                                  float(rows[i, 1] - rows[i, 3] / 2) * 160,
                                                  float(rows[i, 2]) * 160, float(rows[i, 3]) * 160))
                for i, k in zip(*np.nonzero(rows[:, 5:]))]
    found = darkfold.load(cfg, weights).detect(image, thresh=0.02, nms=0.4)
    assert len(found) == len(expected) > 100
    assert_same_detections(found, expected, 0.02, 1e-4)


@oracle.needs_opencv_darknet
@pytest.mark.parametrize("name", ["yolov4-tiny", "yolov7-tiny"])
def test_yolo_decoding_matches_opencvs_yolo_layer(tmp_path, name):
    # yolov4-tiny: scale_x_y=1.05; yolov7-tiny: scale_x_y=2 and new_coords=1.
    cfg = oracle.resized_cfg(CFG_DIR / f"{name}.cfg", tmp_path / f"{name}.cfg", 96, 96)
    oracle.write_random_weights(cfg, tmp_path / "random.weights", seed=3)
    model = darkfold.load(cfg, tmp_path / "random.weights")
    heads = Detector(model).heads
    net = oracle.opencv_net(cfg, tmp_path / "random.weights")
    names = oracle.opencv_output_names(net)
    net.setInput(oracle.random_blob(96, 96, seed=4))
    outputs = net.forward([names[h.index - 1] for h in heads] + [names[h.index] for h in heads])
    for head, raw, rows in zip(heads, outputs, outputs[len(heads):]):
        boxes, probs = decode_yolo(raw[0], head, 96, 96, thresh=-1.0)  # every box, in OpenCV's row order
        np.testing.assert_allclose(boxes, rows[:, :4], atol=1e-6)
        shown = rows[:, 5:] > 0  # OpenCV zeroes class probabilities up to 0.2
        np.testing.assert_allclose(probs[shown], rows[:, 5:][shown], atol=1e-6)
        assert probs[~shown].max() <= 0.2 and shown.sum() > 100


def test_a_list_is_detected_in_batches_with_the_same_results_as_one_by_one(tiny_model):
    from darkfold.detect import Detector

    assert len(SAMPLE_IMAGES) >= 5
    paths = [str(p) for p in SAMPLE_IMAGES[:5]]  # a full batch and a partial one
    detector = Detector(tiny_model)
    together = detector.detect_many(paths, batch=4)
    assert len(together) == len(paths)
    for path, found in zip(paths, together):
        alone = detector.detect(cv2.imread(path))
        assert [d.class_id for d in found] == [a.class_id for a in alone]
        np.testing.assert_allclose([d.box for d in found], [a.box for a in alone], atol=1e-3)
        np.testing.assert_allclose([d.confidence for d in found], [a.confidence for a in alone], atol=1e-5)
    via_model = tiny_model.detect(paths)  # Model.detect of a list batches the same way
    assert [[d.class_id for d in found] for found in via_model] == [[d.class_id for d in found] for found in together]


# --------------------------------------------------------------------------------------------
# images given as encoded bytes, file objects, and arrays of every kind an app holds


def test_encoded_bytes_and_binary_file_objects_are_detected_as_their_files(tiny_model, tmp_path):
    path = DATA_DIR / "dog.jpg"
    expected = tiny_model.detect(str(path))
    data = path.read_bytes()
    assert tiny_model.detect(data) == expected
    assert tiny_model.detect(bytearray(data)) == expected and tiny_model.detect(memoryview(data)) == expected
    assert tiny_model.detect(io.BytesIO(data)) == expected  # an upload, as web frameworks hand it over
    with open(path, "rb") as file:
        assert tiny_model.detect(file) == expected
    assert tiny_model.detect([data, io.BytesIO(data), path]) == tiny_model.detect([path] * 3)  # one batch


def test_bytes_and_file_objects_that_are_not_images_are_one_image_error(tiny_model, tmp_path):
    with pytest.raises(darkfold.ImageError, match=r"^image bytes: not an image OpenCV can read"):
        tiny_model.detect(b"not an image")
    with pytest.raises(darkfold.ImageError, match=r"^image file object: corrupt JPEG"):
        tiny_model.detect(io.BytesIO((DATA_DIR / "dog.jpg").read_bytes()[:5000]))
    with pytest.raises(darkfold.ImageError, match=r"^image bytes: empty, not an image"):
        tiny_model.detect(b"")
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with open(text) as file, pytest.raises(darkfold.ImageError, match=f"^{text}: a text file object; open the "
                                                                      r"image in binary mode \('rb'\)"):
        tiny_model.detect(file)


@pytest.mark.parametrize("path", SAMPLE_IMAGES, ids=lambda p: p.name)
def test_an_rgb_array_gives_the_detections_of_the_bgr_one(tiny_model, path):
    bgr = cv2.imread(str(path))
    expected = tiny_model.detect(bgr, thresh=0.1)
    assert expected  # every sample image holds something to find
    assert tiny_model.detect(np.ascontiguousarray(bgr[:, :, ::-1]), thresh=0.1, channels="rgb") == expected
    rgba = np.dstack([bgr[:, :, ::-1], np.full(bgr.shape[:2], 7, np.uint8)])  # PIL's RGBA
    assert tiny_model.detect(rgba, thresh=0.1, channels="rgb") == expected


def test_without_channels_an_rgb_array_is_taken_as_bgr(tiny_model):
    bgr = cv2.imread(str(DATA_DIR / "dog.jpg"))
    assert tiny_model.detect(bgr[:, :, ::-1]) != tiny_model.detect(bgr)  # the dog drops to 60%


def test_grey_4_channel_and_16_bit_arrays_are_read_as_their_files(tiny_model, tmp_path):
    bgr = cv2.imread(str(DATA_DIR / "dog.jpg"))
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    assert tiny_model.detect(grey[:, :, None]) == tiny_model.detect(grey) == tiny_model.detect(str(tmp_path / "grey.png"))
    bgra = np.dstack([bgr, np.zeros(bgr.shape[:2], np.uint8)])
    cv2.imwrite(str(tmp_path / "bgra.png"), bgra)
    assert tiny_model.detect(bgra) == tiny_model.detect(str(tmp_path / "bgra.png")) == tiny_model.detect(bgr)
    deep = bgr.astype(np.uint16) * 256 + np.arange(bgr.size).reshape(bgr.shape).astype(np.uint16) % 256
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    assert tiny_model.detect(deep) == tiny_model.detect(str(tmp_path / "deep.png")) == tiny_model.detect(bgr)


@pytest.mark.parametrize("image, message", [
    (np.zeros((8, 8, 3), np.float32), "expected an image array of uint8 \\(or uint16\\) values.* got float32"),
    (np.zeros((8, 8, 3), bool), "got bool"),
    (np.zeros((8, 8, 3), np.int32), "got int32"),
    (np.zeros((8, 8, 2), np.uint8), "got \\(8, 8, 2\\)$"),
    (np.zeros((0, 8, 3), np.uint8), "got \\(0, 8, 3\\)$"),
    (np.zeros((2, 8, 8, 3), np.uint8), "got \\(2, 8, 8, 3\\)$"),
    (np.zeros(100, np.uint8), "got \\(100,\\) \\(the bytes of an encoded image go as bytes: array.tobytes"),
    (42, "expected an image: a path, encoded image bytes, a binary file object "
                                           "or a numpy array; got int"),
])
def test_anything_else_is_one_image_error(tiny_model, image, message):
    with pytest.raises(darkfold.ImageError, match=message):
        tiny_model.detect(image)


def test_threads_sharing_one_model_get_what_one_thread_gets(tiny_model):
    # The README's contract: one model may be shared by threads; their calls run one at a time.
    images = [cv2.imread(str(path)) for path in SAMPLE_IMAGES[:4]]
    expected = [tiny_model.detect(image) for image in images]
    found = [[] for _ in range(4)]

    def work(k):
        for round_ in range(3):
            found[k].append(tiny_model.detect(images[(k + round_) % 4]))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(found[k][r] == expected[(k + r) % 4] for k in range(4) for r in range(3))


def test_channels_is_bgr_or_rgb(tiny_model):
    with pytest.raises(darkfold.ImageError, match="channels='RGBA': expected 'bgr' or 'rgb'"):
        tiny_model.detect(np.zeros((8, 8, 3), np.uint8), channels="RGBA")


# --------------------------------------------------------------------------------------------
# values that are not numbers, and weights that overflow


@pytest.mark.parametrize("option", ["thresh", "nms"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.1, 1.5, 5, True, "0.5", None])
def test_thresh_and_nms_must_be_numbers_from_0_to_1(tiny_model, option, value):
    with pytest.raises(ModelError) as error:
        tiny_model.detect(str(DATA_DIR / "dog.jpg"), **{option: value})
    assert str(error.value) == f"{option}={value!r}: expected a number from 0 to 1"


def damaged(change):
    """The bundled model with ``change(params)`` applied to copies of its arrays."""
    model = darkfold.load()
    model.params = [None if arrays is None else {name: np.array(a) for name, a in arrays.items()}
                    for arrays in model.params]
    change(model.params)
    return model


def detect_quietly(model):
    """``model.detect`` on dog.jpg, failing on any warning numpy would print (RuntimeWarning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return model.detect(str(DATA_DIR / "dog.jpg"))


def test_a_parameter_far_past_any_trained_models_is_named_when_it_overflows_the_boxes(tiny_cfg):
    # 1e30 in layer 0: the heads stay finite (6e29), the boxes do not: it was an internal error at rounding.
    model = damaged(lambda params: params[0]["weights"].reshape(-1).__setitem__(0, 1e30))
    with pytest.raises(ModelError) as error:
        detect_quietly(model)
    assert str(error.value) == (f"{tiny_cfg}:25: layer 0 [convolutional] holds values up to 1e+30 in its weights (1 of "
                                "432), far past any trained model's: the weights file is damaged (or its exporter "
                                "wrote them); get it again")
    assert (error.value.layer, error.value.line) == (0, 25)


def test_head_inputs_whose_boxes_overflow_name_the_head_and_the_layer_before_it(tiny_cfg):
    # A bias of 200 on the first box's width: exp(200) is past float32, in Darknet too.
    model = damaged(lambda params: params[15]["biases"].__setitem__(2, 200))
    with pytest.raises(ModelError) as error:
        detect_quietly(model)
    assert str(error.value).startswith(f"{tiny_cfg}:132: layer 16 [yolo]: a box it decodes is NaN or inf in image "
                                       "pixels: layer 15 outputs values up to 20")
    assert error.value.layer == 16


@pytest.mark.parametrize("name, value, what", [("weights", np.nan, "NaN"), ("biases", np.inf, "inf"),
                                               ("rolling_variance", -1, "negative variances")])
def test_parameters_that_make_nan_are_named_at_the_layer_holding_them(tiny_cfg, name, value, what):
    model = damaged(lambda params: params[4][name].reshape(-1).__setitem__(3, value))
    with pytest.raises(ModelError) as error:
        detect_quietly(model)
    assert str(error.value).startswith(f"{tiny_cfg}:49: layer 4 [convolutional] holds {what} in its {name} (1 of ")
    assert error.value.layer == 4


def test_finite_parameters_whose_outputs_overflow_name_the_first_layer_to_output_inf(tiny_cfg):
    def huge(params):
        for layer in (0, 2):
            params[layer]["weights"][:] = 1e20  # 1e20 x 1e20 past float32 in layer 2, not before

    with pytest.raises(ModelError) as error:
        detect_quietly(damaged(huge))
    assert str(error.value).startswith(f"{tiny_cfg}:37: layer 2 [convolutional] is the first layer to output NaN or "
                                       "inf on this input, though every parameter is finite")


def test_warmup_compiles_every_kernel_detection_runs_and_logs_it(tmp_path):
    """darkfold.warmup on an empty numba cache (a first run after installing) compiles, and says
    so on the logger "darkfold"; detecting then compiles nothing, and a second warmup neither."""
    script = ("import logging, sys, cv2, darkfold\n"
              "from darkfold.kernels.cache import compiled_seconds\n"
              "logging.basicConfig(stream=sys.stdout, format='%(name)s %(levelname)s %(message)s')\n"
              "logging.getLogger('darkfold').setLevel(logging.INFO)\n"
              "first = darkfold.warmup()\n"
              "before = compiled_seconds()\n"
              "found = darkfold.load().detect(cv2.imread(darkfold.bundled.SAMPLE_IMAGE))\n"
              "print(len(found), 'detected; compiled meanwhile:', compiled_seconds() - before)\n"
              "print('first warmup', first > 0, 'second', darkfold.warmup())\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True,
                            env=dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path)))
    assert re.fullmatch(r"darkfold INFO compiling the numba kernels \(.*\)\n"
                        r"darkfold INFO compiled kernels in \d+\.\d s \(once per install\)\n"
                        r"6 detected; compiled meanwhile: 0.0\n"
                        r"first warmup True second 0\n", result.stdout)
