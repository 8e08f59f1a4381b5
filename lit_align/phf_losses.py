"""Token-level losses of pretraining with human feedback (PHF; Korbak et al. 2023, arXiv:2302.08582).

Pure functions of tensors. Every function takes per-token log-probabilities ``log_probs``
(B, L) of the tokens being predicted (with grad), the misalignment score ``scores`` (B, L)
of the segment each predicted token belongs to (in [0, 1], lower is better; the reward is
``R = −s``) and a ``mask`` (B, L) of the tokens that count. ``reduction`` is ``"mean"``
(over masked tokens), ``"sum"`` (the module divides by the batch's token count itself, so
minibatches add up to a full-batch mean) or ``"none"`` (per-token terms, 0 off the mask).

MLE and filtering share :func:`mle_loss` (filtering drops documents in the data);
conditional training is MLE on a stream with control tokens (also in the data).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lit_align.masked import masked_mean

__all__ = ["mle_loss", "unlikelihood_loss", "ul_aligned_weight", "awr_weights", "awr_loss", "rwr_loss",
           "value_from_hidden", "theoretical_loss"]


def masked_reduce(terms: Tensor, mask: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return masked_mean(terms, mask)
    terms = terms * mask
    if reduction == "sum":
        return terms.sum()
    if reduction == "none":
        return terms
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _mask(log_probs: Tensor, mask: Tensor | None) -> Tensor:
    return torch.ones_like(log_probs) if mask is None else mask.to(log_probs.dtype)


def mle_loss(log_probs: Tensor, mask: Tensor | None = None, reduction: str = "mean") -> Tensor:
    """``L = mean_i CE_i = −mean_i log π(x_i | x_<i)`` (MLE, filtering, conditional training)."""
    return masked_reduce(-log_probs, _mask(log_probs, mask), reduction)


def ul_aligned_weight(scores: Tensor, threshold: float, mode: str = "hard") -> Tensor:
    """Weight of the likelihood term of each token in unlikelihood training.

    ``"hard"`` (the paper's method): ``1[s ≤ threshold]``, also for ``threshold = 0``.
    ``"soft"``: ``1 − s``. ``"released"``: what the released code does, ``"soft"`` when the
    threshold is falsy (0 — the PII and PEP8 configs) and ``"hard"`` otherwise (docs/phf.md).
    """
    if mode == "released":
        mode = "hard" if threshold else "soft"
    if mode == "hard":
        return (scores <= threshold).to(scores.dtype)
    if mode == "soft":
        return 1.0 - scores
    raise ValueError(f"ul_mode must be 'hard', 'soft' or 'released', got {mode!r}")


def unlikelihood_loss(
    log_probs: Tensor,
    scores: Tensor,
    mask: Tensor | None = None,
    threshold: float = 0.0,
    alpha: float = 1.0,
    mode: str = "hard",
    reduction: str = "mean",
) -> Tensor:
    """Token-level unlikelihood (Welleck et al. 2020, arXiv:1908.04319), as PHF uses it.

    ``L = mean_i[ −a_i·log p_i − α·(1 − a_i)·log max(1 − p_i, 1e−20) ]`` with
    ``p_i = π(x_i | x_<i)`` and ``a_i`` from :func:`ul_aligned_weight`.
    """
    aligned = ul_aligned_weight(scores.to(log_probs.dtype), threshold, mode)
    log_one_minus_p = torch.log(torch.clamp(1.0 - log_probs.exp(), min=1e-20))
    terms = -aligned * log_probs - alpha * (1.0 - aligned) * log_one_minus_p
    return masked_reduce(terms, _mask(log_probs, mask), reduction)


def awr_weights(rewards: Tensor, values: Tensor | float, temperature: float, max_weight: float = 1000.0) -> Tensor:
    """``w_i = clamp(exp((R_i − V_i)/β), 0, max_weight)``, β = ``temperature``, the value detached."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    values = values.detach() if isinstance(values, Tensor) else values
    return torch.clamp(torch.exp((rewards.detach() - values) / temperature), 0.0, max_weight)


def awr_loss(
    log_probs: Tensor,
    scores: Tensor,
    values: Tensor,
    mask: Tensor | None = None,
    alpha: float = 0.5,
    temperature: float = 1.0,
    max_weight: float = 1000.0,
    reduction: str = "mean",
) -> Tensor:
    """Advantage-weighted regression (Peng et al. 2019, arXiv:1910.00177), as PHF uses it.

    ``R_i = −s_i``, ``A_i = R_i − V_i.detach()``, ``w_i = clamp(exp(A_i/β), 0, max_weight)`` (β = ``temperature``),
    ``L = α·mean_i(CE_i·w_i) + (1 − α)·mean_i (V_i − R_i)²``, where ``V_i`` is the value at
    the position that predicts token i (the value term's gradient reaches the trunk).
    """
    m = _mask(log_probs, mask)
    rewards = -scores.to(log_probs.dtype)
    w = awr_weights(rewards, values, temperature, max_weight)
    terms = alpha * (-log_probs) * w + (1.0 - alpha) * (values - rewards) ** 2
    return masked_reduce(terms, m, reduction)


def rwr_loss(
    log_probs: Tensor,
    scores: Tensor,
    mask: Tensor | None = None,
    temperature: float = 10.0,
    baseline: float = 0.0,
    max_weight: float = 1000.0,
    reduction: str = "mean",
) -> Tensor:
    """Reward-weighted regression: ``L = mean_i CE_i·clamp(exp((R_i − b)/β), 0, max_weight)``, β = ``temperature``.

    AWR with α = 1 and a constant value ``b``. The released code keeps a value head that
    gets no gradient at α = 1 and stays at ``−sigmoid(0) = −0.5``: ``baseline = −0.5``
    reproduces its weights exactly; the default 0 is textbook RWR (the two differ by the
    constant factor e^{0.5/β} on the loss). See docs/phf.md.
    """
    rewards = -scores.to(log_probs.dtype)
    w = awr_weights(rewards, baseline, temperature, max_weight)
    return masked_reduce(-log_probs * w, _mask(log_probs, mask), reduction)


def value_from_hidden(hidden: Tensor, weight: Tensor) -> Tensor:
    """The paper's value head ``V = −sigmoid(h·w)`` (no bias), so that V ∈ (−1, 0) like R."""
    return -torch.sigmoid(hidden @ weight)


def theoretical_loss(n_params: float, n_tokens: float) -> float:
    """Chinchilla's fitted law ``1.69 + 406.4/N^0.34 + 410.7/D^0.28`` (logged as a yardstick)."""
    if n_params <= 0 or n_tokens <= 0:
        return math.inf
    return 1.69 + 406.4 / n_params**0.34 + 410.7 / n_tokens**0.28
