"""Toxicity scorers for pretraining with feedback (Korbak et al. 2023, arXiv:2302.08582): a probability in [0, 1].

- :class:`ProfanityCheck` (default, offline): ``alt-profanity-check``, a linear SVM on
  bag-of-words shipped inside the package; offensive-language probability.
- :class:`Detoxify`: the paper's scorer (``Detoxify('unbiased')`` toxicity). It downloads
  its checkpoint on first use, so it works only with network access (or a warm torch hub
  cache); without it, construction fails at once with a clear error.
"""

from __future__ import annotations

from typing import Sequence

from lit_align.scorers.base import Scorer


class ProfanityCheck(Scorer):
    """Offensive-language probability from ``alt-profanity-check`` (offline)."""

    low, high = 0.0, 1.0

    def __init__(self, name: str | None = "toxicity") -> None:
        super().__init__(name)
        try:
            from profanity_check import predict_prob
        except ImportError as err:
            raise ImportError("ProfanityCheck needs alt-profanity-check: pip install alt-profanity-check "
                              "(or lit-align[phf])") from err
        self._predict = predict_prob

    def settings(self) -> dict:
        import importlib.metadata

        return {"version": importlib.metadata.version("alt-profanity-check")}

    def score(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> list[float]:
        if not texts:
            return []
        probs = self._predict([t if t.strip() else " " for t in texts])
        return [float(p) if t.strip() else 0.0 for p, t in zip(probs, texts)]


class Detoxify(Scorer):
    """``Detoxify(variant)`` toxicity probability (the paper: ``'unbiased'``); needs its checkpoint."""

    low, high = 0.0, 1.0

    def __init__(self, variant: str = "unbiased", device: str = "cpu", batch_size: int = 64,
                 name: str | None = "toxicity") -> None:
        super().__init__(name)
        try:
            from detoxify import Detoxify as _Detoxify
        except ImportError as err:
            raise ImportError("Detoxify needs the detoxify package: pip install detoxify; offline, use "
                              "lit_align.scorers.ProfanityCheck instead") from err
        try:
            self.model = _Detoxify(variant, device=device)
        except Exception as err:  # no network: the checkpoint download fails
            raise RuntimeError(
                f"Detoxify({variant!r}) could not load its checkpoint ({type(err).__name__}: {err}). It is downloaded "
                "on first use and needs network access; offline, use lit_align.scorers.ProfanityCheck."
            ) from err
        self.variant, self.batch_size = variant, batch_size

    def settings(self) -> dict:
        return {"variant": self.variant}

    def score(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> list[float]:
        out: list[float] = []
        for i in range(0, len(texts), self.batch_size):
            out += [float(p) for p in self.model.predict(list(texts[i:i + self.batch_size]))["toxicity"]]
        return out
