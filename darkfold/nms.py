"""Per-class greedy NMS as box.c computes it (do_nms_sort, diounms_sort): detect.nms's kernel.
O(n^2) in the candidates, so compiled: an untrained model can leave tens of thousands."""

from .jit import f32, kernel


@kernel
def box_iou(boxes, i, j):
    """box.c box_iou of rows i and j of (x, y, w, h) ``boxes``; 0 when they do not overlap."""
    ax, ay, aw, ah = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
    bx, by, bw, bh = boxes[j, 0], boxes[j, 1], boxes[j, 2], boxes[j, 3]
    inter_w = min(ax + aw / 2, bx + bw / 2) - max(ax - aw / 2, bx - bw / 2)
    inter_h = min(ay + ah / 2, by + bh / 2) - max(ay - ah / 2, by - bh / 2)
    if inter_w < 0 or inter_h < 0:
        return f32(0)
    inter = inter_w * inter_h
    union = aw * ah + bw * bh - inter
    if inter == 0 or union == 0:
        return f32(0)
    return inter / union


@kernel
def box_diou(boxes, i, j, beta):
    """box.c box_diou: IoU minus (centre distance^2 / enclosing diagonal^2) ** beta."""
    iou = box_iou(boxes, i, j)
    ax, ay, aw, ah = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
    bx, by, bw, bh = boxes[j, 0], boxes[j, 1], boxes[j, 2], boxes[j, 3]
    enclosing_w = max(ax + aw / 2, bx + bw / 2) - min(ax - aw / 2, bx - bw / 2)
    enclosing_h = max(ay + ah / 2, by + bh / 2) - min(ay - ah / 2, by - bh / 2)
    diagonal = enclosing_w * enclosing_w + enclosing_h * enclosing_h
    if diagonal == 0:
        return iou
    distance = (ax - bx) * (ax - bx) + (ay - by) * (ay - by)
    return iou - (distance / diagonal) ** beta


@kernel
def nms_class(boxes, order, probs, column, thresh, diou, beta):
    """Greedy NMS of one class: boxes in ``order`` (falling probability); each still standing
    zeroes ``probs[:, column]`` of every later box overlapping it by more than ``thresh``
    (IoU, or DIoU with exponent ``beta``): do_nms_sort and diounms_sort in box.c."""
    for a in range(order.shape[0]):
        i = order[a]
        if probs[i, column] == 0:
            continue
        for b in range(a + 1, order.shape[0]):
            j = order[b]
            if probs[j, column] == 0:
                continue
            overlap = box_diou(boxes, i, j, beta) if diou else box_iou(boxes, i, j)
            if overlap > thresh:
                probs[j, column] = 0
