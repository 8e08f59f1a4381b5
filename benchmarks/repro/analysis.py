"""From logged curves to per-seed numbers: best learning rate, matched-KL readings, effects.

``results`` maps each method to ``{lr: {seed: curves}}`` where ``curves`` is
:func:`benchmarks.repro.runner.read_metrics` of the run. Every per-seed number below is
read from one run's curve; means and CIs over seeds are taken in :mod:`.stats`.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

from benchmarks.repro.stats import Estimate, estimate, verdict_of

Curves = Mapping[str, list[tuple[int, float]]]


def series(curves: Curves, name: str) -> list[tuple[int, float]]:
    return list(curves.get(name, []))


def last(curves: Curves, name: str) -> float:
    s = series(curves, name)
    return s[-1][1] if s else math.nan


def minimum(curves: Curves, name: str) -> float:
    s = series(curves, name)
    return min(v for _, v in s) if s else math.nan


def at_matched(curves: Curves, x_name: str, y_name: str, level: float) -> float:
    """``y`` where ``x`` first reaches ``level`` along the run (linear interpolation between
    the two evaluations around the crossing); nan if ``x`` never reaches it."""
    xs, ys = dict(series(curves, x_name)), dict(series(curves, y_name))
    steps = sorted(set(xs) & set(ys))
    for s0, s1 in zip(steps, steps[1:]):
        x0, x1 = xs[s0], xs[s1]
        if x0 <= level <= x1 and x1 > x0:
            t = (level - x0) / (x1 - x0)
            return ys[s0] + t * (ys[s1] - ys[s0])
        if x0 >= level and s0 == steps[0]:
            return ys[s0]
    return math.nan


def per_seed(runs: Mapping[int, Curves], reading: Callable[[Curves], float]) -> dict[int, float]:
    return {seed: reading(c) for seed, c in runs.items()}


def best_lr(by_lr: Mapping[float, Mapping[int, Curves]], score: Callable[[Curves], float],
            lower_is_better: bool = True) -> float:
    """The learning rate of the sweep whose mean ``score`` over seeds is best (fair tuning:
    every method is tuned on the same grid, with the claim's own measurement)."""
    def mean_score(lr: float) -> float:
        vals = [v for v in per_seed(by_lr[lr], score).values() if not math.isnan(v)]
        if not vals:
            return math.inf
        m = sum(vals) / len(vals)
        return m if lower_is_better else -m
    return min(by_lr, key=mean_score)


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> list[float]:
    """``a[s] - b[s]`` for the seeds both have (paired by seed)."""
    return [a[s] - b[s] for s in sorted(set(a) & set(b)) if not (math.isnan(a[s]) or math.isnan(b[s]))]


def effect(name: str, values: list[float], margin: float = 0.0, note: str = "") -> dict:
    est: Estimate = estimate(values)
    return {"name": name, "estimate": est, "margin": margin, "verdict": verdict_of(est, margin), "note": note}
