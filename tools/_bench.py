"""Shared helpers for the benchmarks in tools/: interleaved timing, stats, ratios.

Every case of a benchmark runs once per *round*, the cases taking turns (the
order rotates each round), so that slow drifts of a noisy machine hit the
subject and its peer alike. A ratio is the median of the subject's times over
the median of the peer's; its spread is the min and max of the per-round
ratios (subject time / peer time within the same round).
"""

import gc
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def use_repo_darkfold():
    """Import darkfold from this checkout when it is not installed."""
    try:
        import darkfold  # noqa: F401
    except ImportError:
        sys.path.insert(0, REPO)


def child_env():
    """Environment for a child Python that must import darkfold from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class Elapsed(float):
    """Returned by a case that timed itself: rounds() records this value instead."""


def rounds(cases, repeat, warmup=2, before=None):
    """Time ``cases`` (a dict name -> function), interleaved; return name -> [seconds].

    ``warmup`` untimed rounds come first. ``before(name)``, if given, runs
    untimed before each call (to delete outputs, say). The garbage collector runs once before the first round
    and is off until the last (reference counting still frees every result).
    A case that returns an ``Elapsed`` is recorded with that time instead of
    the time of the call.
    """
    names = list(cases)
    times = {name: [] for name in names}
    gc.collect()
    gc.disable()
    try:
        for number in range(warmup + repeat):
            shift = number % len(names)
            for name in names[shift:] + names[:shift]:
                if before is not None:
                    before(name)
                started = time.perf_counter()
                result = cases[name]()
                elapsed = time.perf_counter() - started
                if isinstance(result, Elapsed):
                    elapsed = float(result)
                del result
                if number >= warmup:
                    times[name].append(elapsed)
    finally:
        gc.enable()
    return times


def stats(values):
    """median, min, max of a list."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def ratio(subject, peer):
    """Median ratio subject/peer and the spread of the per-round ratios."""
    per_round = [s / p for s, p in zip(subject, peer)]
    return {"median": statistics.median(subject) / statistics.median(peer),
            "min": min(per_round), "max": max(per_round)}


def fmt_ms(values):
    s = stats(values)
    return f"{s['median'] * 1e3:8.2f} ms  ({s['min'] * 1e3:.2f}-{s['max'] * 1e3:.2f})"


def fmt_ratio(r, unit="x"):
    return f"{r['median']:.3f}{unit} (per round {r['min']:.3f}-{r['max']:.3f})"


def mb(nbytes):
    return f"{nbytes / 1e6:,.1f} MB"


class OtherLoad:
    """How much CPU other processes used while a block ran (Linux /proc/stat).

        with OtherLoad() as load:
            ...
        load.share   # CPU time of other processes / (wall time x CPUs), or None

    On this shared 2-vCPU machine another process's load skews timings, so
    every report prints this. ``pids``: processes of the benchmark itself (a local Dask
    cluster's workers), whose CPU time is not another's.
    """

    def __init__(self, pids=()):
        self.pids = tuple(pids)

    def __enter__(self):
        self._start = _cpu_snapshot(self.pids)
        self.share = None
        return self

    def __exit__(self, *_exc):
        end = _cpu_snapshot(self.pids)
        if self._start is not None and end is not None:
            wall, busy, own = (e - s for e, s in zip(end, self._start))
            if wall > 0:
                self.share = max(0.0, (busy - own) / (wall * (os.cpu_count() or 1)))
        return False

    def describe(self):
        if self.share is None:
            return "CPU use of other processes: unknown (no /proc/stat)"
        text = f"other processes used {100 * self.share:.0f}% of the {os.cpu_count()} CPUs meanwhile"
        if self.share > 0.1:
            text += " -- DISTURBED: rerun on a quiet machine"
        return text


def _cpu_snapshot(pids=()):
    """(wall seconds, busy CPU seconds of the machine, CPU seconds of this process, its reaped
    children and the processes ``pids``)."""
    try:
        with open("/proc/stat") as file:
            values = [int(v) for v in file.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(values[:8]) - values[3] - values[4]  # user..steal, minus idle and iowait
    own = os.times()
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as file:
                fields = file.read().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime: the stat file's 14th and 15th
        except (OSError, ValueError, IndexError):
            pass  # ended meanwhile
    return (time.monotonic(), busy / os.sysconf("SC_CLK_TCK"),
            own.user + own.system + own.children_user + own.children_system + ticks / os.sysconf("SC_CLK_TCK"))
