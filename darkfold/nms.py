"""Per-class greedy NMS as box.c computes it (do_nms_sort, diounms_sort), compiled: detect.nms's kernels.

Darknet compares every box with every later one in each class: O(n^2) per class, which makes
NMS outlast the forward pass many times over on an untrained or barely trained model, whose
every box clears the threshold in every class. Here the pairs that could suppress one another are found once for all classes,
by sweeping the boxes in order of their left edge (a box can only overlap those that start
before its right edge), and each class runs the greedy pass over those pairs alone. Two boxes
that do not overlap have IoU 0 and DIoU at most 0, which never exceeds a threshold of 0 or
more; every other pair is compared with box.c's own formulas, so the result is Darknet's.
"""

import numpy as np

from .jit import f32, kernel


@kernel
def box_edges(boxes, i):
    """``(left, right, top, bottom)`` of row i of (x, y, w, h) ``boxes``, as box.c's overlap computes them."""
    x, y, w, h = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
    return x - w / 2, x + w / 2, y - h / 2, y + h / 2


@kernel
def box_iou(boxes, i, j):
    """box.c box_iou of rows i and j of (x, y, w, h) ``boxes``; 0 when they do not overlap."""
    a_left, a_right, a_top, a_bottom = box_edges(boxes, i)
    b_left, b_right, b_top, b_bottom = box_edges(boxes, j)
    inter_w = min(a_right, b_right) - max(a_left, b_left)
    inter_h = min(a_bottom, b_bottom) - max(a_top, b_top)
    if inter_w < 0 or inter_h < 0:
        return f32(0)
    inter = inter_w * inter_h
    union = boxes[i, 2] * boxes[i, 3] + boxes[j, 2] * boxes[j, 3] - inter
    if inter == 0 or union == 0:
        return f32(0)
    return inter / union


@kernel
def box_diou(boxes, i, j, beta):
    """box.c box_diou: IoU minus (centre distance^2 / enclosing diagonal^2) ** beta."""
    iou = box_iou(boxes, i, j)
    a_left, a_right, a_top, a_bottom = box_edges(boxes, i)
    b_left, b_right, b_top, b_bottom = box_edges(boxes, j)
    enclosing_w = max(a_right, b_right) - min(a_left, b_left)
    enclosing_h = max(a_bottom, b_bottom) - min(a_top, b_top)
    diagonal = enclosing_w * enclosing_w + enclosing_h * enclosing_h
    if diagonal == 0:
        return iou
    dx, dy = boxes[i, 0] - boxes[j, 0], boxes[i, 1] - boxes[j, 1]
    return iou - ((dx * dx + dy * dy) / diagonal) ** beta


@kernel
def overlap(boxes, i, j, diou, beta):
    """What NMS compares with its threshold: DIoU with exponent ``beta``, or IoU."""
    return box_diou(boxes, i, j, beta) if diou else box_iou(boxes, i, j)


@kernel
def overlap_graph(boxes, thresh, diou, beta):
    """The pairs of rows of ``boxes`` whose ``overlap`` exceeds ``thresh`` (at least 0), as
    adjacency lists: row i's neighbours are ``neighbours[starts[i]:starts[i + 1]]``.

    The rows are swept by left edge; from each, the sweep stops at the first row starting
    at or past its right edge (neither it nor any later row can overlap it), and skips rows
    that end above its top or start below its bottom.
    """
    n = boxes.shape[0]
    edges = np.empty((n, 4))
    for i in range(n):
        edges[i, 0], edges[i, 1], edges[i, 2], edges[i, 3] = box_edges(boxes, i)
    by_left = np.argsort(edges[:, 0])
    edges = edges[by_left]  # row a: the edges of box by_left[a]
    pairs = np.empty((max(n, 16), 2), np.int64)
    count = 0
    for a in range(n):
        right, top, bottom = edges[a, 1], edges[a, 2], edges[a, 3]
        for b in range(a + 1, n):
            if edges[b, 0] >= right:
                break
            if edges[b, 2] >= bottom or top >= edges[b, 3]:
                continue
            i, j = by_left[a], by_left[b]
            if overlap(boxes, i, j, diou, beta) > thresh:
                if count == pairs.shape[0]:
                    grown = np.empty((2 * count, 2), np.int64)
                    for p in range(count):  # a loop: a slice assignment compiles numba's error formatting, seconds
                        grown[p, 0], grown[p, 1] = pairs[p, 0], pairs[p, 1]
                    pairs = grown
                pairs[count, 0], pairs[count, 1] = i, j
                count += 1
    starts = np.zeros(n + 1, np.int64)
    for p in range(count):
        starts[pairs[p, 0] + 1] += 1
        starts[pairs[p, 1] + 1] += 1
    for i in range(n):
        starts[i + 1] += starts[i]
    filled = starts[:n].copy()
    neighbours = np.empty(2 * count, np.int64)
    for p in range(count):
        i, j = pairs[p, 0], pairs[p, 1]
        neighbours[filled[i]] = j
        filled[i] += 1
        neighbours[filled[j]] = i
        filled[j] += 1
    return starts, neighbours


@kernel
def suppress(order, probs, column, starts, neighbours, rank):
    """Greedy NMS of one class over ``overlap_graph``'s pairs: boxes in ``order`` (falling
    probability); each still standing zeroes ``probs[:, column]`` of every later box it
    overlaps, as do_nms_sort and diounms_sort do. ``rank``: scratch, one entry per box."""
    rank[:] = -1
    for a in range(order.shape[0]):
        rank[order[a]] = a
    for a in range(order.shape[0]):
        i = order[a]
        if probs[i, column] == 0:
            continue
        for e in range(starts[i], starts[i + 1]):
            j = neighbours[e]
            if rank[j] > a:
                probs[j, column] = 0
