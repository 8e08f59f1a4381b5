"""Pointwise scorers on the surface of the text: words, word lists, regular expressions."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from lit_align.scorers.base import Scorer

_WORD = re.compile(r"[A-Za-z0-9']+")


def _words(text: str, lowercase: bool) -> set[str]:
    found = _WORD.findall(text)
    return {w.lower() for w in found} if lowercase else set(found)


class WordPresence(Scorer):
    """b(x) = 1 if any of ``words`` occurs in x as a whole word (the "amazing" task of GDC).

    ``words`` may be given inline, or as ``wordlist``: a text file with one word per line
    (lines starting with ``#`` are ignored).
    """

    binary = True
    low, high = 0.0, 1.0

    def __init__(
        self,
        words: list[str] | None = None,
        wordlist: str | None = None,
        lowercase: bool = True,
        name: str | None = None,
    ) -> None:
        vocab = list(words or [])
        if wordlist is not None:
            path = Path(wordlist)
            if not path.is_file():
                raise FileNotFoundError(f"WordPresence: wordlist file {str(path)!r} does not exist")
            lines = path.read_text(encoding="utf-8").splitlines()
            vocab += [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
        if not vocab:
            raise ValueError("WordPresence needs at least one word: set `words` or `wordlist`")
        self.lowercase = lowercase
        self.words = {w.lower() for w in vocab} if lowercase else set(vocab)
        super().__init__(name or (vocab[0] if len(vocab) == 1 else "wordlist"))

    def score(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> list[float]:
        return [float(bool(self.words & _words(t, self.lowercase))) for t in texts]


class Regex(Scorer):
    """b(x) = 1 if the regular expression matches anywhere in x (``re.search``)."""

    binary = True
    low, high = 0.0, 1.0

    def __init__(self, pattern: str, ignore_case: bool = False, name: str | None = None) -> None:
        try:
            self.pattern = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
        except re.error as err:
            raise ValueError(f"Regex: invalid pattern {pattern!r}: {err}") from err
        super().__init__(name or "regex")

    def score(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> list[float]:
        return [float(self.pattern.search(t) is not None) for t in texts]


class Count(Scorer):
    """φ(x) = number of (non-overlapping) matches of a regular expression in x."""

    low, high = 0.0, float("inf")

    def __init__(self, pattern: str, name: str | None = None) -> None:
        self.pattern = re.compile(pattern)
        super().__init__(name or "count")

    def score(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> list[float]:
        return [float(len(self.pattern.findall(t))) for t in texts]
