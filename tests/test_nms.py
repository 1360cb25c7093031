"""darkfold.nms: box.c's per-class NMS, compiled apart from the engine's kernels, pruned to the
pairs that overlap and still Darknet's result."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import modules_loaded_by
from darkfold.detect import nms
from darkfold.nms import box_diou, box_iou, overlap, overlap_graph, suppress


def test_nms_loads_neither_the_engine_nor_blas():
    script = ("import numpy as np\nfrom darkfold.nms import overlap_graph, suppress\n"
              "boxes = np.array([[.5, .5, .2, .2], [.5, .5, .2, .2]], np.float32)\n"
              "probs = np.array([[.9], [.8]], np.float32)\n"
              "starts, neighbours = overlap_graph(boxes, np.float32(.45), False, np.float32(.6))\n"
              "suppress(np.arange(2), probs, 0, starts, neighbours, np.empty(2, np.int64))\n"
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
    np.testing.assert_array_equal(nms(boxes, probs, 0.3)[:, 0], np.array([0.9, 0, 0.7], np.float32))


def test_the_graph_holds_the_overlapping_pairs_only():
    boxes = np.array([[0.1, 0.1, 0.1, 0.1], [0.9, 0.9, 0.1, 0.1], [0.12, 0.1, 0.1, 0.1], [0.1, 0.9, 0.1, 0.1]],
                     np.float32)
    starts, neighbours = overlap_graph(boxes, np.float32(0.45), False, np.float32(0.6))
    assert [sorted(neighbours[starts[i]:starts[i + 1]]) for i in range(4)] == [[2], [], [0], []]


def darknet_nms(boxes, probs, thresh, diou, beta):
    """do_nms_sort / diounms_sort as box.c loops: every class, every box against every later one."""
    probs = probs.copy()
    thresh = float(thresh)  # compared in double, as the kernels compare it (numpy would round to float32)
    for k in range(probs.shape[1]):
        order = np.argsort(-probs[:, k], kind="stable")
        for a, i in enumerate(order):
            if probs[i, k] == 0:
                continue
            for j in order[a + 1:]:
                if overlap(boxes, i, j, diou, beta) > thresh:
                    probs[j, k] = 0
    return probs


# Few distinct values, so that boxes coincide, touch edge to edge, have zero width and tie in probability.
coordinate = st.sampled_from([0.0, 0.1, 0.2, 0.25, 0.3, 0.5, 0.7, 1.0]) | st.floats(-0.5, 1.5, width=32)
size = st.sampled_from([0.0, 0.1, 0.2, 0.4, 1.0]) | st.floats(0, 2, width=32)
probability = st.sampled_from([0.0, 0.0, 0.3, 0.5, 0.9]) | st.floats(0, 1, width=32)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 40).flatmap(lambda n: st.tuples(
    st.lists(st.tuples(coordinate, coordinate, size, size), min_size=n, max_size=n),
    st.lists(st.lists(probability, min_size=3, max_size=3), min_size=n, max_size=n))),
    st.sampled_from([0.0, 0.3, 0.45, 1.0]) | st.floats(0, 1), st.sampled_from(["default", "diounms", "greedynms"]),
    st.sampled_from([0.6, 1.0, 0.0, 2.5]))
def test_pruned_nms_gives_exactly_darknets_unpruned_result(case, thresh, kind, beta):
    boxes, probs = (np.array(values, np.float32) for values in case)
    diou = kind != "default"
    expected = darknet_nms(boxes, probs, np.float32(thresh), diou, np.float32(0.6 if kind == "greedynms" else beta))
    np.testing.assert_array_equal(nms(boxes, probs, thresh, kind, beta), expected)


def test_suppress_walks_the_graph_in_order_of_falling_probability():
    boxes = np.array([[0.40, 0.5, 0.2, 0.2], [0.50, 0.5, 0.2, 0.2], [0.60, 0.5, 0.2, 0.2]], np.float32)
    starts, neighbours = overlap_graph(boxes, np.float32(0.3), False, np.float32(0.6))
    probs = np.array([[0.7], [0.8], [0.9]], np.float32)
    suppress(np.array([2, 1, 0]), probs, 0, starts, neighbours, np.empty(3, np.int64))
    np.testing.assert_array_equal(probs[:, 0], np.array([0.7, 0, 0.9], np.float32))
