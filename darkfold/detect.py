"""YOLO detection as AlexeyAB Darknet's ``detector test`` computes it.

The network's raw head inputs (the outputs of the layers before each
``[yolo]`` or ``[region]``) are decoded into boxes relative to the network
input with per-class probabilities (``get_yolo_detections`` in yolo_layer.c,
``custom_get_region_detections`` in network.c), mapped back to the image
(``correct_yolo_boxes``), thinned by per-class NMS (``do_nms_sort`` or
``diounms_sort`` in box.c, by the ``nms_kind`` of the last head), and
reported as Darknet prints them (``draw_detections_v3`` in image.c): one
Detection per box and class whose probability clears the threshold.

    detector = Detector(model)                  # names, thresholds, letterbox
    detector.detect(cv2.imread("dog.jpg"))      # -> [Detection, ...]
"""

import os
from dataclasses import dataclass

import numpy as np

from .bundled import COCO_NAMES, DEFAULT_CFG
from .options import BATCH, F32, NUMBA, check_backend, check_probability
from .errors import DarkfoldError, ModelError
from .files import read_bytes
from .heads import model_heads
from .kernels.cache import cache_is_cold
from .backends import forward, session_for
from .runtime import check_finite, damaged_parameters, warm_up

THRESH = 0.25  # detector.c: -thresh default .25
NMS = 0.45  # test_detector: nms = .45
# No trained YOLO holds a parameter this large (their weights stay within about +-100, BatchNorm
# variances below 1e6); one that does is what overflows the boxes.
HUGE_PARAMETER = 1e9


@dataclass(frozen=True)
class Detection:
    """One object: its class, the probability of that class, and its box in image pixels.

    ``box`` is ``(left, top, width, height)`` as floats, not clipped to the
    image (Darknet prints them rounded, as ``darknet_line`` does).
    """

    class_id: int
    name: str
    confidence: float
    box: tuple

    def pixel_box(self):
        """The box rounded to whole pixels, as Darknet prints it."""
        return tuple(round(v) for v in self.box)

    def darknet_line(self):
        """``dog: 81%  (left_x: 124  top_y: 220  width: 258  height: 298)``"""
        left, top, width, height = self.pixel_box()
        percent = float(np.float32(self.confidence) * np.float32(100))
        return f"{self.name}: {percent:.0f}%  (left_x: {left}  top_y: {top}  width: {width}  height: {height})"

    def as_dict(self):
        """The JSON form: class name, class id, confidence (4 decimals) and the pixel box."""
        return {"class": self.name, "class_id": self.class_id, "confidence": round(self.confidence, 4),
                "box": list(self.pixel_box())}


# --------------------------------------------------------------------------------------------
# decoding: raw head input (C, H, W) -> boxes relative to the network input, class probabilities


def _logistic(x):
    return np.float32(1) / (np.float32(1) + np.exp(-x))


def _identity(x):
    return x


def decode_yolo(x, head, net_w, net_h, thresh):
    """Boxes ``(m, 4)`` (x, y, w, h) and probabilities ``(m, classes)`` of a [yolo] head.

    Darknet's forward_yolo_layer then get_yolo_detections: logistic on x, y,
    objectness and classes (not with new_coords, whose conv already applied
    it), x and y scaled by scale_x_y about the cell centre; a box is kept when
    its objectness exceeds ``thresh``, and each class probability is
    objectness x class score, zero unless it exceeds ``thresh``. Boxes come
    location by location, anchor by anchor within a location.
    """
    boxes_per_cell = len(head.anchors)
    _, grid_h, grid_w = x.shape
    x = x.reshape(boxes_per_cell, 5 + head.classes, grid_h * grid_w).astype(np.float32, copy=False)
    # Logistic first on objectness alone: the other entries only of the boxes kept.
    activate = _identity if head.new_coords else _logistic
    objectness = activate(x[:, 4])
    location, anchor = np.nonzero((objectness > thresh).T)  # location-major, as get_yolo_detections loops
    row, col = np.divmod(location, grid_w)
    kept = x[anchor, :, location]  # (boxes, 5 + classes)
    xy = activate(kept[:, :2]) * np.float32(head.scale_x_y) + np.float32(-0.5 * (head.scale_x_y - 1))
    tw, th = kept[:, 2].astype(np.float64), kept[:, 3].astype(np.float64)
    if head.new_coords:
        scale_w, scale_h = tw * tw * 4, th * th * 4
    else:
        scale_w, scale_h = np.exp(tw), np.exp(th)
    boxes = np.stack([
        (col.astype(np.float32) + xy[:, 0]) / np.float32(grid_w),
        (row.astype(np.float32) + xy[:, 1]) / np.float32(grid_h),
        (scale_w * head.anchors[anchor, 0] / net_w).astype(np.float32),
        (scale_h * head.anchors[anchor, 1] / net_h).astype(np.float32),
    ], axis=1)
    probs = objectness[anchor, location][:, None] * activate(kept[:, 5:])
    return boxes, np.where(probs > thresh, probs, np.float32(0))


def decode_region(x, head, thresh):
    """Boxes ``(w*h*n, 4)`` and probabilities of a [region] head (YOLOv2).

    forward_region_layer then get_region_boxes (region_layer.c): logistic on
    objectness only, softmax over the classes if ``softmax=1``; x and y get
    their logistic when the box is made, and w, h are anchors in grid cells:
    ``exp(tw) * anchor_w / grid_w``. Every location and anchor gives a box.
    """
    boxes_per_cell = len(head.anchors)
    _, grid_h, grid_w = x.shape
    x = x.reshape(boxes_per_cell, 5 + head.classes, grid_h * grid_w).astype(np.float32, copy=False)
    objectness = _logistic(x[:, 4])
    if head.classfix == -1:
        objectness = np.where(objectness < 0.5, np.float32(0), objectness)
    scores = x[:, 5:]
    if head.softmax:
        exps = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores = exps / exps.sum(axis=1, keepdims=True)
    location = np.arange(grid_h * grid_w)
    row, col = np.divmod(location, grid_w)
    boxes = np.stack([
        (col.astype(np.float32) + _logistic(x[:, 0])) / np.float32(grid_w),
        (row.astype(np.float32) + _logistic(x[:, 1])) / np.float32(grid_h),
        (np.exp(x[:, 2].astype(np.float64)) * head.anchors[:, :1] / grid_w).astype(np.float32),
        (np.exp(x[:, 3].astype(np.float64)) * head.anchors[:, 1:] / grid_h).astype(np.float32),
    ], axis=-1)  # (anchor, location, 4)
    probs = objectness[:, None, :] * scores  # (anchor, class, location)
    probs = np.where(probs > thresh, probs, np.float32(0))
    # Darknet's region output is location-major (flatten in forward_region_layer).
    return boxes.transpose(1, 0, 2).reshape(-1, 4), probs.transpose(2, 0, 1).reshape(-1, head.classes)


def decode_heads(model, outputs):
    """Every box of every head, before any threshold: ``boxes`` (N, K, 4) as x, y, w, h relative
    to the network input and ``scores`` (N, K, classes) = objectness x class probability, for
    the forward pass's ``{layer index: (N, C, H, W) array}``. K runs head by head in cfg order,
    cell by cell within a head and anchor by anchor within a cell, as Darknet walks them; what
    ``darkfold export --decode`` computes inside the graph."""
    heads = model_heads(model)
    boxes, scores = [], []
    for image in range(len(next(iter(outputs.values())))):
        parts = []
        for head in heads:
            x = np.asarray(outputs[head.index - 1])[image]
            with np.errstate(over="ignore", invalid="ignore"):
                if head.type == "yolo":
                    parts.append(decode_yolo(x, head, model.net.width, model.net.height, -np.inf))
                else:
                    parts.append(decode_region(x, head, -np.inf))
        boxes.append(np.concatenate([b for b, _ in parts]))
        scores.append(np.concatenate([p for _, p in parts]))
    return np.stack(boxes), np.stack(scores)


def correct_boxes(boxes, image_w, image_h, net_w, net_h, letterbox):
    """Map boxes relative to the network input to boxes relative to the image: correct_yolo_boxes.

    Without letterbox the image was stretched onto the whole input, and this
    changes nothing.
    """
    if not letterbox:
        return boxes
    from .images import letterbox_size

    new_w, new_h = letterbox_size(image_w, image_h, net_w, net_h)
    ratio_w, ratio_h = np.float32(new_w) / np.float32(net_w), np.float32(new_h) / np.float32(net_h)
    out = np.empty_like(boxes)
    out[:, 0] = (boxes[:, 0] - (net_w - new_w) / 2.0 / net_w) / ratio_w
    out[:, 1] = (boxes[:, 1] - (net_h - new_h) / 2.0 / net_h) / ratio_h
    out[:, 2] = boxes[:, 2] * (np.float32(1) / ratio_w)
    out[:, 3] = boxes[:, 3] * (np.float32(1) / ratio_h)
    return out


# --------------------------------------------------------------------------------------------
# NMS (box.c)


def nms(boxes, probs, thresh=NMS, kind="default", beta=0.6):
    """Per-class greedy NMS (do_nms_sort, diounms_sort): a copy of ``probs`` with suppressed entries zeroed.

    For each class, boxes are taken in order of falling probability; each
    one still standing zeroes that class in every later box that overlaps it
    by more than ``thresh``: by IoU, or for ``kind`` "diounms" by DIoU with
    ``beta``. "greedynms" compares box_diou, whose exponent is fixed at 0.6
    (diounms_sort); Darknet's default is do_nms_sort (IoU). The pairs that
    overlap are found once for every class (see ``darkfold.nms``).
    """
    from .nms import overlap_graph, suppress  # numba: only once NMS runs

    diou = kind in ("greedynms", "diounms")
    beta = 0.6 if kind == "greedynms" else beta
    probs = np.array(probs, np.float32)
    columns = np.flatnonzero((probs > 0).sum(axis=0) > 1)
    if not columns.size:
        return probs
    rows = np.flatnonzero((probs[:, columns] > 0).any(axis=1))
    candidates = np.ascontiguousarray(boxes[rows], np.float32)
    kept = np.ascontiguousarray(probs[rows])
    starts, neighbours = overlap_graph(candidates, np.float32(thresh), diou, np.float32(beta))
    rank = np.empty(len(rows), np.int64)
    for k in columns:
        standing = np.flatnonzero(kept[:, k])
        order = standing[np.argsort(-kept[standing, k], kind="stable")]
        suppress(order, kept, k, starts, neighbours, rank)
    probs[rows] = kept
    return probs


# --------------------------------------------------------------------------------------------
# from boxes and probabilities to Detections


def to_detections(boxes, probs, image_w, image_h, names, thresh=THRESH, shown=None):
    """Detections in Darknet's printing order (draw_detections_v3).

    Boxes with a class above ``thresh`` (get_actual_detections), sorted by
    their left edge; for each, its most probable class first, then every
    other class above ``thresh`` in class order. Classes named
    ``dont_show...`` are never reported, as in Darknet (``shown``, if given,
    is that mask of the classes, computed beforehand).
    """
    if shown is None:
        shown = shown_classes(names)
    visible = np.where((probs > thresh) & shown, probs, np.float32(0))
    kept = np.flatnonzero(visible.max(axis=1, initial=0) > 0)
    lefts, pixel = pixel_boxes(boxes[kept], image_w, image_h)
    detections = []
    for position in np.argsort(lefts, kind="stable"):
        row = visible[kept[position]]
        best = int(np.argmax(row))
        box = tuple(float(v) for v in pixel[position])
        for class_id in [best] + [int(k) for k in np.flatnonzero(row) if k != best]:
            detections.append(Detection(class_id, names[class_id], float(row[class_id]), box))
    return detections


def pixel_boxes(relative, image_w, image_h):
    """``(lefts, pixels)`` of (x, y, w, h) boxes relative to the image: their left edges, and the
    boxes as left, top, width, height in image pixels, in float32 as Darknet computes them."""
    lefts = relative[:, 0] - relative[:, 2] / np.float32(2)
    tops = relative[:, 1] - relative[:, 3] / np.float32(2)
    return lefts, np.stack([lefts * np.float32(image_w), tops * np.float32(image_h),
                            relative[:, 2] * np.float32(image_w), relative[:, 3] * np.float32(image_h)], axis=1)


def shown_classes(names):
    """Which classes are reported: all but those named ``dont_show...`` (get_actual_detections)."""
    return np.array([not name.startswith("dont_show") for name in names])


def load_names(path, classes):
    """Class names from a .names file (one a line), at least ``classes`` of them."""
    text = read_bytes(path, "names").decode("utf-8", errors="replace")
    names = [line.rstrip("\r") for line in text.split("\n")]
    while names and not names[-1].strip():
        names.pop()
    if len(names) < classes:
        raise DarkfoldError(f"{path}: {len(names)} class names, but the model has classes={classes}", path=path,
                            expected=f"{classes} names", found=f"{len(names)} names")
    return names


def default_names(model, classes):
    """COCO names for the bundled model, else the class ids as names."""
    if os.path.exists(model.cfg.path) and os.path.samefile(model.cfg.path, DEFAULT_CFG):
        return load_names(COCO_NAMES, classes)
    return [str(i) for i in range(classes)]


# --------------------------------------------------------------------------------------------
# the pipeline


class Detector:
    """A model ready to detect: its heads, class names, thresholds and preprocessing.

    ``names`` is a list or a .names file (default: COCO for the bundled
    model, the class ids otherwise); ``letterbox`` None follows the cfg's
    ``[net] letter_box``; ``threads``, ``backend`` and ``precision`` go to the forward pass
    (``Model.forward``; default: every CPU, darkfold's numba engine, float32).
    """

    def __init__(self, model, *, names=None, thresh=THRESH, nms=NMS, letterbox=None, threads=None, backend=NUMBA,
                 precision=F32):
        if not model.has_weights:
            raise ModelError(f"{model.cfg.path}: detection needs the model's weights; load it with a .weights file",
                             path=model.cfg.path, expected="weights", found="a cfg alone")
        if model.net.channels != 3:
            raise ModelError(f"{model.cfg.path}: [net] channels={model.net.channels}: detection reads colour "
                             "images, which needs channels=3", path=model.cfg.path, expected="channels=3",
                             found=f"channels={model.net.channels}")
        self.model = model
        self.heads = model_heads(model)
        self.classes = self.heads[0].classes
        if names is None:
            names = default_names(model, self.classes)
        elif isinstance(names, (str, os.PathLike)):
            names = load_names(os.fspath(names), self.classes)
        elif len(names) < self.classes:
            raise DarkfoldError(f"{len(names)} class names given, but the model has classes={self.classes}",
                                expected=f"{self.classes} names", found=f"{len(names)} names")
        self.names = list(names)
        self._shown = shown_classes(self.names)
        self.thresh = check_probability("thresh", thresh)
        self.nms = check_probability("nms", nms)
        self.letterbox = bool(model.net.letter_box) if letterbox is None else bool(letterbox)
        self.threads = threads
        self.backend, self.precision = check_backend(backend, precision)

    def prepare(self, everything=False):
        """Build the engine and have numba compile, or load from its cache, the kernels detection
        runs (runtime.warm_up, which logs a compile), so that the first image's time is the
        detection's alone; on another backend, open its session (OpenVINO compiles the model
        for a single image and for ``BATCH``, the batches detect and detect_many pass, then)
        and compile detection's own kernels. Returns the seconds it took when it compiled, else 0."""
        if session_for(self.model, self.backend, self.precision, self.threads) is not None:
            self._first_calls()
            return 0
        return warm_up(self.model, threads=self.threads, everything=everything, first_calls=(self._first_calls,))

    def _forward(self, x):
        outputs = forward(self.model, x, threads=self.threads, backend=self.backend, precision=self.precision)
        # NaN would be no detection, silently
        check_finite(self.model, x, outputs, threads=self.threads, backend=self.backend)
        return outputs

    def _first_calls(self):
        """Detection's own kernels called once, on a tiny image and two boxes, with the argument
        types a detection calls them with: Darknet's resize, and the NMS."""
        self.preprocess(np.zeros((2, 2, 3), np.uint8))
        boxes = np.array([[0.5, 0.5, 0.2, 0.2]] * 2, np.float32)
        last = self.heads[-1]
        nms(boxes, np.ones((2, 1), np.float32), NMS, last.nms_kind, last.beta_nms)

    def preprocess(self, image):
        """The (1, 3, H, W) network input for one BGR image."""
        from .images import preprocess

        net = self.model.net
        return preprocess(image, net.width, net.height, self.letterbox)[None]

    def detect(self, image):
        """Detections on one BGR uint8 image (as cv2.imread returns it)."""
        from .images import as_bgr

        image = as_bgr(image)
        return self.decode(self._forward(self.preprocess(image)), image.shape[1], image.shape[0])

    def detect_many(self, images, batch=BATCH, channels="bgr"):
        """Detections on each of ``images`` (anything ``images.load_image`` takes: arrays in
        ``channels`` order, paths, encoded bytes, file objects), ``batch`` to a forward pass.

        One pass over a batch costs less than a pass per image: the batch is one matrix to the
        engine, so each layer's weights are read once for all of its images.
        """
        from .images import load_image

        found = []
        for start in range(0, len(images), batch):
            chunk = [load_image(item, channels) for item in images[start:start + batch]]
            x = np.concatenate([self.preprocess(image) for image in chunk])
            outputs = self._forward(x)
            for k, image in enumerate(chunk):
                one = {index: output[k:k + 1] for index, output in outputs.items()}
                found.append(self.decode(one, image.shape[1], image.shape[0]))
        return found

    def decode(self, outputs, image_w, image_h):
        """Detections from the forward pass's ``{layer index: (1, C, H, W) array}`` of the head inputs."""
        net = self.model.net
        boxes, probs = [], []
        for head in self.heads:
            x = np.asarray(outputs[head.index - 1])[0]
            # exp() of a huge w or h overflows as it does in Darknet; such a box is refused below.
            with np.errstate(over="ignore", invalid="ignore"):
                if head.type == "yolo":
                    head_boxes, head_probs = decode_yolo(x, head, net.width, net.height, self.thresh)
                else:
                    head_boxes, head_probs = decode_region(x, head, self.thresh)
                head_boxes = correct_boxes(head_boxes, image_w, image_h, net.width, net.height, self.letterbox)
                _, pixels = pixel_boxes(head_boxes[head_probs.max(axis=1, initial=0) > 0], image_w, image_h)
            if not np.isfinite(pixels).all():
                raise self._infinite_box(head, x)
            boxes.append(head_boxes)
            probs.append(head_probs)
        boxes = np.concatenate(boxes)
        probs = np.concatenate(probs)
        if self.nms:
            last = self.heads[-1]  # test_detector uses the last head's nms_kind
            probs = nms(boxes, probs, self.nms, last.nms_kind, last.beta_nms)
        return to_detections(boxes, probs, image_w, image_h, self.names, self.thresh, self._shown)

    def _infinite_box(self, head, x):
        """The error for a box past float32 from finite head inputs, with what made it so."""
        peak = float(np.abs(x).max())
        if peak > 50:  # exp(50) * an anchor: boxes 1e21 times the image; trained heads stay within about 20
            damaged = damaged_parameters(self.model, huge=HUGE_PARAMETER)
            if damaged is not None:
                return damaged
            cause = (f"layer {head.index - 1} outputs values up to {peak:.3g}, far past a trained model's: "
                     "damaged weights, or weights for another cfg?")
        else:
            cause = (f"anchors= (up to {float(np.abs(head.anchors).max()):.3g}) or scale_x_y={head.scale_x_y:g} "
                     "is far too large")
        return ModelError.at_layer(self.model.layers[head.index], f": a box it decodes is NaN or inf in image "
                                   f"pixels: {cause}", expected="finite boxes", found="NaN or inf")


def detect(model, image, thresh=THRESH, nms=NMS, *, names=None, letterbox=None, threads=None, channels="bgr",
           backend=NUMBA, precision=F32):
    """``Model.detect``: detections on one image (a path, encoded bytes, a binary file object or
    an array in ``channels`` order), or a list of lists for a list of them."""
    from .images import load_image

    detector = Detector(model, names=names, thresh=thresh, nms=nms, letterbox=letterbox, threads=threads,
                        backend=backend, precision=precision)
    if cache_is_cold():  # the first run after installing: compile the kernels as prepare does, faster
        detector.prepare()
    if isinstance(image, (list, tuple)):
        return detector.detect_many(list(image), channels=channels)
    return detector.detect(load_image(image, channels))
