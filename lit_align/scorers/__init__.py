"""Scorers: φ(x, c) computed from decoded texts, returned as float tensors."""

from lit_align.scorers.base import Scorer
from lit_align.scorers.biography import PronounGender, TopicWords
from lit_align.scorers.code import PEP8, Compilable, PEP8Errors, PEP8PerChar
from lit_align.scorers.entities import EntityConsistency
from lit_align.scorers.numeral import NumeralConsistency
from lit_align.scorers.pii import PIIPerChar
from lit_align.scorers.lm_log_prob import LogProbScorer
from lit_align.scorers.presence import Count, Regex, WordPresence
from lit_align.scorers.reward_model import RewardModelScorer
from lit_align.scorers.sentiment import PositiveSentiment, Sentiment
from lit_align.scorers.toxicity import Detoxify, ProfanityCheck

__all__ = ["PronounGender", "TopicWords", "Scorer", "Compilable", "PEP8", "PEP8Errors", "EntityConsistency", "NumeralConsistency", "WordPresence", "Regex", "Count", "Sentiment", "PositiveSentiment",
           "PEP8PerChar", "PIIPerChar", "ProfanityCheck", "Detoxify",
           "LogProbScorer", "RewardModelScorer"]
