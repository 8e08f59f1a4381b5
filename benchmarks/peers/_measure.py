"""Stdlib-only measurement helpers shared by lit_align's and the peers' drivers (each runs in
its own process and virtualenv, so peak RSS is the process's own)."""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StepClock:
    """Wall-clock and process CPU times of consecutive steps: call ``tick()`` at each step boundary.

    CPU time (all threads of the process) is the robust measure on a shared machine: another
    process slows the wall clock but not the work done, as long as each side runs one thread
    (with several, OpenMP threads spin while waiting for a descheduled sibling).
    """

    def __init__(self) -> None:
        self.marks: list[float] = []
        self.cpu_marks: list[float] = []

    def tick(self) -> None:
        self.marks.append(time.perf_counter())
        self.cpu_marks.append(time.process_time())

    def step_times(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:])]

    def cpu_times(self) -> list[float]:
        return [b - a for a, b in zip(self.cpu_marks, self.cpu_marks[1:])]


def report(name: str, step_times: list[float], per_step: int, unit: str, warmup: int = 1,
           cpu_times: list[float] | None = None, **extra) -> None:
    """Print one JSON line with the median step time (wall and CPU) after ``warmup`` steps and the throughput."""
    times = step_times[warmup:] or step_times
    med = statistics.median(times)
    out = {"name": name, "steps": len(times), "step_s": med, f"{unit}_per_s": per_step / med,
           "peak_rss_mb": peak_rss_mb(), "step_times": times, **extra}
    if cpu_times:
        cpu = statistics.median(cpu_times[warmup:] or cpu_times)
        out.update(cpu_step_s=cpu, **{f"{unit}_per_cpu_s": per_step / cpu})
    print("RESULT " + json.dumps(out), flush=True)
    sys.stdout.flush()


def parser(doc: str | None, samples: int = 32, pairs: bool = False) -> argparse.ArgumentParser:
    """The arguments every driver takes (the runner passes the same ones to both sides)."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("model")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--samples", type=int, default=samples, help="samples (or pairs) per step")
    ap.add_argument("--tokens", type=int, default=32, help="new tokens per sample")
    ap.add_argument("--minibatch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    if pairs:
        ap.add_argument("--pairs", required=True, help="preference pairs (JSONL, TRL standard format)")
        ap.add_argument("--max-length", type=int, default=128)
    return ap
