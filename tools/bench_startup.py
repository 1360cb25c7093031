"""Benchmark: darkfold's start-up -- import, the first forward pass on a cold and a warm numba cache, and
the first detection.

    python tools/bench_startup.py [--repeat N] [--json]

Every case is a fresh Python process, the cases taking turns round by round
(tools/_bench.py). The processes import darkfold from a copy of the package in a
temporary folder, without its __pycache__, and keep numba's cache in temporary
folders (NUMBA_CACHE_DIR), so no kernel compiled earlier in the source tree is used:

  import numpy   python -c "import numpy": the peer, what any numpy program pays
  import         python -c "import darkfold"
  cold           the bundled YOLOv3-tiny, loaded and run twice on 416x416, with an
                 empty numba cache (a new folder each round): the first forward
                 compiles every kernel it needs
  warm           the same with the cache the first warm-up round filled: what
                 every later process pays
  detect         `python -m darkfold detect`: the README's first command, the whole
                 process (bundled model and sample image, warm cache)

For cold and warm the child also times its own steps: import darkfold, load the
model, import darkfold.engine (numba and the kernel modules: darkfold imports them
only when a model first runs), build the engine (``darkfold.runtime.engine_for(model)``: weights reordered
and folded, by numba kernels too), the first forward and a second ("steady") one. The
first-call cost is engine import + engine build + first - steady: what a process pays
once, before its first result, beyond a normal forward; with a cold cache it includes
compiling the kernels, with a warm one loading them. Goal: at most 0.5 s warm.

How to read it: each process's time is also given over the median time of
``import numpy`` in the same run, and so are the three headline numbers the README
quotes: cold compile (the first-call cost with a cold cache), warm start (the same
with a warm one) and first detection (the whole ``darkfold detect`` process).
Start-up is about absolute seconds, so those are printed too; the machine is noisy
(10-15%), so compare within a run.
"""

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench

CHILD = """
import json, time
started = time.perf_counter()
import numpy as np
import darkfold
assert darkfold.__file__.startswith({package!r}), darkfold.__file__
imported = time.perf_counter()
model = darkfold.load()
x = np.random.default_rng(0).random((1, 3, model.net.height, model.net.width), np.float32)
loaded = time.perf_counter()
import darkfold.runtime
engine = time.perf_counter()
darkfold.runtime.engine_for(model)
built = time.perf_counter()
model.forward(x)
first = time.perf_counter()
model.forward(x)
steady = time.perf_counter()
print(json.dumps({{"import": imported - started, "load": loaded - imported, "engine import": engine - loaded,
                  "engine build": built - engine, "first": first - built, "steady": steady - first}}))
"""
STEPS = ("import", "load", "engine import", "engine build", "first", "steady")


class Child:
    """Runs Python processes against a copy of darkfold in ``folder``."""

    def __init__(self, folder):
        self.folder = folder
        self.package = os.path.join(folder, "src", "darkfold")
        shutil.copytree(os.path.join(_bench.REPO, "darkfold"), self.package,
                        ignore=shutil.ignore_patterns("__pycache__"))
        self.warm_cache = os.path.join(folder, "cache-warm")
        self.cold_cache = None
        self.reports = {"cold": [], "warm": []}

    def python(self, *args, cache):
        env = dict(os.environ, PYTHONPATH=os.path.dirname(self.package), NUMBA_CACHE_DIR=cache)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, *args], cwd=self.folder, env=env, capture_output=True, text=True,
                              check=False)
        elapsed = time.perf_counter() - started
        if done.returncode:
            raise SystemExit(f"a child Python failed:\n{done.stderr}")
        return elapsed, done.stdout

    def forward(self, case):
        cache = self.cold_cache if case == "cold" else self.warm_cache
        elapsed, out = self.python("-c", CHILD.format(package=self.package), cache=cache)
        self.reports[case].append(json.loads(out))
        return _bench.Elapsed(elapsed)

    def fresh_cold_cache(self, case):
        if case == "cold":
            self.cold_cache = tempfile.mkdtemp(prefix="cache-cold-", dir=self.folder)

    def detect(self):
        output = os.path.join(self.folder, "predictions")
        return _bench.Elapsed(self.python("-m", "darkfold", "detect", "-o", output, cache=self.warm_cache)[0])

    def cases(self):
        return {
            "import numpy": lambda: _bench.Elapsed(self.python("-c", "import numpy", cache=self.warm_cache)[0]),
            "import": lambda: _bench.Elapsed(self.python("-c", "import darkfold", cache=self.warm_cache)[0]),
            "cold": lambda: self.forward("cold"),
            "warm": lambda: self.forward("warm"),
            "detect": self.detect,
        }


def measure(repeat, warmup):
    with tempfile.TemporaryDirectory(prefix="darkfold-startup-") as folder:
        child = Child(folder)
        with _bench.OtherLoad() as load:
            times = _bench.rounds(child.cases(), repeat=repeat, warmup=warmup, before=child.fresh_cold_cache)
        kernels = len(glob.glob(os.path.join(child.warm_cache, "**", "*.nbc"), recursive=True))
        steps = {case: {step: _bench.stats([r[step] for r in reports[warmup:]]) for step in STEPS}
                 for case, reports in child.reports.items()}
    peer = statistics.median(times["import numpy"])
    extra = {case: first_call_extra(steps[case]) for case in steps}
    headline = {"cold compile": extra["cold"], "warm start": extra["warm"],
                "first detection": statistics.median(times["detect"])}
    return {
        "rounds": repeat, "other_load": load.share, "other_load_note": load.describe(), "cached_kernels": kernels,
        "seconds": {case: _bench.stats(values) for case, values in times.items()},
        "vs_import_numpy": {case: statistics.median(values) / peer for case, values in times.items()},
        "child_steps_s": steps,
        "first_call_extra_s": extra,
        "headline_s": headline,
        "headline_vs_import_numpy": {name: seconds / peer for name, seconds in headline.items()},
    }


def first_call_extra(steps):
    """What the first forward costs beyond a steady one, counting the engine's import and build."""
    return sum(steps[step]["median"] for step in ("engine import", "engine build", "first")) - steps["steady"]["median"]


def report(results):
    labels = {"import numpy": 'python -c "import numpy" (peer)', "import": 'python -c "import darkfold"',
              "cold": "bundled model, cold numba cache", "warm": "bundled model, warm numba cache",
              "detect": "darkfold detect, warm numba cache"}
    print(f"darkfold start-up: fresh processes, {results['rounds']} interleaved rounds; {results['other_load_note']}")
    print(f"  {'process':34s} {'seconds: median (min-max)':>26s} {'/ import numpy':>15s}")
    for case, label in labels.items():
        s = results["seconds"][case]
        print(f"  {label:34s} {s['median']:11.2f} ({s['min']:.2f}-{s['max']:.2f}) "
              f"{results['vs_import_numpy'][case]:14.1f}x")
    print(f"\n  {'inside the process, median s':34s}{''.join(f'{step:>14s}' for step in STEPS)}  first-call cost")
    for case in ("cold", "warm"):
        steps = results["child_steps_s"][case]
        medians = "".join(f"{steps[step]['median']:14.3f}" for step in STEPS)
        print(f"  {labels[case]:34s}{medians}  {results['first_call_extra_s'][case]:15.3f}")
    peer = results["seconds"]["import numpy"]["median"]
    print(f"\n  in units of one `python -c \"import numpy\"` start ({peer:.2f} s) in this run:")
    meanings = {"cold compile": "first-call cost, empty numba cache",
                "warm start": "first-call cost, cached kernels",
                "first detection": "the whole `darkfold detect` process, cached kernels"}
    for name, meaning in meanings.items():
        print(f"  {name + ' (' + meaning + ')':70s} {results['headline_vs_import_numpy'][name]:7.1f}x "
              f"({results['headline_s'][name]:.2f} s)")
    extra = results["first_call_extra_s"]["warm"]
    print(f"\n  kernel signatures numba compiled and cached for the bundled model: {results['cached_kernels']}")
    print(f"  first-call cost = engine import + engine build + first - steady. Goal: <= 0.5 s with a warm cache; "
          f"now {extra:.2f} s: {'met' if extra <= 0.5 else 'NOT met'}")


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
