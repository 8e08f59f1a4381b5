"""Scorers: φ(x, c) computed from decoded texts, returned as float tensors."""

from lit_align.scorers.base import Scorer
from lit_align.scorers.presence import Count, Regex, WordPresence
from lit_align.scorers.sentiment import PositiveSentiment, Sentiment

__all__ = ["Scorer", "WordPresence", "Regex", "Count", "Sentiment", "PositiveSentiment"]
