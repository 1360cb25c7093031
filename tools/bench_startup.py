"""Benchmark: darkfold's start-up -- `darkfold detect` on a cold and on a warm numba cache.

    python tools/bench_startup.py [--repeat N] [--json]

Every case is a fresh process, the cases taking turns round by round (tools/_bench.py).
The processes run a copy of the package in a temporary folder, without its __pycache__,
and keep numba's cache in temporary folders (NUMBA_CACHE_DIR), so no kernel compiled
earlier in the source tree is used. The copy's modules are compiled to bytecode first, as
pip compiles an installed package's (where PYTHONDONTWRITEBYTECODE is set, every process
would otherwise compile them from source again). The cases:

  import numpy   python -c "import numpy": the peer, what any numpy program pays
  import         python -c "import darkfold"
  cold           `darkfold detect` (the bundled YOLOv3-tiny on the sample image, the
                 annotated copy written) with an empty numba cache, a new one each round:
                 a first run after installing, which compiles the kernels
  warm           the same with the cache the first, untimed, round filled: every later run

Each process's wall time is given over the median time of ``import numpy`` in the same
run, and so are two times `darkfold detect` prints itself: the kernels' compile (its
"compiled kernels in X s" line, cold only) and the first image's detection ("detected in
N ms"). The machine is noisy (10-15%, more when other processes run): compare within a
run. Goals: cold <= 10 s, warm <= 0.6 s.
"""

import argparse
import compileall
import glob
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench

GOALS = {"cold": 10.0, "warm": 0.6}  # seconds of wall time


class Child:
    """Runs Python processes against a copy of darkfold in ``folder``."""

    def __init__(self, folder):
        self.folder = folder
        self.package = os.path.join(folder, "src", "darkfold")
        shutil.copytree(os.path.join(_bench.REPO, "darkfold"), self.package,
                        ignore=shutil.ignore_patterns("__pycache__"))
        compileall.compile_dir(self.package, quiet=1)
        self.warm_cache = os.path.join(folder, "cache-warm")
        self.cold_cache = None
        self.printed = {"cold": [], "warm": []}  # (compile seconds or None, detection seconds) per run

    def python(self, *args, cache):
        env = dict(os.environ, PYTHONPATH=os.path.dirname(self.package), NUMBA_CACHE_DIR=cache)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, *args], cwd=self.folder, env=env, capture_output=True, text=True,
                              check=False)
        elapsed = time.perf_counter() - started
        if done.returncode:
            raise SystemExit(f"a child Python failed:\n{done.stderr}")
        return elapsed, done

    def detect(self, case):
        elapsed, done = self.python("-m", "darkfold", "detect", cache=self.cold_cache if case == "cold" else
                                    self.warm_cache)
        compiled = re.search(r"compiled kernels in ([\d.]+) s", done.stderr)
        detected = re.search(r"detected in (\d+) ms", done.stdout)
        self.printed[case].append((float(compiled[1]) if compiled else None, int(detected[1]) / 1000))
        return _bench.Elapsed(elapsed)

    def fresh_cold_cache(self, case):
        if case == "cold":
            self.cold_cache = tempfile.mkdtemp(prefix="cache-cold-", dir=self.folder)

    def cases(self):
        return {
            "import numpy": lambda: _bench.Elapsed(self.python("-c", "import numpy", cache=self.warm_cache)[0]),
            "import": lambda: _bench.Elapsed(self.python("-c", "import darkfold", cache=self.warm_cache)[0]),
            "cold": lambda: self.detect("cold"),
            "warm": lambda: self.detect("warm"),
        }


def measure(repeat, warmup):
    with tempfile.TemporaryDirectory(prefix="darkfold-startup-") as folder:
        child = Child(folder)
        with _bench.OtherLoad() as load:
            times = _bench.rounds(child.cases(), repeat=repeat, warmup=warmup, before=child.fresh_cold_cache)
        kernels = len(glob.glob(os.path.join(child.warm_cache, "**", "*.nbc"), recursive=True))
        printed = {case: runs[warmup:] for case, runs in child.printed.items()}
    peer = statistics.median(times["import numpy"])
    compiles = [seconds for seconds, _ in printed["cold"]]
    if None in compiles:
        raise SystemExit("a cold `darkfold detect` printed no 'compiled kernels' line")
    inside = {"compile (cold)": compiles,
              "first detection (cold)": [seconds for _, seconds in printed["cold"]],
              "first detection (warm)": [seconds for _, seconds in printed["warm"]]}
    return {
        "rounds": repeat, "other_load": load.share, "other_load_note": load.describe(), "cached_kernels": kernels,
        "seconds": {case: _bench.stats(values) for case, values in times.items()},
        "vs_import_numpy": {case: statistics.median(values) / peer for case, values in times.items()},
        "printed_s": {what: _bench.stats(values) for what, values in inside.items()},
        "printed_vs_import_numpy": {what: statistics.median(values) / peer for what, values in inside.items()},
        "goals_s": GOALS,
    }


def report(results):
    labels = {"import numpy": 'python -c "import numpy" (peer)', "import": 'python -c "import darkfold"',
              "cold": "darkfold detect, cold numba cache", "warm": "darkfold detect, warm numba cache"}
    print(f"darkfold start-up: fresh processes, {results['rounds']} interleaved rounds; {results['other_load_note']}")
    print(f"  {'process':40s} {'seconds: median (min-max)':>26s} {'/ import numpy':>15s}")
    for case, label in labels.items():
        s = results["seconds"][case]
        print(f"  {label:40s} {s['median']:11.2f} ({s['min']:.2f}-{s['max']:.2f}) "
              f"{results['vs_import_numpy'][case]:14.1f}x")
    print("\n  what `darkfold detect` prints")
    for what, s in results["printed_s"].items():
        print(f"  {what:40s} {s['median']:11.3f} ({s['min']:.3f}-{s['max']:.3f}) "
              f"{results['printed_vs_import_numpy'][what]:14.1f}x")
    print(f"\n  kernel signatures numba compiled and cached for the bundled model: {results['cached_kernels']}")
    for case, goal in GOALS.items():
        median = results["seconds"][case]["median"]
        print(f"  goal: {case} <= {goal:g} s; now {median:.2f} s: {'met' if median <= goal else 'NOT met'}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, metavar="N", help="timed rounds (default 5)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a report")
    args = parser.parse_args(argv)
    results = measure(args.repeat, warmup=1)
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        report(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
