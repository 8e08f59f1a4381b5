"""The rollout of one on-policy training step: what was sampled and everything computed on it once.

An on-policy method's step is ``rollout → objective → update``: the base module builds a
:class:`Rollout` (samples, ``log_q``, ``log_a``, every scorer's scores, ``log_P``), the method's
``loss_and_metrics(rollout, state)`` turns it into a minibatch surrogate loss and its metrics,
and the update fills in ``log_pi`` (the policy's sequence log-probs of the gradient pass).
Callbacks read the last one as ``module.last_rollout``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from torch import Tensor

from lit_align.models.samples import Samples

#: a minibatch surrogate: ``loss(minibatch, log_pi, rows)``, with ``log_pi`` the policy's
#: sequence log-probs of the minibatch (with gradients) and ``rows`` its slice of the rollout
Loss = Callable[[Samples, Tensor, slice], Tensor]


@dataclass
class NoSignal:
    """What an objective returns instead of a loss when the rollout gives no gradient signal."""

    reason: str


@dataclass
class Rollout:
    """One step's samples and per-sample quantities (rows grouped by context).

    Attributes:
        samples: the completions (with ``context_index``).
        log_q: (B,) float64 log-probs under the distribution sampled from (the proposal q).
        log_a: (B,) float64 base log-probs, or None when the method does not read the base.
        scores: each scorer's values, computed once per step (keyed by the scorer object).
        log_P: (B,) float64 unnormalised target log-scores (EBM methods), else None.
        log_pi: (B,) policy log-probs (detached), filled in by the update's gradient pass.
        loss: the minibatch surrogate the update back-propagated (for diagnostics), or None.
        loss_value: the full-batch value of that surrogate (float64), or None.
        advantages: (B,) per-sample weights of ∇log π in the loss (for diagnostics), or None.
        satisfying: (B,) bool, samples with P > 0 (EBM targets), or None.
        stepped: whether the update changed the parameters.
        extras: method-specific per-step values (e.g. PPO's per-token tensors).
        gather: per-sample tensor → the tensor over all ranks (identity on one process).
    """

    samples: Samples
    log_q: Tensor
    log_a: Tensor | None = None
    scores: Mapping = field(default_factory=dict)
    log_P: Tensor | None = None
    log_pi: Tensor | None = None
    loss: Loss | None = None
    loss_value: Tensor | None = None
    advantages: Tensor | None = None
    satisfying: Tensor | None = None
    stepped: bool = False
    extras: dict = field(default_factory=dict)
    gather: Callable[[Tensor], Tensor] = field(default=lambda t: t, repr=False)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def context_index(self) -> Tensor:
        return self.samples.context_index

    @property
    def texts(self) -> list[str]:
        return self.samples.texts

    def scores_by_name(self) -> dict[str, Tensor]:
        """``{scorer name: values}`` (the ``scorer/<name>`` metrics)."""
        return {s.name: v for s, v in self.scores.items()}
