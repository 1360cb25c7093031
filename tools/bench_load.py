"""Benchmark: loading a Darknet model with darkfold vs OpenCV 4.14.

    python tools/bench_load.py [CFG WEIGHTS] [--repeat N] [--json]

Without CFG and WEIGHTS it uses the bundled YOLOv3-tiny (darkfold.DEFAULT_CFG,
darkfold.DEFAULT_WEIGHTS). Three cases run in the same process, interleaved
round by round (see tools/_bench.py), after warm-up rounds, with the weights
file already in the page cache:

  opencv       cv2.dnn.readNetFromDarknet(cfg, weights): the peer. It parses
               the cfg, builds the network and copies every weight into its
               own buffers.
  lazy         darkfold.load(cfg, weights): parses the cfg, builds the layer
               specs, checks the file size layer by layer and memory-maps the
               weights. No weight byte is read yet: the arrays are views into
               the map, paged in on first use.
  copy         darkfold.load(cfg, weights) followed by np.array(...) of every
               parameter array: every byte is read and copied into process
               memory, as OpenCV does. This is the like-for-like comparison.

How to read it: each case's ratio is its median time over OpenCV's median time
in the same run (below 1 = darkfold is faster), with the min-max of the
per-round ratios in brackets. Times are printed alongside for context only;
this machine is noisy (10-15% run to run), so compare ratios, not times.
The header line says how much CPU other processes used during the timed
rounds; above 10% the run is marked DISTURBED.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench  # noqa: E402

_bench.use_repo_darkfold()

import cv2  # noqa: E402
import numpy as np  # noqa: E402

import darkfold  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cfg", nargs="?", metavar="CFG", help="Darknet .cfg (default: the bundled YOLOv3-tiny)")
    parser.add_argument("weights", nargs="?", metavar="WEIGHTS", help="Darknet .weights matching CFG")
    parser.add_argument("--repeat", type=int, default=0, metavar="N",
                        help="timed rounds (default: as many as fit in ~20 s, 20 to 200)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a report")
    args = parser.parse_args(argv)
    if (args.cfg is None) != (args.weights is None):
        parser.error("give both CFG and WEIGHTS, or neither")
    cfg = args.cfg or darkfold.DEFAULT_CFG
    weights = args.weights or darkfold.DEFAULT_WEIGHTS

    def opencv():
        return cv2.dnn.readNetFromDarknet(cfg, weights)

    def lazy():
        return darkfold.load(cfg, weights)

    def copy():
        model = darkfold.load(cfg, weights)
        return [np.array(a) for arrays in model.params if arrays for a in arrays.values()]

    model = darkfold.load(cfg, weights)  # also fails early, with darkfold's message, on a bad pair
    param_bytes = sum(a.nbytes for arrays in model.params if arrays for a in arrays.values())
    with open(weights, "rb") as file:  # warm the page cache
        while file.read(1 << 24):
            pass

    cases = {"opencv": opencv, "lazy": lazy, "copy": copy}
    repeat = args.repeat
    if repeat <= 0:  # size the run from one round of each case
        probe = _bench.rounds(cases, repeat=1, warmup=1)
        one_round = sum(t[0] for t in probe.values())
        repeat = max(20, min(200, int(20 / one_round)))
    with _bench.OtherLoad() as load:
        times = _bench.rounds(cases, repeat=repeat, warmup=3)

    results = {
        "cfg": cfg, "weights": weights, "weights_bytes": os.path.getsize(weights),
        "param_bytes": param_bytes, "rounds": repeat,
        "opencv_version": cv2.__version__, "other_load": load.share,
        "seconds": {name: _bench.stats(values) for name, values in times.items()},
        "ratio_vs_opencv": {name: _bench.ratio(times[name], times["opencv"]) for name in ("lazy", "copy")},
    }
    if args.json:
        print(json.dumps(results, indent=1))
        return 0

    print(f"darkfold.load vs cv2.dnn.readNetFromDarknet (OpenCV {cv2.__version__})")
    print(f"model: {cfg}")
    print(f"       {weights} ({_bench.mb(results['weights_bytes'])}, page cache warm)")
    print(f"{repeat} interleaved rounds after 3 warm-up rounds; median (min-max); {load.describe()}")
    print()
    labels = {
        "opencv": "OpenCV readNetFromDarknet (peer)",
        "lazy": "darkfold.load, lazy (memory-mapped)",
        "copy": "darkfold.load + copy all params",
    }
    for name, label in labels.items():
        line = f"  {label:38s} {_bench.fmt_ms(times[name])}"
        if name != "opencv":
            line += f"   darkfold/OpenCV = {_bench.fmt_ratio(results['ratio_vs_opencv'][name])}"
        print(line)
    print()
    print("  lazy: parse + size checks + mmap; no weight byte read yet.")
    print(f"  copy: lazy + np.array() of every parameter array ({_bench.mb(param_bytes)}): "
          "reads everything, like OpenCV. This is the fair comparison.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
