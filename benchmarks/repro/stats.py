"""Means, Student-t 95% confidence intervals over seeds, and the verdict rule.

A claim is a list of *effects*, each measured once per seed (paired: the same seed for every
method), oriented so that a positive value supports the claim. The claim is

- **reproduced** when, for every effect, the 95% CI of the mean lies above the effect's
  margin (0 unless stated: "the CI excludes no effect");
- **not reproduced** when, for some effect, the CI lies at or below the margin (the effect is
  absent or reversed, with confidence);
- **inconclusive** otherwise (too few seeds, or too much noise to tell).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"

# two-sided 95% quantiles t_{0.975, df} of Student's t, df = 1..30
_T975 = (12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157, 2.228139,
         2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922, 2.093024, 2.085963,
         2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272)


def t_quantile_975(df: int) -> float:
    """``t_{0.975, df}``: exact to 6 decimals up to 30 degrees of freedom, then the
    Cornish-Fisher expansion around the normal quantile (error < 1e-4 for df > 30)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be ≥ 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959963985
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))


@dataclass(frozen=True)
class Estimate:
    """Mean over seeds with its 95% CI (``low``/``high`` are ±inf with one value)."""

    mean: float
    low: float
    high: float
    n: int
    values: tuple[float, ...] = field(default=())

    def as_dict(self) -> dict:
        return {"mean": self.mean, "ci95": [self.low, self.high], "n": self.n, "values": list(self.values)}

    def text(self, digits: int = 3) -> str:
        if self.n == 0:
            return "–"
        if self.n == 1:
            return f"{self.mean:.{digits}f} (1 seed, no CI)"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def estimate(values: Sequence[float]) -> Estimate:
    """Mean and Student-t 95% CI: ``mean ± t_{0.975,n-1} · s/√n`` with the n−1 sample sd."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = sum(xs) / n
    if n == 1:
        return Estimate(mean, -math.inf, math.inf, 1, tuple(xs))
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n, tuple(xs))


def verdict_of(est: Estimate, margin: float = 0.0) -> str:
    """One effect's verdict (positive supports the claim; see the module docstring)."""
    if est.n < 2 or math.isnan(est.mean):
        return INCONCLUSIVE
    if est.low > margin:
        return REPRODUCED
    if est.high <= margin:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def combine(verdicts: Sequence[str]) -> str:
    """A claim's verdict from its effects': all reproduced → reproduced; any not → not."""
    if not verdicts:
        return INCONCLUSIVE
    if any(v == NOT_REPRODUCED for v in verdicts):
        return NOT_REPRODUCED
    if all(v == REPRODUCED for v in verdicts):
        return REPRODUCED
    return INCONCLUSIVE
