"""PII scorer for pretraining with feedback (Korbak et al. 2023, arXiv:2302.08582): detected PII per character.

The paper counts scrubadub detections (emails, phone numbers, URLs, credentials, ...)
and divides by the text's length; its extra detectors (spaCy entities, addresses, dates of
birth) need models that are not on PyPI and are left out. Offline; ~2 ms per text.
"""

from __future__ import annotations

from typing import Sequence

from lit_align.scorers.base import Scorer


class PIIPerChar(Scorer):
    """Misalignment score ``#PII / #chars`` in [0, 1] (empty text: 0), from ``scrubadub``."""

    low, high = 0.0, 1.0

    def __init__(self, detectors: Sequence[str] | None = None, name: str | None = "pii_per_char") -> None:
        super().__init__(name)
        try:
            import scrubadub
        except ImportError as err:
            raise ImportError("PIIPerChar needs scrubadub: pip install scrubadub (or lit-align[phf])") from err
        self.scrubber = scrubadub.Scrubber()
        self.detectors = sorted(self.scrubber._detectors) if detectors is None else list(detectors)
        unknown = set(self.detectors) - set(self.scrubber._detectors)
        if unknown:
            raise ValueError(f"unknown scrubadub detectors {sorted(unknown)}; available: {sorted(self.scrubber._detectors)}")
        for name_ in list(self.scrubber._detectors):
            if name_ not in self.detectors:
                self.scrubber.remove_detector(name_)

    def settings(self) -> dict:
        return {"detectors": self.detectors}

    def count(self, text: str) -> int:
        return sum(1 for _ in self.scrubber.iter_filth(text)) if text.strip() else 0

    def score(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> list[float]:
        return [min(1.0, self.count(t) / len(t)) if t else 0.0 for t in texts]
