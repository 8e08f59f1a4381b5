"""Measurement helpers shared by lit_align's and the peers' drivers (each runs in its own process
and virtualenv, so peak RSS is the process's own). Stdlib only, except :func:`target_distances`,
which imports torch (every venv has it) and never lit_align: both sides run the same estimator."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import resource
import statistics
import sys
import time
from typing import Iterator

CURVE_SEED = 10_000  # the base of each curve evaluation's sample seed (curve_seed; under a forked RNG)
CURVE_CHUNK = 64  # curve samples drawn per sampling call (bounds the memory of 256-sample evaluations)


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
        self._skipped, self._cpu_skipped = 0.0, 0.0

    def tick(self) -> None:
        self.marks.append(time.perf_counter() - self._skipped)
        self.cpu_marks.append(time.process_time() - self._cpu_skipped)

    @contextlib.contextmanager
    def excluded(self) -> Iterator[None]:
        """Work inside (e.g. a curve evaluation) counts in no step's wall or CPU time."""
        t, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self._skipped += time.perf_counter() - t
            self._cpu_skipped += time.process_time() - c

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


def add_curve_args(ap: argparse.ArgumentParser) -> None:
    """The DPG drivers' options of the sample-efficiency curve (defaults: today's timing run)."""
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--pattern", default=None,
                    help="regex b(x) of the pointwise target (default: the timing runs' letter 'e')")
    ap.add_argument("--curve", type=int, default=0, metavar="EVERY",
                    help="at step 0 and every EVERY steps print a CURVE line from fresh policy samples (0: off)")
    ap.add_argument("--curve-samples", type=int, default=256, help="fresh policy samples per CURVE line")
    ap.add_argument("--log-z", type=float, default=None,
                    help="log Z = log E_a[b] for KL(p||pi) (default: from the step-0 samples, where pi = a)")
    ap.add_argument("--seed", type=int, default=0,
                    help="training seed; the curve's samples are drawn from seed CURVE_SEED + 1000·seed + step")


def curve_seed(seed: int, step: int) -> int:
    """The seed of the curve evaluation after ``step`` steps of a run with training seed ``seed``."""
    return CURVE_SEED + 1000 * seed + step


def target_distances(log_pi, log_a, b, log_z: float) -> dict[str, float]:
    """Distances of the policy π to the target p(x) = a(x)·b(x)/Z, from samples x_i ~ π.

    ``log_pi``, ``log_a``: sequence log-probs of the samples under π and under the base a;
    ``b``: 0/1 per sample; ``log_z``: log Z = log E_a[b], estimated beforehand. Returns

    - ``E_pi_b`` = mean b(x_i);
    - ``kl_p_pi`` = KL(p‖π) by importance sampling from π (Khalifa et al. 2021,
      "A distributional approach to controlled text generation", arXiv:2012.11635):
      mean over i of w_i·(log a_i − log Z − log π_i), w_i = a_i·b_i/(Z·π_i) (0 where b_i = 0);
    - ``kl_pi_a`` = KL(π‖a) = mean of log π_i − log a_i;
    - ``w_mean`` = mean w_i, an unbiased estimate of 1: far from 1, the KL(p‖π) estimate is unreliable;
    - ``kl_p_pi_sn`` = ``kl_p_pi / w_mean``, the self-normalised variant: biased but of lower variance
      (at π = a it is −log Z exactly, where ``kl_p_pi`` is (mean b / Z)·(−log Z)).

    float64, in log space (w spans many orders of magnitude).
    """
    import torch

    log_pi, log_a = log_pi.detach().double().cpu(), log_a.detach().double().cpu()
    hit = torch.as_tensor(b).detach().cpu() > 0
    log_w = torch.where(hit, log_a - log_z - log_pi, torch.full_like(log_pi, -math.inf))
    w = torch.exp(log_w)
    terms = torch.where(hit, w * (log_a - log_z - log_pi), torch.zeros_like(w))
    kl, w_mean = float(terms.mean()), float(w.mean())
    return {"E_pi_b": float(hit.double().mean()), "kl_p_pi": kl, "kl_pi_a": float((log_pi - log_a).mean()),
            "w_mean": w_mean, "kl_p_pi_sn": kl / w_mean if w_mean > 0 else math.nan}


def curve_line(step: int, samples_seen: int, log_pi, log_a, b, log_z: float | None) -> float:
    """Print ``CURVE {json}`` for this evaluation; returns the log Z used (the step-0 E_π[b] if None)."""
    if log_z is None:
        z = float(sum(float(v) > 0 for v in b)) / len(b)
        if z == 0:
            raise SystemExit("CURVE: no step-0 sample satisfies the pattern; pass --log-z")
        log_z = math.log(z)
    out = {"step": step, "samples_seen": samples_seen, **target_distances(log_pi, log_a, b, log_z), "log_z": log_z}
    print("CURVE " + json.dumps(out), flush=True)
    return log_z
