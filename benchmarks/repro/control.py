"""A control constraint for the chapter-4 claims: how far the policy drifts on noise alone.

:class:`RandomBit` is a binary constraint that is a fixed function of the text but carries nothing
a model can learn from a few hundred samples: b(x, c) = 1 iff a hash of (c, x) falls below
``rate``. CDPG toward a·b with this b (Korbak et al. 2022, arXiv:2112.00791, eq. 2, same
estimator, same weights structure, same base rate) takes steps of the same size as the real run,
so its KL(π‖a) is the distance the optimizer travels on sampling noise within the budget: the
floor under which a method's KL(π‖a) says nothing about the method.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

from lit_align.scorers.base import Scorer


class RandomBit(Scorer):
    """b(x, c) = 1 iff sha256(c ␟ x) / 2²⁵⁶ < ``rate`` (about ``rate`` of all texts, independently)."""

    binary = True
    low, high = 0.0, 1.0

    def __init__(self, rate: float = 0.25, name: str | None = "random_bit") -> None:
        if not 0.0 < rate < 1.0:
            raise ValueError(f"RandomBit: rate must be in (0, 1), got {rate}")
        super().__init__(name)
        self.rate = rate

    def score(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> list[float]:
        contexts = contexts if contexts is not None else [""] * len(texts)
        out = []
        for text, ctx in zip(texts, contexts):
            digest = hashlib.sha256(f"{ctx}\x1f{text}".encode()).digest()
            out.append(float(int.from_bytes(digest[:8], "big") / 2**64 < self.rate))
        return out
