"""Scorers that fail on purpose (importable by class_path from the CLI tests: tests/ is on sys.path)."""

from __future__ import annotations

import math

from lit_align.scorers.base import Scorer


class Failing(Scorer):
    """Scores like ``Regex('d')`` for ``fail_after`` calls, then fails as ``mode`` says: ``raise``,
    ``nan`` (one NaN), ``strings``, ``shape`` (one value too few)."""

    binary = True
    low, high = 0.0, 1.0

    def __init__(self, mode: str = "raise", fail_after: int = 0, name: str | None = "failing") -> None:
        super().__init__(name)
        self.mode, self.fail_after, self.calls = mode, fail_after, 0

    def score(self, texts, contexts=None):
        self.calls += 1
        ok = [float("d" in t) for t in texts]
        if self.calls <= self.fail_after:
            return ok
        if self.mode == "raise":
            raise ZeroDivisionError("division by zero")
        if self.mode == "nan":
            return [math.nan] + ok[1:]
        if self.mode == "strings":
            return ["yes" for _ in texts]
        return ok[1:]
