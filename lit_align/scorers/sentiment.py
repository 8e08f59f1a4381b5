"""Sentiment scorers from the VADER lexicon (``vaderSentiment``, works offline)."""

from __future__ import annotations

from typing import Sequence

from lit_align.scorers.base import Scorer


def _analyzer():
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the VADER sentiment scorers need the package `vaderSentiment`: pip install 'lit-align[scorers]'"
        ) from err
    return SentimentIntensityAnalyzer()


class Sentiment(Scorer):
    """VADER compound sentiment in [−1, 1] (real-valued feature)."""

    low, high = -1.0, 1.0

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name or "sentiment")
        self._vader = _analyzer()

    def score(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> list[float]:
        return [self._vader.polarity_scores(t)["compound"] for t in texts]


class PositiveSentiment(Sentiment):
    """b(x) = 1 if VADER's compound score is ≥ ``threshold`` (or ≤ −threshold with ``negative``)."""

    binary = True
    low, high = 0.0, 1.0

    def __init__(self, threshold: float = 0.5, negative: bool = False, name: str | None = None) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"PositiveSentiment: threshold must be in [0, 1], got {threshold}")
        super().__init__(name or ("negative" if negative else "positive"))
        self.threshold = threshold
        self.negative = negative

    def score(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> list[float]:
        compound = super().score(texts, contexts)
        if self.negative:
            return [float(c <= -self.threshold) for c in compound]
        return [float(c >= self.threshold) for c in compound]
