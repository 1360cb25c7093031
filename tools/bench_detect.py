"""Benchmark: `darkfold detect` over a folder of images vs OpenCV 4.14 running the same pipeline.

    python tools/bench_detect.py [FOLDER] [--cfg CFG --weights WEIGHTS] [--threads N] [--repeat N] [--json]

Without FOLDER it uses the repository's data/ (the sample images); without --cfg, the bundled
YOLOv3-tiny. Both pipelines take every image of FOLDER, in the same process, interleaved round
by round after warm-up rounds (see tools/_bench.py); one round runs a pipeline once over the
whole folder, the images already in the page cache:

  darkfold   darkfold.images.read_image, then Detector.detect: Darknet's resize (or letterbox),
             Model.forward (darkfold's engine, default threads), decoding of every head,
             per-class NMS, Detection objects.
  darkfold-onnxruntime, darkfold-openvino-f32, darkfold-openvino-bf16: the same pipeline, the
             forward pass on that backend (Detector(backend=, precision=)), where installed;
             bf16 is skipped, saying so, on a CPU without it (backends.has_bf16).
  opencv     the peer, the pipeline OpenCV's samples run: cv2.imread, cv2.dnn.blobFromImage
             (1/255, network size, swapRB), Net.forward of the [yolo]/[region] outputs of
             readNetFromDarknet (default CPU backend and settings), then for every class the
             rows above the threshold and cv2.dnn.NMSBoxes.

A second part runs both with 4 images to a forward pass (Detector.detect_many, which
Model.detect of a list uses; blobFromImages for OpenCV): the throughput for a folder.

A last part compares darkfold with itself: darkfold.predict over a video (mp4v, as darkfold
writes them: the images of FOLDER at the first one's size, 4 times over) against predict over
a folder holding the same decoded frames as JPEG files (quality 95), nothing written. Goal:
video frames/s >= 0.95x the folder's images/s, the video's frames being decoded on their own
thread and detected 4 to a forward pass as a folder's images are.

With --dask SCHEDULER (local, local:N or a scheduler's address) it runs only this instead:
darkfold.predict over the images of FOLDER, repeated to at least 200 inputs, on the Dask
cluster (predict's client=: tasks of darkfold.cluster.IMAGES images, one detector per
worker) against darkfold.predict in this one process, nothing written, interleaved rounds
after warm-up rounds (the first compiles and builds the workers' detectors). Goal on one
machine: ~1x (the same CPUs, shared differently); on a cluster, the workers' CPUs over this
machine's. It also times Dask's own cost: a round of as many empty tasks as the run sends,
per image. Report the min of the per-round ratios as well as the median: the CPUs may be shared.

--threads N gives both the same number of threads (Model.forward's threads=, cv2.setNumThreads);
by default each uses every CPU.

How to read it: "images/s" is images over the median round time; a ratio is a darkfold path's
images/s over OpenCV's (above 1 = darkfold is faster; goal >= 1.0), with the min-max of the
per-round ratios in brackets. A second part times the pre- and post-processing alone (everything
but the forward pass), on network outputs computed beforehand, to show what detection adds
around the engine; a third the forward pass alone.
The report says how much CPU other processes used meanwhile; above 10% it is marked DISTURBED.
"""

import argparse
import functools
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench

_bench.use_repo_darkfold()

import cv2
import numpy as np

import darkfold
from darkfold import backends, images
from darkfold.detect import BATCH, Detector

THRESH, NMS = 0.25, 0.45
# darkfold's paths: (backend, precision). "darkfold" is its numba engine, the default.
PATHS = {
    "darkfold": ("numba", "f32"),
    "darkfold-onnxruntime": ("onnxruntime", "f32"),
    "darkfold-openvino-f32": ("openvino", "f32"),
    "darkfold-openvino-bf16": ("openvino", "bf16"),
}


def installed(backend):
    """Whether darkfold can open ``backend`` here: numba always, another when its package and onnx are."""
    return backend == "numba" or backends.BACKENDS[backend].installed()


class OpenCVPipeline:
    """OpenCV's YOLO detection: blobFromImage, Net.forward, threshold and NMSBoxes per class."""

    def __init__(self, cfg, weights, net_w, net_h):
        self.net = cv2.dnn.readNetFromDarknet(cfg, weights)
        self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        self.outputs = self.net.getUnconnectedOutLayersNames()
        self.size = (net_w, net_h)

    def forward(self, image):
        self.net.setInput(cv2.dnn.blobFromImage(image, 1 / 255, self.size, swapRB=True, crop=False))
        return self.net.forward(self.outputs)

    @staticmethod
    def postprocess(outputs, width, height):
        rows = np.concatenate(outputs)
        boxes = np.stack([(rows[:, 0] - rows[:, 2] / 2) * width, (rows[:, 1] - rows[:, 3] / 2) * height,
                          rows[:, 2] * width, rows[:, 3] * height], axis=1)
        found = []
        for class_id in np.flatnonzero((rows[:, 5:] > THRESH).any(axis=0)):
            scores = rows[:, 5 + class_id]
            for i in cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), THRESH, NMS):
                found.append((int(class_id), float(scores[i]), boxes[i]))
        return found

    def detect(self, image):
        return self.postprocess(self.forward(image), image.shape[1], image.shape[0])

    def detect_many(self, images):
        """One forward pass for the batch: blobFromImages; each output is (batch, rows, 85)."""
        self.net.setInput(cv2.dnn.blobFromImages(images, 1 / 255, self.size, swapRB=True, crop=False))
        outputs = self.net.forward(self.outputs)
        return [self.postprocess([output[k] for output in outputs], image.shape[1], image.shape[0])
                for k, image in enumerate(images)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", metavar="FOLDER", default=os.path.join(_bench.REPO, "data"),
                        help="folder of images (default: the repository's data/)")
    parser.add_argument("--cfg", metavar="CFG", help="Darknet .cfg (default: the bundled YOLOv3-tiny)")
    parser.add_argument("--weights", metavar="WEIGHTS", help="Darknet .weights matching CFG")
    parser.add_argument("--threads", type=int, metavar="N", help="threads for both (default: each its own default)")
    parser.add_argument("--repeat", type=int, default=0, metavar="N",
                        help="timed rounds (default: as many as fit in ~30 s, 5 to 50)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a report")
    parser.add_argument("--dask", metavar="SCHEDULER",
                        help="compare predict on this Dask cluster (local, local:N, tcp://host:8786) with one process")
    args = parser.parse_args(argv)
    if (args.cfg is None) != (args.weights is None):
        parser.error("give both --cfg and --weights, or neither")
    cfg = args.cfg or darkfold.DEFAULT_CFG
    weights = args.weights or darkfold.DEFAULT_WEIGHTS
    paths = [item.path for item in images.list_inputs([args.folder]) if item.kind == "image"]
    if not paths:
        parser.error(f"{args.folder}: no images")

    model = darkfold.load(cfg, weights)
    if args.dask:
        return _dask(args, model, paths)
    detectors = {name: Detector(model, thresh=THRESH, nms=NMS, threads=args.threads, backend=backend,
                                precision=precision)
                 for name, (backend, precision) in PATHS.items() if installed(backend)}
    for name, each in list(detectors.items()):
        each.prepare()  # numba's kernels, or the backend's session: before the rounds
        session = backends.session_for(model, each.backend, each.precision, args.threads)
        if session is not None and session.precision != each.precision:  # no bf16 here (backends.has_bf16)
            print(f"{name}: skipped: this CPU lacks AVX512_BF16 and AMX, so OpenVINO would run float32",
                  file=sys.stderr)
            del detectors[name]
    detector = detectors["darkfold"]
    if args.threads:
        cv2.setNumThreads(args.threads)
    opencv = OpenCVPipeline(cfg, weights, model.net.width, model.net.height)
    results = {"cfg": cfg, "weights": weights, "folder": args.folder, "images": len(paths),
               "opencv_version": cv2.__version__, "threads": args.threads}
    cases = {name: functools.partial(lambda d: [d.detect(images.read_image(p)) for p in paths], each)
             for name, each in detectors.items()}
    cases["opencv"] = lambda: [opencv.detect(cv2.imread(p)) for p in paths]
    results["pipeline"] = _measure(cases, args.repeat, len(paths))

    # The same, BATCH images to a forward pass on both sides (Model.detect of a list does this).
    chunks = [paths[i:i + BATCH] for i in range(0, len(paths), BATCH)]
    batched = {name: functools.partial(lambda d: [d.detect_many(chunk, batch=BATCH) for chunk in chunks], each)
               for name, each in detectors.items()}
    batched["opencv"] = lambda: [opencv.detect_many([cv2.imread(p) for p in chunk]) for chunk in chunks]
    results["pipeline_batched"] = _measure(batched, args.repeat, len(paths))

    # Pre- and post-processing alone: the network outputs are computed once, beforehand.
    loaded = [images.read_image(p) for p in paths]
    opencv_outputs = [opencv.forward(image) for image in loaded]
    head_inputs = [_head_inputs(detector, image) for image in loaded]

    def darkfold_around():
        return [(detector.preprocess(image), detector.decode(outputs, image.shape[1], image.shape[0]))
                for image, outputs in zip(loaded, head_inputs)]

    def opencv_around():
        return [(cv2.dnn.blobFromImage(image, 1 / 255, opencv.size, swapRB=True, crop=False),
                 opencv.postprocess(outputs, image.shape[1], image.shape[0]))
                for image, outputs in zip(loaded, opencv_outputs)]

    results["around_forward"] = _measure({"darkfold": darkfold_around, "opencv": opencv_around},
                                         args.repeat, len(paths))

    # The forward pass alone, on the inputs computed beforehand (each its own preprocessing).
    inputs = [detector.preprocess(image) for image in loaded]
    blobs = [cv2.dnn.blobFromImage(image, 1 / 255, opencv.size, swapRB=True, crop=False) for image in loaded]

    def opencv_forward():
        outputs = []
        for blob in blobs:
            opencv.net.setInput(blob)
            outputs.append(opencv.net.forward(opencv.outputs))
        return outputs

    forward = {name: functools.partial(lambda d: [d.model.forward(x, threads=d.threads, backend=d.backend,
                                                                  precision=d.precision) for x in inputs], each)
               for name, each in detectors.items()}
    results["forward"] = _measure({**forward, "opencv": opencv_forward}, args.repeat, len(paths))
    with tempfile.TemporaryDirectory() as folder:
        video, frames = _video_and_frames(loaded, folder)
        cases = {"video": lambda: list(darkfold.predict(video, model, threads=args.threads)),
                 "folder": lambda: list(darkfold.predict(frames, model, threads=args.threads))}
        results["video"] = _measure(cases, args.repeat, len(os.listdir(frames)), subject="video", peer="folder")
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    _report(results)
    return 0


def _dask(args, model, paths):
    """darkfold.predict on the cluster ``args.dask`` vs in this process, over ``paths`` repeated
    to at least 200 inputs."""
    # Imported here, not at the top: darkfold.cluster imports dask[distributed], an optional extra
    # that the tool's other parts do not need.
    from darkfold import cluster

    inputs = paths * -(-200 // len(paths))
    client, owned = cluster.connect(args.dask)
    try:
        pids = list(client.run(os.getpid).values()) if args.dask.startswith(cluster.LOCAL) else []
        workers = client.scheduler_info()["workers"]
        cases = {"cluster": lambda: list(darkfold.predict(inputs, model, threads=args.threads, client=client)),
                 "one process": lambda: list(darkfold.predict(inputs, model, threads=args.threads))}
        results = {"cfg": model.cfg.path, "images": len(inputs), "scheduler": args.dask, "workers": len(workers),
                   "worker_threads": sum(worker["nthreads"] for worker in workers.values()),
                   "images_per_task": cluster.IMAGES}
        results["predict"] = _measure(cases, args.repeat, len(inputs), subject="cluster", peer="one process",
                                      pids=pids)
        tasks = -(-len(inputs) // cluster.IMAGES)
        empty = {"empty tasks": lambda: client.gather([client.submit(_nothing, k, pure=False) for k in range(tasks)]),
                 "nothing": lambda: None}
        results["empty_tasks"] = {"tasks": tasks, "seconds": _bench.stats(
            _bench.rounds(empty, repeat=max(5, args.repeat), warmup=1)["empty tasks"])}
    finally:
        for thing in owned:
            thing.close()
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    part = results["predict"]
    print(f"darkfold.predict on a Dask cluster ({results['scheduler']}: {results['workers']} workers, "
          f"{results['worker_threads']} threads) vs one process: {results['images']} images of {args.folder}, "
          f"{results['images_per_task']} a task; model {results['cfg']}")
    _print_part("", part, ("cluster", "one process"))
    empty = results["empty_tasks"]
    print(f"Dask's own cost: {empty['tasks']} empty tasks take {empty['seconds']['median'] * 1e3:.1f} ms "
          f"(min {empty['seconds']['min'] * 1e3:.1f}): {empty['seconds']['median'] / results['images'] * 1e3:.2f} ms "
          "an image")
    return 0


def _nothing(number):
    return number


def _video_and_frames(loaded, folder, repeat=4):
    """An mp4v video of the images ``loaded`` (resized to the first one's size), ``repeat`` times
    over, and a folder holding its decoded frames as JPEG files: ``(video path, folder path)``."""
    height, width = loaded[0].shape[:2]
    video = os.path.join(folder, "frames.mp4")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"mp4v"), 25, (width, height))
    for image in loaded * repeat:
        writer.write(cv2.resize(image, (width, height)))
    writer.release()
    frames = os.path.join(folder, "frames")
    os.mkdir(frames)
    capture = cv2.VideoCapture(video)
    number = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        cv2.imwrite(os.path.join(frames, f"{number:04d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
        number += 1
    return video, frames


def _head_inputs(detector, image):
    """What Detector.decode takes: the forward pass's outputs for the image."""
    return detector.model.forward(detector.preprocess(image), threads=detector.threads)


def _measure(cases, repeat, count, subject="darkfold", peer="opencv", pids=()):
    if repeat <= 0:
        probe = _bench.rounds(cases, repeat=1, warmup=1)
        repeat = max(5, min(50, int(30 / sum(t[0] for t in probe.values()))))
    with _bench.OtherLoad(pids) as load:
        times = _bench.rounds(cases, repeat=repeat, warmup=2)
    return {"rounds": repeat, "other_load": load.share, "load": load.describe(),
            "seconds": {name: _bench.stats(values) for name, values in times.items()}, "times": times,
            "images_per_s": {name: count / _bench.stats(values)["median"] for name, values in times.items()},
            # each subject's images/s over the peer's = the peer's time over the subject's
            "ratio": _bench.ratio(times[peer], times[subject]),
            "ratios": {name: _bench.ratio(times[peer], values) for name, values in times.items() if name != peer}}


def _report(results):
    print(f"darkfold detect vs OpenCV {results['opencv_version']}: {results['images']} images of "
          f"{results['folder']}")
    print(f"model: {results['cfg']}; threads: {results['threads'] or 'each its default'}")
    parts = [("pipeline", "whole pipeline: read, preprocess, forward, decode, NMS"),
             ("pipeline_batched", f"the same, {BATCH} images to a forward pass on both sides (blobFromImages)"),
             ("around_forward", "pre- and post-processing alone (forward computed beforehand)"),
             ("forward", "the forward pass alone (Model.forward vs Net.forward)")]
    for key, title in parts:
        _print_part(f"\n{title}: ", results[key], list(results[key]["times"]), peer_name="OpenCV")
    _print_part("\ndarkfold.predict over a video vs the same frames as a folder of JPEGs: ", results["video"],
                ("video", "folder"), unit="frames")


def _print_part(title, part, names, unit="images", peer_name=None):
    """A part's rounds, the CPU use of others, each case's rate, and each case's ratio to the
    peer (``part["ratios"]``) or else the first case's to the second."""
    print(f"{title}{part['rounds']} interleaved rounds; {part['load']}")
    width = max(9, *map(len, names))
    for name in names:
        print(f"  {name:{width}s} {part['images_per_s'][name]:8.1f} {unit}/s   round {_bench.fmt_ms(part['times'][name])}")
    for name, ratio in (part.get("ratios") or {names[0]: part["ratio"]}).items():
        print(f"  {name}/{peer_name or names[1]} {unit}/s = {_bench.fmt_ratio(ratio)}")


if __name__ == "__main__":
    raise SystemExit(main())
