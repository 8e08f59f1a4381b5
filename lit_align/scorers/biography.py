"""Scorers of the GDC distributional experiments on biographies (Khalifa et al. 2021,
arXiv:2012.11635; Korbak et al. 2022, arXiv:2206.00761).

- :class:`PronounGender`: b(x) = 1 when a text has more pronouns of one gender than of the
  other ({she, her, herself} vs {he, him, himself}), the "female biography" feature.
- :class:`TopicWords`: b(x) = 1 when a text contains a word of one of the topic word lists
  shipped in ``lit_align/resources/wordlists`` (science, art, sports, business) or of a
  word-list file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from lit_align.scorers.base import Scorer
from lit_align.scorers.presence import WordPresence

WORDLIST_DIR = Path(__file__).resolve().parent.parent / "resources" / "wordlists"
_WORD = re.compile(r"[A-Za-z']+")


def shipped_wordlists() -> list[str]:
    return sorted(p.stem for p in WORDLIST_DIR.glob("*.txt"))


class PronounGender(Scorer):
    """b(x) = 1 if x has strictly more ``gender`` pronouns than pronouns of the other gender."""

    binary = True
    low, high = 0.0, 1.0

    def __init__(
        self,
        gender: str = "female",
        female: Sequence[str] = ("she", "her", "herself"),
        male: Sequence[str] = ("he", "him", "himself"),
        name: str | None = None,
    ) -> None:
        if gender not in ("female", "male"):
            raise ValueError(f"PronounGender: gender must be 'female' or 'male', got {gender!r}")
        self.gender = gender
        self.female = {w.lower() for w in female}
        self.male = {w.lower() for w in male}
        if not self.female or not self.male or self.female & self.male:
            raise ValueError("PronounGender: female and male pronoun sets must be non-empty and disjoint")
        super().__init__(name or gender)

    def score(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> list[float]:
        out = []
        for t in texts:
            words = [w.lower() for w in _WORD.findall(t)]
            f = sum(w in self.female for w in words)
            m = sum(w in self.male for w in words)
            out.append(float(f > m if self.gender == "female" else m > f))
        return out


class TopicWords(WordPresence):
    """b(x) = 1 if x contains a word of the topic's list: a shipped list (``science``, ``art``,
    ``sports``, ``business``) or a path to a word-list file (one word per line)."""

    def __init__(self, topic: str, lowercase: bool = True, name: str | None = None) -> None:
        path = Path(topic)
        if not path.is_file():
            path = WORDLIST_DIR / f"{topic}.txt"
        if not path.is_file():
            raise FileNotFoundError(
                f"TopicWords: {topic!r} is neither a word-list file nor a shipped list ({', '.join(shipped_wordlists())})"
            )
        super().__init__(wordlist=str(path), lowercase=lowercase, name=name or path.stem)
