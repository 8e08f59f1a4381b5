"""Entity-level factual consistency for summarization (CDPG, Korbak et al. 2022, arXiv:2112.00791).

``b(x, c) = 1`` iff the summary ``x`` names at least ``min_entities`` distinct named
entities and every one of them appears in the source article ``c`` (case-insensitive; the
paper lower-cases entities, uses spaCy with labels PERSON, FAC, GPE, ORG, NORP, LOC, EVENT
and ``min_entities = 4``).

Extractor (``backend``):

- ``spacy``: a spaCy pipeline (``en_core_web_sm`` by default), entities of ``labels``.
- ``rules``: a documented rule-based extractor that needs nothing installed:
  1. the text is split into sentences (``.``, ``!``, ``?`` followed by space) and tokens;
  2. an entity is a maximal run of capitalised tokens (first letter upper case, e.g.
     ``Barack Obama``, ``New York``) that may contain the connectors ``of``, ``de``,
     ``van``, ``von``, ``da``, ``al``, ``&`` between capitalised tokens (``Bank of England``),
     except ``of`` after a run of two or more words that does not end in an institution or
     title word (``OF_HEADS``): ``Kenji Mori of Estria`` is two entities;
     all-caps tokens (``NASA``, ``U.S.``) and tokens with inner capitals count too;
     punctuation (``,``, ``;``, ``:``, brackets, quotes) ends a run;
  3. runs made only of common words (articles, pronouns, conjunctions, weekdays, months,
     ... — ``STOP``) are dropped; a leading stop word is stripped from a longer run
     (``The Bank of England`` → ``Bank of England``); possessive ``'s`` is removed; a
     one-word run at the start of a sentence (``Floods hit ...``) is kept only if that
     word also appears capitalised inside a sentence of the text or of the source
     (``known``), so sentence-initial capitals of common words are not entities;
  4. entities are compared lower-cased with whitespace normalised, so ``OBAMA`` in a
     summary matches ``Obama`` in the source.
  It finds names, places and organisations written in title case; it misses lower-case
  entities and cannot tell labels apart (every run is an entity).
- ``auto`` (default): spaCy when it and the model are installed, else the rules.
"""

from __future__ import annotations

import re
import warnings
from typing import Sequence

from lit_align.contexts import source_of
from lit_align.scorers.base import Scorer

SPACY_LABELS = ("PERSON", "FAC", "GPE", "ORG", "NORP", "LOC", "EVENT")
CONNECTORS = {"of", "de", "del", "la", "van", "von", "da", "al", "&", "and"}
STOP = set("""
a an the this that these those it its he she his her hers they them their we our us you your i me my
in on at by for to from with without after before during while since until into onto over under
and or but nor so yet if when where why how what which who whom whose there here then than as also
not no yes all any some many much more most each every both either neither one two three
mr mrs ms dr sir madam prof
monday tuesday wednesday thursday friday saturday sunday
january february march april may june july august september october november december
today yesterday tomorrow however meanwhile although because according despite last next
""".split())

_SENT = re.compile(r"(?<!\b[A-Z]\.)(?<=[.!?])\s+")  # not after initials (U.S. Navy)
_TOKEN = re.compile(r"[A-Za-z\u00C0-\u024F0-9][\w\u00C0-\u024F.'’&-]*|&|[,;:()\[\]\"“”«»]")
_PUNCT = set(',;:()[]"“”«»')


def _is_cap(tok: str) -> bool:
    return tok[:1].isupper() or (len(tok) > 1 and any(ch.isupper() for ch in tok[1:]) and tok[:1].isalpha())


def _clean(tok: str) -> str:
    tok = re.sub(r"['’]s$", "", tok)
    return tok.rstrip(".,;:'’-") if not re.fullmatch(r"(?:[A-Z]\.)+", tok) else tok


def normalize(entity: str) -> str:
    return " ".join(entity.lower().split())


def _sentences(text: str) -> list[list[str]]:
    return [[m.group(0) for m in _TOKEN.finditer(sent)] for sent in _SENT.split(text)]


def capitalised_inside(text: str) -> set[str]:
    """Lower-cased words that appear capitalised somewhere other than at a sentence start."""
    out = set()
    for tokens in _sentences(text):
        words = [t for t in tokens if t not in _PUNCT]
        out |= {_clean(t).lower() for t in words[1:] if _is_cap(t)}
    return out


#: last words before "of" that make one name of the whole run (Bank of England, Chamber of Commerce)
OF_HEADS = set("""
bank university college school institute museum church cathedral chamber ministry department office
board council court commission committee society association federation union league company corporation
republic kingdom state province county district city port bay gulf sea isle house palace tower
duke duchess prince princess king queen earl lord lady governor mayor president secretary minister
""".split())


def _name_then_of(run: list[str], connector: str) -> bool:
    """``of`` after a multi-word run not ending in an institution or title word ends the run
    (``Kenji Mori of Estria`` is two entities; ``Bank of England``, ``Valmora Chamber of
    Commerce``, ``Duke of Edinburgh`` are one)."""
    return connector.lower() == "of" and len(run) >= 2 and _clean(run[-1]).lower() not in OF_HEADS


def rule_entities(text: str, known: set[str] | None = None) -> set[str]:
    """Named entities of ``text`` by the rules of the module docstring (lower-cased).

    ``known``: extra words known to be capitalised mid-sentence (e.g. from the source).
    """
    known = capitalised_inside(text) | (known or set())
    found: set[str] = set()
    for tokens in _sentences(text):
        first = next((k for k, t in enumerate(tokens) if t not in _PUNCT), None)
        i = 0
        while i < len(tokens):
            if tokens[i] in _PUNCT or not _is_cap(tokens[i]):
                i += 1
                continue
            start, run, j = i, [tokens[i]], i + 1
            while j < len(tokens) and tokens[j] not in _PUNCT:
                if _is_cap(tokens[j]):
                    run.append(tokens[j])
                    j += 1
                elif tokens[j].lower() in CONNECTORS and tokens[j].lower() != "and" and j + 1 < len(tokens) \
                        and tokens[j + 1] not in _PUNCT and _is_cap(tokens[j + 1]):
                    if _name_then_of(run, tokens[j]):
                        break  # "Kenji Mori of Estria": a person, then a place
                    run += [tokens[j], tokens[j + 1]]
                    j += 2
                else:
                    break
            words = [_clean(t) for t in run]
            while words and words[0].lower() in STOP:
                words, start = words[1:], start + 1
            while words and (words[-1].lower() in CONNECTORS or not words[-1]):
                words = words[:-1]
            if len(words) == 1 and start == first and words[0].lower() not in known and not words[0].isupper():
                words = []  # a capitalised sentence start, not known as a name
            if words and not all(w.lower() in STOP for w in words):
                found.add(normalize(" ".join(words)))
            i = j
    return found


class EntityConsistency(Scorer):
    """1 iff the summary has ≥ ``min_entities`` distinct named entities, all present in the source.

    Args:
        min_entities: the paper's ``scorer_attribute`` (4).
        backend: ``auto``, ``spacy`` or ``rules`` (see the module docstring).
        spacy_model: the spaCy pipeline to load.
        labels: spaCy entity labels that count.
    """

    binary = True
    low, high = 0.0, 1.0

    def __init__(self, min_entities: int = 4, backend: str = "auto", spacy_model: str = "en_core_web_sm",
                 labels: Sequence[str] = SPACY_LABELS, name: str | None = "entity_consistency") -> None:
        super().__init__(name)
        if backend not in ("auto", "spacy", "rules"):
            raise ValueError(f"backend must be auto, spacy or rules, got {backend!r}")
        if min_entities < 0:
            raise ValueError(f"min_entities must be ≥ 0, got {min_entities}")
        self.min_entities = min_entities
        self.labels = set(labels)
        self.spacy_model = spacy_model
        self._nlp = None
        self.backend = self._resolve(backend)

    def _resolve(self, backend: str) -> str:
        if backend == "rules":
            return "rules"
        try:
            import spacy

            self._nlp = spacy.load(self.spacy_model, disable=["parser", "lemmatizer"])
            return "spacy"
        except (ImportError, OSError) as err:
            if backend == "spacy":
                raise RuntimeError(
                    f"EntityConsistency(backend='spacy') needs spaCy and the model {self.spacy_model!r} "
                    f"(pip install spacy; python -m spacy download {self.spacy_model}), or use backend: rules ({err})"
                ) from err
            warnings.warn("EntityConsistency: spaCy or its model is not installed; using the rule-based extractor",
                          stacklevel=3)
            return "rules"

    def entities(self, text: str, source: str | None = None) -> set[str]:
        if self.backend == "spacy":
            return {normalize(e.text) for e in self._nlp(text).ents if e.label_ in self.labels}
        return rule_entities(text, capitalised_inside(source) if source else None)

    def details(self, text: str, source: str) -> tuple[int, int]:
        """(number of distinct entities in ``text``, how many of them appear in ``source``)."""
        ents = self.entities(text, source)
        src = normalize(source)
        return len(ents), sum(re.search(r"(?<!\w)" + re.escape(e) + r"(?!\w)", src) is not None for e in ents)

    def score(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> list[float]:

        if contexts is None:
            raise ValueError("EntityConsistency needs the contexts (source articles)")
        out = []
        for text, ctx in zip(texts, contexts):
            n, present = self.details(text, source_of(ctx))
            out.append(float(n >= self.min_entities and present == n))
        return out
