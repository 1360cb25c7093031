"""Benchmark: darkfold's forward pass on each backend vs OpenCV 4.14 DNN, and vs the GEMM floor.

    python tools/bench.py [--rows ROW ...] [--runs N] [--threads N] [--json]
    python tools/bench.py --layers ROW [--top N] [--runs N] [--threads N] [--json]

Rows (ROWS below): yolov3-tiny at 416 and 608 with batch 1, at 416 with batch 4, with
its bundled COCO weights; yolov4-tiny at 416 and yolov4 at 608 with random weights
(written to a temporary folder). Each row resizes the cfg's [net] width= and height=.

In each row darkfold on each of its backends that is installed (``model.forward(x,
backend=, precision=)``: darkfold-numba, its own engine; darkfold-onnxruntime and
darkfold-openvino-f32 / -bf16, on the model's ONNX graph built in memory, BatchNorm folded)
and OpenCV (``readNetFromDarknet``, CPU backend, default settings: layer fusion and
Winograd on, the peer's real speed) run the same input, taking turns round by round
(tools/_bench.py) after warm-up rounds.
Each case's first call (numba's kernels loaded or compiled and the engine built; a
backend's session opened) is left out of the statistics and printed apart ("first call").

The GEMM floor is the row's convolution work (2 x filters x c/groups x size^2 x out_h x
out_w x batch, summed over the conv layers) divided by the peak float32 matrix product
speed of numpy's BLAS in the same run: the larger of a multi-threaded product at the
start (2048-4096 square, best of several) and a single-threaded 2048 product run as a
third case in every round, times the threads. It is the time a convolution engine would
take if every conv were one perfectly efficient GEMM and nothing else cost anything.
It counts direct-convolution FLOPs: a Winograd 3x3 (OpenCV's, with fusion on) does
fewer multiplies and can beat it on a layer.

How to read it: a case's time over OpenCV's below 1 means it is faster; ratios of the
min times and of the medians are both printed (on a shared machine, the min is the
cleaner figure). floor/OpenCV says how close the peer is to
the floor, numba/floor how far darkfold's engine is from it (both on min times). Times are
context only: the machine is shared and noisy (10-15% run to run).

``--layers ROW`` times each of darkfold's layer steps (by wrapping ``engine.steps``)
and OpenCV's layers (``getPerfProfile``, fused layers counted under their conv) and
lists them by darkfold's time, each against that layer's GEMM floor.
"""

import argparse
import contextlib
import functools
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench

_bench.use_repo_darkfold()

import cv2
import numba
import numpy as np

import darkfold
from darkfold.runtime import engine_for

from darkfold.threads import CAN_SET_BLAS_THREADS, blas_threads

CFGS = {
    "yolov3-tiny": (darkfold.DEFAULT_CFG, darkfold.DEFAULT_WEIGHTS),
    "yolov4-tiny": (os.path.join(_bench.REPO, "cfg", "yolov4-tiny.cfg"), None),  # None: random weights
    "yolov4": (os.path.join(_bench.REPO, "cfg", "yolov4.cfg"), None),
}
ROWS = {  # name: (model, width and height, batch)
    "yolov3-tiny-416": ("yolov3-tiny", 416, 1),
    "yolov3-tiny-608": ("yolov3-tiny", 608, 1),
    "yolov3-tiny-416-b4": ("yolov3-tiny", 416, 4),
    "yolov4-tiny-416": ("yolov4-tiny", 416, 1),
    "yolov4-608": ("yolov4", 608, 1),
}
WARMUP = 2
# OpenCV names an activation after the layer after its conv (conv_5, bn_5, leaky_6).
OPENCV_ACTIVATIONS = {"leaky", "relu", "mish", "swish", "logistic", "tanh"}


# -- the machine and the floor ------------------------------------------------------------


def machine():
    cpuinfo = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as file:
        cpuinfo = file.read()
    cpu = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    return {"cpu": cpu.group(1) if cpu else platform.processor(), "cpus": os.cpu_count(),
            "avx512f": " avx512f" in cpuinfo, "python": platform.python_version(),
            "numpy": np.__version__, "numba": numba.__version__, "opencv": cv2.__version__,
            "onnxruntime": _version("onnxruntime"), "openvino": _version("openvino")}


def _version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


class Sgemm:
    """An n x n float32 matrix product with numpy's BLAS; ``best`` is its fastest speed so far, in FLOP/s."""

    def __init__(self, threads, n):
        rng = np.random.default_rng(0)
        self.a, self.b = rng.random((n, n), np.float32), rng.random((n, n), np.float32)
        self.out = np.empty((n, n), np.float32)
        self.threads, self.flops, self.best = threads, 2 * n**3, 0.0

    def __call__(self):
        with blas_threads(self.threads):
            started = time.perf_counter()
            np.matmul(self.a, self.b, out=self.out)
            self.best = max(self.best, self.flops / (time.perf_counter() - started))


def sgemm_peak(threads, sizes=(2048, 3072, 4096), repeat=3):
    """The best speed of several square float32 matrix products, in FLOP/s."""
    best = 0.0
    for n in sizes:
        sgemm = Sgemm(threads, n)
        for _ in range(repeat):
            sgemm()
        best = max(best, sgemm.best)
    return best


def conv_flops(layer, batch):
    """FLOPs of a [convolutional] layer (a multiply-add counts 2); 0 for other layers."""
    if layer.type != "convolutional":
        return 0
    return 2 * layer.filters * (layer.input.c // layer.groups) * layer.size**2 * layer.output.h * layer.output.w * batch


# -- the models ---------------------------------------------------------------------------


def resized_cfg(src, dst, size):
    """Copy the cfg ``src`` to ``dst`` with the first width= and height= of its [net] set to ``size``."""
    with open(src, encoding="utf-8") as file:
        text = file.read()
    end = re.compile(r"^\s*\[", re.MULTILINE).search(text, text.index("[net]") + 1).start()
    net = text[:end]
    for key in ("width", "height"):
        net, found = re.subn(rf"(?m)^(\s*{key}\s*=\s*)\d+", rf"\g<1>{size}", net, count=1)
        if not found:
            raise ValueError(f"{src}: no {key}= in [net]")
    with open(dst, "w", encoding="utf-8") as file:
        file.write(net + text[end:])
    return dst


def random_array(rng, param):
    """He-scaled conv weights, so activations stay O(1); rolling_variance > 0.1 as Darknet needs."""
    if param.name == "weights":
        return rng.standard_normal(param.shape, np.float32) * np.float32(math.sqrt(2 / math.prod(param.shape[1:])))
    if param.name == "rolling_variance":
        return rng.uniform(0.5, 1.5, param.shape)
    return rng.normal(0, 0.1, param.shape)  # biases, rolling_mean, scales (set by the caller)


def write_random_weights(cfg, path, seed=0, residual_gain=0.3):
    """A .weights file for ``cfg``: header 0.2.0, seen 0, then each layer's Params in order.

    BatchNorm scales make each layer's gain 1, or ``residual_gain`` on a branch that a
    [shortcut] adds, so the sums do not grow block after block (yolov4 would reach 1e6,
    and denormals would then slow both peers down).
    """
    rng = np.random.default_rng(seed)
    layers = darkfold.load(cfg).layers
    residual = {layer.index - 1 for layer in layers if layer.type == "shortcut"}
    with open(path, "wb") as file:
        file.write(np.array([0, 2, 0], "<i4").tobytes() + np.array([0], "<u8").tobytes())
        for layer in layers:
            arrays = {param.name: random_array(rng, param) for param in layer.params}
            if "scales" in arrays:
                gain = residual_gain if layer.index in residual else 1.0
                arrays["scales"] = gain * np.sqrt(arrays["rolling_variance"])
            file.writelines(arrays[param.name].astype("<f4").tobytes() for param in layer.params)
    return path


def prepare(row, folder):
    """(cfg path, weights path, batch, real weights?) for a row; files go in ``folder``."""
    model, size, batch = ROWS[row]
    src, weights = CFGS[model]
    cfg = resized_cfg(src, os.path.join(folder, f"{model}-{size}.cfg"), size)
    real = weights is not None
    if not real:
        weights = os.path.join(folder, f"{model}.weights")
        if not os.path.exists(weights):
            write_random_weights(cfg, weights)
    return cfg, weights, batch, real


# darkfold's paths: (backend, precision), each model.forward(x, backend=, precision=).
PATHS = {
    "darkfold-numba": ("numba", "f32"),
    "darkfold-onnxruntime": ("onnxruntime", "f32"),
    "darkfold-openvino-f32": ("openvino", "f32"),
    "darkfold-openvino-bf16": ("openvino", "bf16"),
}
NUMBA = "darkfold-numba"


def installed(backend):
    return backend == "numba" or importlib.util.find_spec(backend) is not None


class Peers:
    """darkfold on each installed backend and OpenCV, loaded from the same files, one input for all."""

    def __init__(self, cfg, weights, batch, threads):
        self.model = darkfold.load(cfg, weights)
        net = self.model.net
        self.x = np.random.default_rng(1).random((batch, net.channels, net.height, net.width), np.float32)
        self.threads = threads
        self.net = cv2.dnn.readNetFromDarknet(cfg, weights)
        self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        self.outputs = self.net.getUnconnectedOutLayersNames()

    def darkfold(self, backend="numba", precision="f32"):
        return self.model.forward(self.x, threads=self.threads, backend=backend, precision=precision)

    def opencv(self):
        self.net.setInput(self.x)
        return self.net.forward(self.outputs)

    def cases(self):
        cases = {name: functools.partial(self.darkfold, *path) for name, path in PATHS.items() if installed(path[0])}
        cases["opencv"] = self.opencv
        return cases


def seconds(function):
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


# -- whole networks -----------------------------------------------------------------------


def bench_row(row, folder, runs, threads, sgemm):
    cfg, weights, batch, real = prepare(row, folder)
    peers = Peers(cfg, weights, batch, threads)
    cases = peers.cases()
    first = {name: seconds(case) for name, case in cases.items()}
    if not all(np.isfinite(out).all() for out in peers.darkfold().values()):
        raise SystemExit(f"{row}: darkfold's output is not finite; the weights are unfit for timing")
    with _bench.OtherLoad() as load:
        times = _bench.rounds({**cases, "sgemm": sgemm}, repeat=runs, warmup=WARMUP)
    del times["sgemm"]
    best = {name: min(values) for name, values in times.items()}
    middle = {name: statistics.median(values) for name, values in times.items()}
    return {
        "row": row, "real_weights": real, "flops": sum(conv_flops(layer, batch) for layer in peers.model.layers),
        "first_call_s": first, "min_s": best, "median_s": middle, "other_load": load.share,
        "vs_opencv": {name: {"min": best[name] / best["opencv"], "median": middle[name] / middle["opencv"]}
                      for name in times},
    }


def add_floor(result, peak):
    """The GEMM floor of a row or a layer, and for a row its ratios to OpenCV's and darkfold-numba's min times."""
    result["floor_s"] = floor = result["flops"] / peak
    if "min_s" in result:
        best = result["min_s"]
        result.update(floor_vs_opencv=floor / best["opencv"], darkfold_vs_floor=best[NUMBA] / floor)


ROW_HEADER = (f"{'row':19s} {'weights':7s} {'GFLOP':>6s}  {'case':23s} {'min ms':>7s} {'median':>7s} "
              f"{'/OpenCV min':>11s} {'median':>7s} {'first call s':>12s}")


def format_row(r):
    load = "?" if r["other_load"] is None else f"{100 * r['other_load']:.0f}%"
    lines = []
    for k, name in enumerate(r["min_s"]):
        head = (f"{r['row']:19s} {'real' if r['real_weights'] else 'random':7s} {r['flops'] / 1e9:6.2f}" if k == 0
                else " " * 34)
        ratio = r["vs_opencv"][name]
        lines.append(f"{head}  {name:23s} {r['min_s'][name] * 1e3:7.1f} {r['median_s'][name] * 1e3:7.1f} "
                     f"{ratio['min']:10.2f}x {ratio['median']:6.2f}x {r['first_call_s'][name]:12.2f}")
    fastest = min((name for name in r["min_s"] if name != "opencv"), key=r["min_s"].get)
    lines.append(f"{'':34s}  fastest: {fastest}; floor/OpenCV {r['floor_vs_opencv']:.2f}x, numba/floor "
                 f"{r['darkfold_vs_floor']:.2f}x; other load {load}")
    return "\n".join(lines)


# -- layer by layer -----------------------------------------------------------------------


class TimedStep:
    """Stands in for an engine step: runs it and appends its time to ``times``."""

    def __init__(self, step, times):
        self.step, self.times = step, times

    def __getattr__(self, name):  # alias, reads_planes, ...: the step's own
        return getattr(self.step, name)

    def __call__(self, *args):
        started = time.perf_counter()
        self.step(*args)
        self.times.append(time.perf_counter() - started)


def opencv_layer_times(net, count):
    """Seconds per Darknet layer index in OpenCV's last forward (fused parts count 0)."""
    times = [0.0] * count
    _, ticks = net.getPerfProfile()
    for name, tick in zip(net.getLayerNames(), ticks.ravel()):
        match = re.fullmatch(r"(.+)_(\d+)", name)
        if match:
            index = int(match.group(2)) - (match.group(1) in OPENCV_ACTIVATIONS)
            times[index] += tick / cv2.getTickFrequency()
    return times


def profile_layers(row, folder, runs, threads, sgemm):
    cfg, weights, batch, _ = prepare(row, folder)
    peers = Peers(cfg, weights, batch, threads)
    peers.darkfold()  # builds the engine and its buffers
    layers = peers.model.layers
    engine = engine_for(peers.model, threads=threads)
    steps = engine.steps
    times = [[] for _ in layers]
    steps[:] = [TimedStep(step, t) for step, t in zip(steps, times)]
    opencv_times = []

    def opencv():
        peers.opencv()
        opencv_times.append(opencv_layer_times(peers.net, len(layers)))

    totals = _bench.rounds({"darkfold": peers.darkfold, "opencv": opencv, "sgemm": sgemm}, repeat=runs, warmup=WARMUP)
    if not any(times):
        raise SystemExit("darkfold's Engine.forward no longer calls engine.steps: --layers needs updating")
    # A convolution that applies the [maxpool] after it (engine.fused) is compared with OpenCV's
    # conv and maxpool together.
    pooled = engine.fused
    rows = [{"index": layer.index, "kind": kind(layer), "flops": conv_flops(layer, batch),
             "what": describe(layer) + (" + maxpool" if layer.index in pooled else ""),
             "darkfold_s": statistics.median(t[WARMUP:]),
             "opencv_s": statistics.median(sum(o[layer.index:layer.index + 1 + (layer.index in pooled)])
                                           for o in opencv_times[WARMUP:])}
            for layer, t in zip(layers, times) if t]  # pass-through steps never run
    rows.sort(key=lambda r: -r["darkfold_s"])
    # Per forward, paired: a sum of per-layer medians would miss the noise of ~160 layers.
    outside = [total - sum(t[WARMUP + k] for t in times if t) for k, total in enumerate(totals["darkfold"])]
    return {"row": row, "forward_s": {name: statistics.median(totals[name]) for name in ("darkfold", "opencv")},
            "outside_steps_s": statistics.median(outside), "layers": rows}


def describe(layer):
    return f"{kind(layer)} {layer.input.w}x{layer.input.h}x{layer.input.c} -> {layer.output.c}"


def kind(layer):
    """conv 3x3/1 (g = grouped), or the layer type."""
    if layer.type != "convolutional":
        return layer.type
    return f"conv {layer.size}x{layer.size}/{layer.stride_x}{' g' if layer.groups > 1 else ''}"


LAYER_HEADER = (f"{'darkfold ms':>11s} {'share':>6s} {'OpenCV ms':>9s} {'d/OpenCV':>8s} "
                f"{'floor ms':>8s} {'d/floor':>7s}")


def format_times(darkfold_s, total_s, opencv_s, floor_s):
    versus_opencv = f"{darkfold_s / opencv_s:7.2f}x" if opencv_s > 0 else f"{'-':>8s}"
    versus_floor = f"{darkfold_s / floor_s:6.2f}x" if floor_s > 0 else f"{'-':>7s}"
    return (f"{darkfold_s * 1e3:11.2f} {100 * darkfold_s / total_s:5.1f}% {opencv_s * 1e3:9.2f} {versus_opencv} "
            f"{floor_s * 1e3:8.2f} {versus_floor}")


def print_layers(result, top):
    layers, forward = result["layers"], result["forward_s"]
    total = sum(r["darkfold_s"] for r in layers)
    print(f"{result['row']}: darkfold's steps by median time, OpenCV's layers (fused parts under their conv); "
          "floor = the layer's conv FLOPs / sgemm peak")
    print(f"  {'#':>3s} {'what':46s} {LAYER_HEADER}")
    for r in layers[:top or None]:
        print(f"  {r['index']:3d} {r['what']:46s} {format_times(r['darkfold_s'], total, r['opencv_s'], r['floor_s'])}")
    if top and len(layers) > top:
        rest = [sum(r[key] for r in layers[top:]) for key in ("darkfold_s", "opencv_s", "floor_s")]
        print(f"      {f'{len(layers) - top} more (--top 0 lists all)':46s} {format_times(rest[0], total, *rest[1:])}")
    print(f"\n  by kind {'':42s} {LAYER_HEADER}")
    kinds = {}
    for r in layers:
        kinds.setdefault(r["kind"], []).append(r)
    for name, group in sorted(kinds.items(), key=lambda item: -sum(r["darkfold_s"] for r in item[1])):
        sums = [sum(r[key] for r in group) for key in ("darkfold_s", "opencv_s", "floor_s")]
        print(f"  {name + f' ({len(group)})':50s} {format_times(sums[0], total, *sums[1:])}")
    floor = sum(r["floor_s"] for r in layers)
    opencv = sum(r["opencv_s"] for r in layers)
    print(f"  {'all steps':50s} {format_times(total, total, opencv, floor)}")
    print(f"\n  whole forward (median): darkfold {forward['darkfold'] * 1e3:.1f} ms, of which "
          f"{result['outside_steps_s'] * 1e3:.1f} ms outside the steps (input transpose, output copies); "
          f"OpenCV {forward['opencv'] * 1e3:.1f} ms")


# -- main ---------------------------------------------------------------------------------


def measure(args, say):
    """Run the rows (or one row layer by layer) and the sgemm; the report as a dict."""
    report = {"machine": machine(), "runs": args.runs, "warmup": WARMUP, "threads": args.threads}
    m = report["machine"]
    say(f"machine: {m['cpu']}, {m['cpus']} CPUs{', AVX-512' if m['avx512f'] else ''}; Python {m['python']}, "
        f"numpy {m['numpy']}, numba {m['numba']}, OpenCV {m['opencv']}, onnxruntime {m['onnxruntime']}, "
        f"OpenVINO {m['openvino']}; "
        f"threads: {args.threads or 'all'}")
    workers = args.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    peak = sgemm_peak(args.threads)
    say(f"sgemm at the start, {workers} threads (numpy float32 matmul, 2048-4096 square, best of 3 each): "
        f"{peak / 1e9:.0f} GFLOP/s")
    # In the rounds: one thread's speed times the threads. That is the floor of darkfold's design
    # (one single-threaded BLAS call per worker), and a busy core does not hold it back the way it
    # holds back a product split across all cores; nor does it leave BLAS threads spinning.
    single = CAN_SET_BLAS_THREADS
    sgemm = Sgemm(1 if single else args.threads, 2048)
    say(f"{args.runs} interleaved rounds per row after {WARMUP} warm-up rounds, "
        f"with a {'single-threaded ' if single else ''}2048 sgemm as a third case")
    with tempfile.TemporaryDirectory(prefix="darkfold-bench-") as folder:
        if args.layers:
            report["layers"] = profile_layers(args.layers, folder, args.runs, args.threads, sgemm)
            parts = report["layers"]["layers"]
        else:
            report["rows"] = parts = []
            for row in args.rows:
                say(f"  {row} ...")
                parts.append(bench_row(row, folder, args.runs, args.threads, sgemm))
    in_rounds = sgemm.best * (workers if single else 1)
    peak = max(peak, in_rounds)
    say(f"sgemm in the rounds: {sgemm.best / 1e9:.0f} GFLOP/s{f' x {workers} threads' if single else ''}; "
        f"peak for the floor, the larger: {peak / 1e9:.0f} GFLOP/s\n")
    for part in parts:
        add_floor(part, peak)
    report["sgemm_peak_gflops"] = peak / 1e9
    return report


def print_rows(rows):
    print(ROW_HEADER)
    print("\n".join(format_row(result) for result in rows))
    print("\n/OpenCV: each case's time over OpenCV's, of the min times and of the medians (below 1 = faster than")
    print("OpenCV). darkfold-<backend>: Model.forward(x, backend=, precision=); onnxruntime and OpenVINO run")
    print("darkfold's ONNX graph (BatchNorm folded), OpenVINO in float32 or bfloat16. floor = conv FLOPs / sgemm")
    print("peak; floor ratios on min times.")
    print("first call: includes loading (or compiling) numba's kernels and building the engine, or opening the")
    print("backend's session (graph built, compiled).")
    print("load: CPU share other processes used during the row's rounds (above 10%: rerun on a quiet machine).")
    if any(r["floor_vs_opencv"] > 1 or r["darkfold_vs_floor"] < 1 for r in rows):
        print("WARNING: a peer beat the floor: the sgemm peak was measured while disturbed; floor ratios are low.")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS), metavar="ROW",
                        help=f"rows to run (default: all of {', '.join(ROWS)})")
    parser.add_argument("--layers", choices=list(ROWS), metavar="ROW", help="time one row layer by layer instead")
    parser.add_argument("--top", type=int, default=30, metavar="N",
                        help="with --layers, list the N slowest layers (default 30, 0: all)")
    parser.add_argument("--runs", type=int, default=20, metavar="N", help="timed rounds per row (default 20)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="threads for darkfold, OpenCV and the sgemm peak (default: all CPUs)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    args = parser.parse_args(argv)
    if args.threads:
        cv2.setNumThreads(args.threads)
    report = measure(args, (lambda text: None) if args.json else (lambda text: print(text, flush=True)))
    if args.json:
        print(json.dumps(report, indent=1))
    elif args.layers:
        print_layers(report["layers"], args.top)
    else:
        print_rows(report["rows"])
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
