"""Scorers: φ(x, c) computed from decoded texts, returned as float tensors."""

from lit_align.scorers.base import Scorer
from lit_align.scorers.biography import PronounGender, TopicWords
from lit_align.scorers.code import PEP8, Compilable, PEP8Errors
from lit_align.scorers.entities import EntityConsistency
from lit_align.scorers.numeral import NumeralConsistency
from lit_align.scorers.presence import Count, Regex, WordPresence
from lit_align.scorers.sentiment import PositiveSentiment, Sentiment

__all__ = ["PronounGender", "TopicWords", "Scorer", "Compilable", "PEP8", "PEP8Errors", "EntityConsistency", "NumeralConsistency", "WordPresence", "Regex", "Count", "Sentiment", "PositiveSentiment"]
