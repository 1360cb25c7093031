"""darkfold.nms: box.c's per-class NMS, compiled apart from the engine's kernels."""

import numpy as np
import pytest

from conftest import modules_loaded_by
from darkfold.nms import box_diou, box_iou, nms_class


def test_nms_loads_neither_the_engine_nor_blas():
    script = ("import numpy as np\nfrom darkfold.nms import nms_class\n"
              "boxes = np.array([[.5, .5, .2, .2], [.5, .5, .2, .2]], np.float32)\n"
              "probs = np.array([[.9], [.8]], np.float32)\n"
              "nms_class(boxes, np.arange(2), probs, 0, np.float32(.45), False, np.float32(.6))\n"
              "assert probs[1, 0] == 0")
    assert modules_loaded_by(script, "darkfold.nms", "darkfold.blas", "darkfold.engine") == {"darkfold.nms"}


def test_diou_is_iou_less_the_normalised_centre_distance():
    boxes = np.array([[0.5, 0.5, 0.4, 0.1], [0.55, 0.5, 0.4, 0.1]], np.float32)
    assert box_iou(boxes, 0, 1) == pytest.approx(7 / 9, abs=1e-6)
    # centre distance^2 0.0025 over the enclosing box's diagonal^2 0.45^2 + 0.1^2
    assert box_diou(boxes, 0, 1, 1.0) == pytest.approx(7 / 9 - 0.0025 / 0.2125, abs=1e-6)


def test_a_suppressed_box_no_longer_suppresses_others():
    """Greedy: box 1 is removed by box 0, so box 2, which only box 1 overlaps, stays."""
    boxes = np.array([[0.40, 0.5, 0.2, 0.2], [0.50, 0.5, 0.2, 0.2], [0.60, 0.5, 0.2, 0.2]], np.float32)
    probs = np.array([[0.9], [0.8], [0.7]], np.float32)
    nms_class(boxes, np.arange(3), probs, 0, np.float32(0.3), False, np.float32(0.6))
    np.testing.assert_array_equal(probs[:, 0], np.array([0.9, 0, 0.7], np.float32))
