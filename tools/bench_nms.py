"""Benchmark: NMS on an untrained model, darkfold's pruned sweep vs box.c's loop over every pair.

    python tools/bench_nms.py [--cfg CFG] [--image IMAGE] [--repeat N] [--json]

An untrained or barely trained model (an early checkpoint of a fine-tuning run) gives every
box a probability above the threshold in every class: yolov4 at 608 with random weights has
about 22,600 boxes, 7,000 to 11,000 of them standing in each of the 80 classes. Darknet's
do_nms_sort compares each standing box with every later one, class by class; darkfold finds
the overlapping pairs once (a sweep by left edge, see darkfold/nms.py) and walks them per class.

Without --cfg: cfg/yolov4.cfg with random weights (He-scaled, as tools/bench.py writes them,
in a temporary folder), on data/dog.jpg. The forward pass runs once; then darkfold's NMS
(darkfold.detect.nms) --repeat times after one warm-up call, and the unpruned loop, compiled
the same way, once. Both must give identical probabilities.

How to read it: "darkfold NMS" is the median time of the whole per-class NMS; "unpruned"
is box.c's loop; the ratio is unpruned time over darkfold's (above 1 = darkfold is faster).
Goal: darkfold's NMS of yolov4 with random weights within 3 s on the project's machine.
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench

_bench.use_repo_darkfold()

import numpy as np
from bench import write_random_weights

import darkfold
from darkfold import images
from darkfold.detect import NMS, THRESH, Detector, decode_yolo, nms
from darkfold.jit import kernel
from darkfold.nms import overlap


@kernel
def unpruned_class(boxes, order, probs, column, thresh, diou, beta):
    """do_nms_sort / diounms_sort for one class: every standing box against every later one."""
    for a in range(order.shape[0]):
        i = order[a]
        if probs[i, column] == 0:
            continue
        for b in range(a + 1, order.shape[0]):
            j = order[b]
            if probs[j, column] != 0 and overlap(boxes, i, j, diou, beta) > thresh:
                probs[j, column] = 0


def unpruned(boxes, probs, thresh, kind, beta):
    diou = kind in ("greedynms", "diounms")
    beta = 0.6 if kind == "greedynms" else beta
    probs = probs.copy()
    for k in np.flatnonzero((probs > 0).sum(axis=0) > 1):
        candidates = np.flatnonzero(probs[:, k])
        order = candidates[np.argsort(-probs[candidates, k], kind="stable")]
        unpruned_class(boxes, order, probs, k, np.float32(thresh), diou, np.float32(beta))
    return probs


def head_outputs(detector, image):
    """Boxes and probabilities of every [yolo] head, before NMS, as Detector.decode gathers them."""
    outputs = detector.model.forward(detector.preprocess(image))
    net = detector.model.net
    boxes, probs = [], []
    for head in detector.heads:
        b, p = decode_yolo(np.asarray(outputs[head.index - 1])[0], head, net.width, net.height, THRESH)
        boxes.append(b)
        probs.append(p)
    return np.concatenate(boxes), np.concatenate(probs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", default=os.path.join(_bench.REPO, "cfg", "yolov4.cfg"),
                        help="Darknet .cfg (default: cfg/yolov4.cfg), given random weights")
    parser.add_argument("--image", default=os.path.join(_bench.REPO, "data", "dog.jpg"))
    parser.add_argument("--repeat", type=int, default=5, metavar="N", help="timed calls of darkfold's NMS")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a report")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        weights = write_random_weights(args.cfg, os.path.join(folder, "random.weights"))
        detector = Detector(darkfold.load(args.cfg, weights))
        boxes, probs = head_outputs(detector, images.read_image(args.image))
    last = detector.heads[-1]

    def run():
        return nms(boxes, probs, NMS, last.nms_kind, last.beta_nms)

    run()  # compiles or loads the kernels
    with _bench.OtherLoad() as load:
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            kept = run()
            times.append(time.perf_counter() - started)
        unpruned(boxes[:8], probs[:8], NMS, last.nms_kind, last.beta_nms)  # compile
        started = time.perf_counter()
        expected = unpruned(boxes, probs, NMS, last.nms_kind, last.beta_nms)
        reference = time.perf_counter() - started
    standing = (probs > 0).sum(axis=0)
    results = {"cfg": args.cfg, "image": args.image, "nms_kind": last.nms_kind, "boxes": len(boxes),
               "standing_per_class": [int(standing.min()), int(standing.max())], "classes": probs.shape[1],
               "darkfold_seconds": _bench.stats(times), "unpruned_seconds": reference,
               "ratio": reference / _bench.stats(times)["median"], "identical": bool(np.array_equal(kept, expected)),
               "load": load.describe()}
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print(f"NMS of {os.path.basename(args.cfg)} with random weights on {os.path.basename(args.image)} "
          f"({results['nms_kind']}): {results['boxes']:,} boxes, {standing.min():,} to {standing.max():,} "
          f"standing in each of {results['classes']} classes; {results['load']}")
    print(f"  darkfold NMS  {_bench.fmt_ms(times)}")
    print(f"  unpruned      {reference * 1e3:8.2f} ms  (box.c's loop, compiled)")
    print(f"  unpruned / darkfold = {results['ratio']:.1f}x; identical results: {results['identical']}")
    return 0 if results["identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
