"""The scorer interface: decoded texts (and contexts) in, one float per text out.

Every scorer call of every method passes through :meth:`Scorer.__call__`, which validates the
output. A failure stops the run with a :class:`ScorerError` naming the scorer and quoting the
offending text (the CLI saves ``last.ckpt`` of the last completed step first): an exception, a
value that is not a number, the wrong number of values, or a non-finite value. Non-finite
values are not dropped: DPG's importance weights and Ẑ, and every policy-gradient baseline,
average over all the samples drawn, so silently leaving some out would change the objective.
A scorer that cannot score some texts should return a documented floor value for them.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from lit_align.errors import UserError, shorten


class ScorerError(UserError, RuntimeError):
    """A scorer raised, or returned something other than one finite float per text (a
    ``RuntimeError`` too, as a scorer's exception was before)."""


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
        texts = list(texts)
        try:
            out = self.score(texts, None if contexts is None else list(contexts))
        except Exception as err:  # re-raised with the scorer named
            raise ScorerError(f"{self._who()} raised {type(err).__name__}: {err} (on a batch of {len(texts)} texts, "
                              f"the first {shorten(texts[0]) if texts else '(none)'}); fix the scorer, or its "
                              "inputs") from err
        values = self._as_tensor(out, texts)
        if values.shape != (len(texts),):
            raise ScorerError(f"{self._who()} returned shape {tuple(values.shape)} for {len(texts)} texts; it must "
                              "return one value per text")
        bad = ~torch.isfinite(values)
        if bad.any():
            first = int(bad.nonzero()[0])
            raise ScorerError(
                f"{self._who()} returned {int(bad.sum())} non-finite values (NaN or inf) for {len(texts)} texts, "
                f"the first {values[first].item()} for text {first}: {shorten(texts[first])}; make it return a "
                "finite value for every text (e.g. a floor value for texts it cannot score)")
        return values

    def _who(self) -> str:
        return f"scorer {self.name!r} ({type(self).__name__})"

    def _as_tensor(self, out: object, texts: list[str]) -> Tensor:
        if isinstance(out, Tensor):
            values = out.detach().double()
            return values.reshape(-1) if values.dim() == 0 else values
        try:
            return torch.as_tensor(out, dtype=torch.float64).reshape(-1)
        except (TypeError, ValueError, RuntimeError) as err:
            what = type(out).__name__
            if isinstance(out, (list, tuple)) and out:
                what += f" of {type(out[0]).__name__} ({shorten(out[0], 40)}, ...)"
            raise ScorerError(f"{self._who()} returned {what} for {len(texts)} texts; it must return one number "
                              "per text (a list of floats or a 1-d tensor)") from err

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
