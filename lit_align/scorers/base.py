"""The scorer interface: decoded texts (and contexts) in, one float per text out."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor


class Scorer:
    """A feature φ(x, c) of decoded texts. Subclasses implement :meth:`score`.

    A scorer never sees model tensors. ``binary`` scorers return values in {0, 1} and can
    serve as pointwise constraints b(x); ``low``/``high`` bound the values (used to check
    that a desired moment is reachable).
    """

    binary: bool = False
    low: float = -math.inf
    high: float = math.inf

    def __init__(self, name: str | None = None) -> None:
        self.name = name or type(self).__name__.lower()

    def score(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> Sequence[float] | Tensor:
        raise NotImplementedError

    def __call__(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> Tensor:
        """Score and validate: a float64 tensor of shape (len(texts),), all finite."""
        try:
            out = self.score(list(texts), None if contexts is None else list(contexts))
        except Exception as err:  # re-raised with the scorer named
            raise RuntimeError(f"scorer {self.name!r} ({type(self).__name__}) raised: {err!r}") from err
        out = torch.as_tensor(out, dtype=torch.float64).reshape(-1) if not isinstance(out, Tensor) else out.detach().double()
        if out.shape != (len(texts),):
            raise ValueError(
                f"scorer {self.name!r} returned shape {tuple(out.shape)} for {len(texts)} texts; "
                "it must return one value per text"
            )
        if not torch.isfinite(out).all():
            bad = int((~torch.isfinite(out)).sum())
            raise ValueError(f"scorer {self.name!r} returned {bad} non-finite values (NaN or inf)")
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
