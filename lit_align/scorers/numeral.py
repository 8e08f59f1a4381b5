"""Numeral consistency for translation (CDPG's terminology-consistent translation,
Korbak et al. 2022, arXiv:2112.00791).

``b(x, c) = 1`` iff every number in the source sentence ``c`` appears in the translation
``x``, written as digits or (when ``target_words`` is given) as a number word of the
target language. Source numbers are found as digit strings or as number words of the
source phrase table (``one`` … ``twenty``, tens, ``hundred``/``thousand`` by themselves).

Matching is on whole tokens: ``one`` is not found inside ``someone`` or ``done``, ``1`` is
not found inside ``10`` or ``2021``; digit groups with thousands separators (``1,000``,
``1 000``, ``1.000``) are read as one number. Compound number words (``twenty-five``)
count as the number they spell. The paper's phrase table is ``one``…``ten`` → ``1``…``10``.
"""

from __future__ import annotations

import re
from typing import Sequence

from lit_align.contexts import source_of
from lit_align.scorers.base import Scorer

EN_NUMBERS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000,
}
FR_NUMBERS = {
    "un": 1, "une": 1, "deux": 2, "trois": 3, "quatre": 4, "cinq": 5, "six": 6, "sept": 7, "huit": 8,
    "neuf": 9, "dix": 10, "onze": 11, "douze": 12, "treize": 13, "quatorze": 14, "quinze": 15, "seize": 16,
    "dix-sept": 17, "dix-huit": 18, "dix-neuf": 19, "vingt": 20, "trente": 30, "quarante": 40,
    "cinquante": 50, "soixante": 60, "soixante-dix": 70, "quatre-vingts": 80, "quatre-vingt": 80,
    "quatre-vingt-dix": 90, "cent": 100, "mille": 1000,
}
DE_NUMBERS = {
    "eins": 1, "ein": 1, "eine": 1, "zwei": 2, "drei": 3, "vier": 4, "fünf": 5, "sechs": 6, "sieben": 7,
    "acht": 8, "neun": 9, "zehn": 10, "elf": 11, "zwölf": 12, "zwanzig": 20, "hundert": 100, "tausend": 1000,
}
PHRASE_TABLES = {"en": EN_NUMBERS, "fr": FR_NUMBERS, "de": DE_NUMBERS}

_DIGITS = re.compile(r"(?<![\w.,])\d{1,3}(?:(?:[,.]|\u202f|\u00a0| )\d{3})+(?![\w]|[.,]\d)|(?<![\w.,])\d+(?![\w]|[.,]\d)")
_WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*", re.UNICODE)


def _table(t: dict[str, int] | str | None) -> dict[str, int]:
    if t is None:
        return {}
    return PHRASE_TABLES[t] if isinstance(t, str) else {k.lower(): int(v) for k, v in t.items()}


def _word_value(word: str, table: dict[str, int]) -> int | None:
    w = word.lower()
    if w in table:
        return table[w]
    parts = w.split("-")
    if len(parts) > 1 and all(p in table for p in parts):  # twenty-five, vingt-deux
        values = [table[p] for p in parts]
        return sum(values) if values == sorted(values, reverse=True) else None
    return None


def find_numbers(text: str, words: dict[str, int] | str | None = "en", digits: bool = True) -> set[int]:
    """The numbers a text mentions: digit strings (separators removed) and number words."""
    table = _table(words)
    found: set[int] = set()
    if digits:
        for m in _DIGITS.finditer(text):
            found.add(int(re.sub(r"\D", "", m.group(0))))
    for m in _WORD.finditer(text):
        v = _word_value(m.group(0), table)
        if v is not None:
            found.add(v)
    return found


class NumeralConsistency(Scorer):
    """1 iff every number of the source appears in the output (as digits or target-language words).

    Args:
        source_words: phrase table of the source language (``"en"``, or a dict word → value).
        target_words: number words accepted in the output besides digits (``"fr"``, a dict, or
            None for digits only, as in the paper's phrase table).
        max_value: only source numbers up to this value are required (the paper's table stops at 10).
    """

    binary = True
    low, high = 0.0, 1.0

    def __init__(self, source_words: dict[str, int] | str = "en", target_words: dict[str, int] | str | None = "fr",
                 max_value: int | None = None, name: str | None = "numeral_consistency") -> None:
        super().__init__(name)
        self.source_words = _table(source_words)
        self.target_words = _table(target_words)
        self.max_value = max_value

    def required(self, source: str) -> set[int]:
        nums = find_numbers(source, self.source_words)
        return {n for n in nums if self.max_value is None or n <= self.max_value}

    def score(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> list[float]:

        if contexts is None:
            raise ValueError("NumeralConsistency needs the contexts (source sentences)")
        out = []
        for text, ctx in zip(texts, contexts):
            need = self.required(source_of(ctx))
            have = find_numbers(text, self.target_words) if need else set()
            out.append(float(need <= have))
        return out
