"""Energy-based targets ``P(x|c) = a(x|c) · Π_k potential_k(x, c)``.

The EBM of GDC's information projection (Khalifa et al. 2021, arXiv:2012.11635), written as
in disco (Kruszewski et al. 2023, arXiv:2303.05431).

A target is composed like in disco::

    from lit_align.targets import base, Pointwise, Exponential, RewardTilt
    target = base * Pointwise(WordPresence(["amazing"]))            # a · b
    target = base * Exponential([female], [lam])                     # a · exp(λ·φ)
    target = base * RewardTilt(reward_model, temperature=0.1)        # a · exp(r/β)

``base`` stands for the base LM ``a``; its log-probabilities are computed by the method
(it owns the model), and the target adds the log-potentials of the decoded texts. A training
step scores its samples once (``{scorer: values}``) and passes them to
:meth:`EBM.log_score_from`, so no scorer runs twice per step.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from lit_align.scorers.base import Scorer

__all__ = ["Potential", "Pointwise", "Exponential", "RewardTilt", "EBM", "base"]


class Potential:
    """A non-negative factor of the target, used through its log: ``log_potential(texts, contexts)``."""

    def log_potential(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> Tensor:
        raise NotImplementedError

    def scorers(self) -> list[Scorer]:
        """The scorers this potential reads (for logging their moments)."""
        return []

    def log_potential_from(self, scores: Mapping[Scorer, Tensor], texts: Sequence[str],
                           contexts: Sequence[str] | None = None) -> Tensor:
        """The log-potential from precomputed ``scores`` of :meth:`scorers` (default: recompute)."""
        return self.log_potential(texts, contexts)

    def __mul__(self, other: "Potential | EBM | _Base") -> "EBM":
        if isinstance(other, _Base):
            return EBM([self])
        return EBM([self]) * other

    def __rmul__(self, other: "_Base | Potential | EBM") -> "EBM":
        if isinstance(other, _Base):
            return EBM([self])
        return EBM([other]) * self if isinstance(other, Potential) else other * self


class Pointwise(Potential):
    """b(x) ∈ {0, 1}: ``log b`` is 0 or −inf (the pointwise constraint of GDC).

    ``epsilon > 0`` uses ``b + ε`` instead, which keeps every sample's target finite (CDPG
    uses 1e-4; reverse-KL f-DPG needs it, Go et al. 2023, arXiv:2302.08215).
    """

    def __init__(self, scorer: Scorer, epsilon: float = 0.0) -> None:
        if not isinstance(scorer, Scorer):
            raise TypeError(f"Pointwise needs a Scorer, got {type(scorer).__name__}")
        if epsilon < 0:
            raise ValueError(f"Pointwise: epsilon must be ≥ 0, got {epsilon}")
        self.scorer = scorer
        self.epsilon = epsilon

    def log_potential(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> Tensor:
        return self._log_b(self.scorer(texts, contexts))

    def log_potential_from(self, scores: Mapping[Scorer, Tensor], texts: Sequence[str],
                           contexts: Sequence[str] | None = None) -> Tensor:
        return self._log_b(scores[self.scorer])

    def _log_b(self, b: Tensor) -> Tensor:
        if ((b < 0) | (b > 1)).any():
            raise ValueError(
                f"pointwise scorer {self.scorer.name!r} returned values outside [0, 1]; "
                "a pointwise constraint needs b(x) ∈ {0, 1}"
            )
        return torch.log(b + self.epsilon)

    def scorers(self) -> list[Scorer]:
        return [self.scorer]


class Exponential(Potential):
    """``exp(Σ_k λ_k φ_k(x))``, the exponential-family factor of distributional constraints."""

    def __init__(self, scorers: Sequence[Scorer], coefficients: Sequence[float] | Tensor) -> None:
        self.features = list(scorers)
        self.coefficients = torch.as_tensor(coefficients, dtype=torch.float64).reshape(-1)
        if len(self.features) != self.coefficients.numel():
            raise ValueError(
                f"Exponential: {len(self.features)} scorers but {self.coefficients.numel()} coefficients"
            )

    def features_matrix(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> Tensor:
        return torch.stack([s(texts, contexts) for s in self.features], dim=-1)

    def log_potential(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> Tensor:
        return self.features_matrix(texts, contexts) @ self.coefficients

    def log_potential_from(self, scores: Mapping[Scorer, Tensor], texts: Sequence[str],
                           contexts: Sequence[str] | None = None) -> Tensor:
        return torch.stack([scores[s] for s in self.features], dim=-1) @ self.coefficients

    def scorers(self) -> list[Scorer]:
        return list(self.features)


class RewardTilt(Potential):
    """``exp(r(x)/β)``, β = ``temperature``: the implicit target of KL-regularised RL,
    ``a·exp(r/β)/Z`` (Korbak et al. 2022, arXiv:2205.11275)."""

    def __init__(self, scorer: Scorer, temperature: float = 1.0) -> None:
        if temperature <= 0:
            raise ValueError(f"RewardTilt: temperature must be > 0, got {temperature}")
        self.scorer = scorer
        self.temperature = temperature

    def log_potential(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> Tensor:
        return self.scorer(texts, contexts) / self.temperature

    def log_potential_from(self, scores: Mapping[Scorer, Tensor], texts: Sequence[str],
                           contexts: Sequence[str] | None = None) -> Tensor:
        return scores[self.scorer] / self.temperature

    def scorers(self) -> list[Scorer]:
        return [self.scorer]


class EBM:
    """``log P(x|c) = log a(x|c) + Σ_k log potential_k(x, c)``."""

    def __init__(self, potentials: Sequence[Potential] = ()) -> None:
        self.potentials = list(potentials)
        for p in self.potentials:
            if not isinstance(p, Potential):
                raise TypeError(f"EBM factors must be Potentials, got {type(p).__name__}")

    def __mul__(self, other: "Potential | EBM | _Base") -> "EBM":
        if isinstance(other, _Base):
            return EBM(self.potentials)
        extra = other.potentials if isinstance(other, EBM) else [other]
        return EBM(self.potentials + list(extra))

    def log_potential(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> Tensor:
        total = torch.zeros(len(texts), dtype=torch.float64)
        for p in self.potentials:
            total = total + p.log_potential(texts, contexts)
        return total

    def log_score(self, log_base: Tensor, texts: Sequence[str], contexts: Sequence[str] | None = None) -> Tensor:
        """``log P = log a + Σ log potentials`` (float64)."""
        return log_base.detach().double() + self.log_potential(texts, contexts).to(log_base.device)

    def score(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> dict[Scorer, Tensor]:
        """Every scorer's values on the texts, each scorer called once."""
        return {s: s(texts, contexts) for s in self.scorers()}

    def log_score_from(self, log_base: Tensor, scores: Mapping[Scorer, Tensor], texts: Sequence[str],
                       contexts: Sequence[str] | None = None) -> Tensor:
        """:meth:`log_score` from precomputed :meth:`score` values (no scorer runs again)."""
        total = torch.zeros(len(texts), dtype=torch.float64)
        for p in self.potentials:
            total = total + p.log_potential_from(scores, texts, contexts)
        return log_base.detach().double() + total.to(log_base.device)

    def scorers(self) -> list[Scorer]:
        seen: list[Scorer] = []
        for p in self.potentials:
            seen += [s for s in p.scorers() if s not in seen]
        return seen

    @property
    def is_pointwise(self) -> bool:
        return all(isinstance(p, Pointwise) for p in self.potentials)

    def __repr__(self) -> str:
        return "base * " + " * ".join(type(p).__name__ for p in self.potentials) if self.potentials else "base"


class _Base:
    """Placeholder for the base LM in ``base * potential`` expressions."""

    def __mul__(self, other: "Potential | EBM") -> EBM:
        return EBM(other.potentials if isinstance(other, EBM) else [other])

    def __repr__(self) -> str:
        return "base"


base = _Base()
