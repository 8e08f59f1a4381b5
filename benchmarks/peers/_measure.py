"""Stdlib-only measurement helpers shared by lit_align's and the peers' drivers (each runs in
its own process and virtualenv, so peak RSS is the process's own)."""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StepClock:
    """Wall-clock times of consecutive steps: call ``tick()`` at each step boundary."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def tick(self) -> None:
        self.marks.append(time.perf_counter())

    def step_times(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def report(name: str, step_times: list[float], per_step: int, unit: str, warmup: int = 1, **extra) -> None:
    """Print one JSON line with the median step time after ``warmup`` steps and the throughput."""
    times = step_times[warmup:] or step_times
    med = statistics.median(times)
    out = {"name": name, "steps": len(times), "step_s": med, f"{unit}_per_s": per_step / med,
           "peak_rss_mb": peak_rss_mb(), "step_times": times, **extra}
    print("RESULT " + json.dumps(out), flush=True)
    sys.stdout.flush()
