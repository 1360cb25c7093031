"""Benchmark: BatchNorm-fold throughput vs memory copy, and `darkfold convert`'s cost.

    python tools/bench_fold.py [--json] [--busy N]

Runs on two models: the bundled YOLOv3-tiny (35 MB) and a YOLOv4-sized model
(cfg/yolov4.cfg with random weights, 258 MB, written to a temporary folder that
is deleted afterwards). All cases of a part run interleaved round by round
after warm-up rounds (see tools/_bench.py); times are medians with (min-max).

(a) Fold throughput, in this process, page cache warm, numba kernel loaded.
    Work: darkfold.batchnorm.fold_arrays on every layer that has a BatchNorm
    (conv/connected with batch_normalize=1), on the memory-mapped arrays that
    darkfold.load returns.
      fold (keep)   the outputs of every layer are kept until the pass ends,
                    as Model.fold() does: this pays for fresh output memory.
                    The PASS/FAIL goal is judged on this one.
      fold (drop)   each layer's outputs are dropped at once, so the
                    allocator hands back warm pages: the kernel's own speed.
      memcpy        the peer: np.copyto between two preallocated float32
                    arrays holding the same number of bytes.
    Bytes convention (same for all three): B = bytes of the arrays read, i.e.
    of every input array of fold_arrays (weights, biases, scales, rolling_mean,
    rolling_variance) and of memcpy's source array. Each writes about B too,
    which is not counted again. GB/s = B / median time, and the ratio is
    fold GB/s over memcpy GB/s (= memcpy time / fold time): above 1 = faster
    than a copy. Goal: fold (keep) >= 0.5x memcpy.
    "first pass" is the untimed first call over a fresh memory map; for the
    first model it also loads (or compiles) the numba kernel.

(b) `python -m darkfold convert CFG WEIGHTS -o DIR` on the YOLOv4-sized file,
    each run a fresh child process (outputs deleted before each run).
    Each command is started by a small launcher process that times it from
    spawn to exit and reads its ru_maxrss with os.wait4 (a direct child of
    this big process would inherit this process's RSS high-water mark).
    Time: convert's wall time over that of the peer `cp WEIGHTS DIR/` (same
    file, same folder). "convert - startup" subtracts the median wall time of
    a bare `python -c "import darkfold.cli, darkfold.fold"` (what convert
    imports; it does not import cv2) before dividing.
    Memory: peak RSS (ru_maxrss) over the weights file size. Goal: peak <= 2x
    file size. The baselines are the bare-import child, and the same plus one
    tiny fold_arrays call (numba kernel loaded). RSS counts the pages of the
    memory-mapped input that were read (file-backed, reclaimable) as well as
    anonymous memory; one extra run splits the peak into the two (RssAnon,
    RssFile from /proc, sampled every 5 ms, so approximate).

Each part also prints how much CPU other processes used meanwhile (from
/proc/stat). Above 10% the part is marked DISTURBED: on this shared 2-vCPU machine
another process's load skews the ratios, so rerun on a quiet machine.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench  # noqa: E402

_bench.use_repo_darkfold()

import numpy as np  # noqa: E402

import darkfold  # noqa: E402
from darkfold.batchnorm import fold_arrays  # noqa: E402
from darkfold.weights import Header  # noqa: E402

YOLOV4_CFG = os.path.join(_bench.REPO, "cfg", "yolov4.cfg")
FOLD_GOAL = 0.5  # fold (keep) GB/s >= 0.5 x memcpy GB/s
RSS_GOAL = 2.0  # convert's peak RSS <= 2 x weights file size
_BN = ("weights", "biases", "scales", "rolling_mean", "rolling_variance")


# ---------------------------------------------------------------- (a) fold throughput

def bn_arrays(model):
    """fold_arrays' arguments for every layer with its own BatchNorm."""
    return [tuple(arrays[name] for name in _BN)
            for arrays in model.params if arrays and "rolling_mean" in arrays and "weights" in arrays]


def bench_fold(label, cfg, weights, repeat):
    model = darkfold.load(cfg, weights)
    args = bn_arrays(model)
    nbytes = sum(a.nbytes for layer in args for a in layer)

    def fold_keep():
        return [fold_arrays(*layer) for layer in args]

    def fold_drop():
        for layer in args:
            fold_arrays(*layer)

    source = np.random.default_rng(1).standard_normal(nbytes // 4, dtype=np.float32)
    target = np.zeros_like(source)

    def memcpy():
        np.copyto(target, source)

    started = time.perf_counter()
    fold_keep()  # first pass: numba kernel load, page-in of the fresh memory map
    first = time.perf_counter() - started
    cases = {"fold_keep": fold_keep, "fold_drop": fold_drop, "memcpy": memcpy}
    if repeat <= 0:
        probe = _bench.rounds(cases, repeat=1, warmup=1)
        repeat = max(15, min(100, int(3 / sum(t[0] for t in probe.values()))))
    with _bench.OtherLoad() as load:
        times = _bench.rounds(cases, repeat=repeat, warmup=2)
    result = {
        "model": label, "cfg": cfg, "weights": weights, "layers": len(args), "bytes": nbytes,
        "memcpy_bytes": source.nbytes, "rounds": repeat, "first_pass_s": first, "other_load": load.share,
        "seconds": {name: _bench.stats(t) for name, t in times.items()},
        "gb_per_s": {name: (source.nbytes if name == "memcpy" else nbytes) / _bench.stats(t)["median"] / 1e9
                     for name, t in times.items()},
    }
    scale = nbytes / source.nbytes  # 1: all arrays are float32
    # throughput ratio fold/memcpy = (B/t_fold) / (B'/t_memcpy)
    result["ratio_vs_memcpy"] = {
        name: {key: scale / value for key, value in _bench.ratio(times[name], times["memcpy"]).items()}
        for name in ("fold_keep", "fold_drop")
    }
    for r in result["ratio_vs_memcpy"].values():  # per-round min/max swap under 1/x
        r["min"], r["max"] = r["max"], r["min"]
    result["goal"] = f"fold_keep >= {FOLD_GOAL}x memcpy"
    result["pass"] = result["ratio_vs_memcpy"]["fold_keep"]["median"] >= FOLD_GOAL
    result["load_note"] = load.describe()
    return result


def print_fold(r):
    steady = r["seconds"]["fold_keep"]["median"]
    print(f"  {r['model']}: {r['layers']} BatchNorm layers, B = {_bench.mb(r['bytes'])}, "
          f"{r['rounds']} rounds; first pass {r['first_pass_s'] * 1e3:.1f} ms = "
          f"{r['first_pass_s'] / steady:.1f}x a steady fold (keep) pass")
    labels = {"memcpy": "memcpy, np.copyto (peer)", "fold_keep": "fold (keep), as Model.fold",
              "fold_drop": "fold (drop), kernel only"}
    for name in ("memcpy", "fold_keep", "fold_drop"):
        s = r["seconds"][name]
        line = (f"    {labels[name]:28s} {s['median'] * 1e3:7.2f} ms ({s['min'] * 1e3:.2f}-{s['max'] * 1e3:.2f})"
                f" {r['gb_per_s'][name]:5.1f} GB/s")
        if name != "memcpy":
            line += f"   fold/memcpy = {_bench.fmt_ratio(r['ratio_vs_memcpy'][name])}"
        print(line)
    verdict = "PASS" if r["pass"] else "FAIL"
    print(f"    goal fold (keep) >= {FOLD_GOAL}x memcpy: {verdict} "
          f"({r['ratio_vs_memcpy']['fold_keep']['median']:.2f}x); {r['load_note']}")


# ---------------------------------------------------------------- the YOLOv4-sized file

def write_random_weights(cfg, path, seed=0):
    """Random weights that fit ``cfg``: header 0.2.0, then every array in file order."""
    model = darkfold.load(cfg)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as file:
        file.write(Header(0, 2, 0, 0).to_bytes())
        for layer in model.layers:
            for param in layer.params:
                count = int(np.prod(param.shape))
                if param.name in ("rolling_variance", "scales"):
                    array = rng.uniform(0.5, 1.5, count).astype(np.float32)  # variance must be > 0
                else:
                    array = rng.standard_normal(count, dtype=np.float32) * np.float32(0.05)
                file.write(array.tobytes())
        file.flush()
        os.fsync(file.fileno())  # no writeback of this file during the timed runs
    darkfold.load(cfg, path)  # the file fits the cfg
    return os.path.getsize(path)


# ---------------------------------------------------------------- (b) convert: time and memory

# A child's ru_maxrss on Linux starts from the RSS of the process that spawned
# it (the high-water mark survives fork and exec), and this benchmark holds
# hundreds of MB. So each command is started by this small launcher process,
# which reports the command's exit code, ru_maxrss (KiB) and wall time.
_LAUNCHER = """\
import os, sys, time
log = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
actions = [(os.POSIX_SPAWN_DUP2, log, 1), (os.POSIX_SPAWN_DUP2, log, 2)]
started = time.perf_counter()
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ, file_actions=actions)
_, status, usage = os.wait4(pid, 0)
elapsed = time.perf_counter() - started
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss, repr(elapsed))
"""


def run_child(argv, log):
    """Run argv to completion; return (wall seconds, ru_maxrss in bytes). Raises on failure."""
    report = subprocess.run([sys.executable, "-I", "-S", "-c", _LAUNCHER, log] + argv, env=_bench.child_env(),
                            stdout=subprocess.PIPE, check=True, text=True).stdout.split()
    code, maxrss, elapsed = int(report[0]), int(report[1]), float(report[2])
    if code != 0:
        with open(log, errors="replace") as file:
            raise RuntimeError(f"{' '.join(argv)} failed (exit {code}):\n{file.read()}")
    return elapsed, maxrss * 1024  # ru_maxrss is in KiB on Linux


def sampled_peak(argv, log, interval=0.005):
    """Run argv, sampling /proc/PID/status; return peak RssAnon and RssFile (bytes)."""
    peaks = {"RssAnon": 0, "RssFile": 0}
    with open(log, "wb") as out:
        child = subprocess.Popen(argv, env=_bench.child_env(), stdout=out, stderr=out)
    while child.poll() is None:
        try:
            with open(f"/proc/{child.pid}/status") as file:
                for line in file:
                    key, _, value = line.partition(":")
                    if key in peaks:
                        peaks[key] = max(peaks[key], int(value.split()[0]) * 1024)
        except (OSError, ValueError):
            pass
        time.sleep(interval)
    return peaks


def bench_convert(cfg, weights, tmp, repeat):
    python = sys.executable
    out_dir = os.path.join(tmp, "out")
    copy_path = os.path.join(tmp, "copy.weights")
    log = os.path.join(tmp, "child.log")
    kernel = ("import numpy as np, darkfold.cli; from darkfold.batchnorm import fold_arrays\n"
              "a = [np.ones(s, np.float32) for s in ((4, 9), 4, 4, 4, 4)]\n"
              "for x in a: x.flags.writeable = False\n"
              "fold_arrays(a[0].reshape(4, 1, 3, 3), *a[1:])")
    commands = {
        "cp": ["/bin/cp", weights, copy_path],
        "startup": [python, "-c", "import darkfold.cli, darkfold.fold"],
        "startup_kernel": [python, "-c", kernel],
        "convert": [python, "-m", "darkfold", "convert", cfg, weights, "-o", out_dir],
    }
    if not os.path.exists(commands["cp"][0]):
        commands["cp"][0] = shutil.which("cp")
    rss = {name: [] for name in commands}

    def case(name):
        def run():
            elapsed, maxrss = run_child(commands[name], log)
            rss[name].append(maxrss)
            return _bench.Elapsed(elapsed)
        return run

    def clean(_name):
        shutil.rmtree(out_dir, ignore_errors=True)
        if os.path.exists(copy_path):
            os.unlink(copy_path)

    warmup = 1
    with _bench.OtherLoad() as load:
        times = _bench.rounds({name: case(name) for name in commands}, repeat=repeat, warmup=warmup, before=clean)
    rss = {name: values[warmup:] for name, values in rss.items()}
    clean(None)
    split = sampled_peak(commands["convert"], log)
    clean(None)

    size = os.path.getsize(weights)
    median = {name: _bench.stats(t)["median"] for name, t in times.items()}
    peak = {name: _bench.stats(values) for name, values in rss.items()}
    net_times = [t - median["startup"] for t in times["convert"]]
    result = {
        "weights": weights, "weights_bytes": size, "rounds": repeat,
        "seconds": {name: _bench.stats(t) for name, t in times.items()},
        "ratio_vs_cp": _bench.ratio(times["convert"], times["cp"]),
        "ratio_minus_startup_vs_cp": _bench.ratio(net_times, times["cp"]),
        "peak_rss_bytes": peak,
        "peak_over_file": peak["convert"]["median"] / size,
        "peak_minus_baseline_over_file": (peak["convert"]["median"] - peak["startup"]["median"]) / size,
        "peak_minus_kernel_baseline_over_file":
            (peak["convert"]["median"] - peak["startup_kernel"]["median"]) / size,
        "sampled_peak_rss_bytes": split,
        "goal": f"peak RSS <= {RSS_GOAL}x weights file",
        "other_load": load.share, "load_note": load.describe(),
    }
    result["pass"] = result["peak_over_file"] <= RSS_GOAL
    return result


def print_convert(r):
    size = r["weights_bytes"]
    print(f"  wall time, {r['rounds']} rounds after 1 warm-up, each a new process; median (min-max)")
    labels = {"cp": "cp WEIGHTS (peer)", "startup": "python + darkfold imports",
              "startup_kernel": "... + numba kernel loaded", "convert": "darkfold convert"}
    for name in ("cp", "startup", "startup_kernel", "convert"):
        s = r["seconds"][name]
        line = f"    {labels[name]:28s} {s['median']:6.3f} s ({s['min']:.3f}-{s['max']:.3f})"
        if name == "convert":
            line += f"   convert/cp = {_bench.fmt_ratio(r['ratio_vs_cp'])}"
        elif name in ("startup", "startup_kernel"):
            line += f"   /cp = {s['median'] / r['seconds']['cp']['median']:.2f}x"
        print(line)
    print(f"    {'convert - startup':28s} {'':21s}   (convert-startup)/cp = "
          f"{_bench.fmt_ratio(r['ratio_minus_startup_vs_cp'])}")
    print(f"  peak RSS (ru_maxrss), weights file = {_bench.mb(size)}")
    peak = r["peak_rss_bytes"]
    for name in ("startup", "startup_kernel", "convert"):
        print(f"    {labels[name]:28s} {_bench.mb(peak[name]['median']):>10s} = {peak[name]['median'] / size:.2f}x file")
    print(f"    {'convert - imports':28s} {_bench.mb(peak['convert']['median'] - peak['startup']['median']):>10s}"
          f" = {r['peak_minus_baseline_over_file']:.2f}x file")
    print(f"    {'convert - kernel baseline':28s} "
          f"{_bench.mb(peak['convert']['median'] - peak['startup_kernel']['median']):>10s}"
          f" = {r['peak_minus_kernel_baseline_over_file']:.2f}x file")
    split = r["sampled_peak_rss_bytes"]
    print(f"    sampled peaks of convert: anonymous {_bench.mb(split['RssAnon'])} = {split['RssAnon'] / size:.2f}x file,"
          f" file-backed {_bench.mb(split['RssFile'])} = {split['RssFile'] / size:.2f}x file")
    verdict = "PASS" if r["pass"] else "FAIL"
    print(f"    goal peak RSS <= {RSS_GOAL}x file: {verdict} ({r['peak_over_file']:.2f}x)")
    print(f"  timing: {r['load_note']}")


# ---------------------------------------------------------------- main

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=0, metavar="N",
                        help="timed fold rounds per model (default: ~3 s worth, 15 to 100)")
    parser.add_argument("--convert-repeat", type=int, default=5, metavar="N",
                        help="timed convert rounds (default: 5)")
    parser.add_argument("--busy", type=int, default=0, metavar="N",
                        help="run N busy-looping processes during part (a), to see how the fold "
                             "copes with a machine where other work takes CPUs (default: 0)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a report")
    args = parser.parse_args(argv)

    results = {"fold": [], "convert": None, "busy": args.busy}
    tmp = tempfile.mkdtemp(prefix="darkfold-bench-")
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        results["fold"].append(bench_fold("yolov3-tiny (bundled)", darkfold.DEFAULT_CFG,
                                          darkfold.DEFAULT_WEIGHTS, args.repeat))
        weights = os.path.join(tmp, "yolov4.weights")
        write_random_weights(YOLOV4_CFG, weights)
        results["fold"].append(bench_fold("yolov4 (random weights)", YOLOV4_CFG, weights, args.repeat))
        for process in busy:
            process.kill()
            process.wait()
        busy = []
        results["convert"] = bench_convert(YOLOV4_CFG, weights, tmp, args.convert_repeat)
    finally:
        for process in busy:
            process.kill()
            process.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print("(a) fold throughput vs memcpy, same run "
          "(B = bytes of fold_arrays' input arrays; memcpy copies B bytes)")
    if args.busy:
        print(f"    with {args.busy} busy-looping process(es) started by --busy")
    for r in results["fold"]:
        print_fold(r)
    print()
    print(f"(b) python -m darkfold convert yolov4.cfg <random yolov4 weights, "
          f"{_bench.mb(results['convert']['weights_bytes'])}>")
    print_convert(results["convert"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
