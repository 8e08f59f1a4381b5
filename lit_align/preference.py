"""Preference losses and Bradley–Terry helpers, as pure functions of tensors.

Yun et al. 2025 (arXiv:2506.01523: preference MLE, preference distillation), DPO (Rafailov
et al. 2023, arXiv:2305.18290) and IPO (Azar et al. 2024, arXiv:2310.12036). Inputs are *sequence* log-probs (sums over completion tokens)
of the chosen ``w`` and rejected ``l`` completions of each pair: ``Δ_π = log π(w) − log π(l)``.
Every loss here is the exact per-pair loss (its value, not only its gradient, is meaningful),
so population losses on the toy space are sums of these terms weighted by pair probabilities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_align.losses import reduce_terms

__all__ = [
    "DPO_LOSS_TYPES",
    "bt_probability",
    "bradley_terry_loss",
    "dpo_loss",
    "pmle_loss",
    "preference_distillation_loss",
    "bernoulli_kl",
    "implicit_rewards",
    "soft_label_accuracy",
]

DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge")


def _same_shape(**tensors: Tensor) -> None:
    shapes = {k: tuple(v.shape) for k, v in tensors.items() if isinstance(v, Tensor)}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"preference loss inputs must have one shape per pair; got {shapes}")


def bt_probability(score_a: Tensor, score_b: Tensor, scale: float = 1.0) -> Tensor:
    """Bradley–Terry ``P(a ≻ b) = σ(scale·(s(a) − s(b)))`` (Yun et al. 2025, arXiv:2506.01523).

    With ``s = ln π*`` and ``scale = γ`` this is Yun et al.'s generative model
    ``π*(a)^γ / (π*(a)^γ + π*(b)^γ)``; with a reward ``r`` and ``scale = 1`` it is the
    usual BT model of reward learning.
    """
    return torch.sigmoid(scale * (score_a.double() - score_b.double()))


def bradley_terry_loss(
    reward_chosen: Tensor, reward_rejected: Tensor, label: Tensor | None = None, reduction: str = "mean"
) -> Tensor:
    """Reward-model loss ``−ln σ(R(w) − R(l))`` (Yun et al. 2025, arXiv:2506.01523, eq. 9).

    ``label`` (optional, in [0, 1]) is the probability that ``w`` is preferred: the loss is then
    the cross-entropy ``−p·ln σ(Δ) − (1−p)·ln σ(−Δ)``, so soft or flipped labels work.
    Minimised over all reward functions, the population optimum is ``R = s + c`` when labels
    follow BT with score s.
    """
    _same_shape(chosen=reward_chosen, rejected=reward_rejected)
    margin = reward_chosen - reward_rejected
    if label is None:
        terms = F.softplus(-margin)
    else:
        p = label.to(margin.dtype)
        terms = p * F.softplus(-margin) + (1 - p) * F.softplus(margin)
    return reduce_terms(terms, reduction)


def soft_label_accuracy(margin: Tensor, p_chosen: Tensor) -> tuple[Tensor, Tensor]:
    """Expected accuracy of a pair predictor against fresh Bradley–Terry labels, and its ceiling.

    With ``p = P(chosen ≻ rejected)`` known (synthetic data), a predictor that ranks the pair by
    ``margin`` (> 0: chosen first) matches a fresh label with probability ``p`` if margin > 0,
    ``1 − p`` if margin < 0 and ½ on a tie. Returns the means of that probability and of
    ``max(p, 1 − p)``, the best any predictor can reach on these pairs. Averaging probabilities
    instead of 0/1 hits removes the label noise from a held-out accuracy.
    """
    _same_shape(margin=margin, p=p_chosen)
    p = p_chosen.double()
    m = margin.double()
    hit = torch.where(m > 0, p, torch.where(m < 0, 1 - p, torch.full_like(p, 0.5)))
    return hit.mean(), torch.maximum(p, 1 - p).mean()


def implicit_rewards(log_pi: Tensor, log_ref: Tensor, kl_coef: float) -> Tensor:
    """DPO's implicit reward ``β·(log π − log π_ref)`` of each completion (detached), β = ``kl_coef``
    (Rafailov et al. 2023, arXiv:2305.18290)."""
    return (kl_coef * (log_pi.detach().double() - log_ref.detach().double()))


def dpo_loss(
    log_pi_chosen: Tensor,
    log_pi_rejected: Tensor,
    log_ref_chosen: Tensor,
    log_ref_rejected: Tensor,
    kl_coef: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> Tensor:
    """DPO and its variants, with ``h = Δ_π − Δ_ref``:

    - ``sigmoid`` (Rafailov et al. 2023, arXiv:2305.18290): ``−(1−ε)·ln σ(βh) − ε·ln σ(−βh)``; ε is the
      label-smoothing of conservative/robust DPO (ε = 0: plain DPO). With BT labels from a
      reward r and pairs of full support, the population optimum is ``π_ref·e^{r/β}/Z``.
    ``kl_coef`` is the coefficient of the KL regulariser each variant solves for: β of DPO and
    SLiC, τ of IPO.

    - ``ipo`` (Azar et al. 2024, arXiv:2310.12036): ``(h − 1/(2τ))²`` with τ = ``kl_coef`` (sequence-level ``h`` as
      in the paper; TRL divides log-probs by the token count first). Optimum
      ``π_ref·e^{P(y≻μ)/τ}/Z``.
    - ``hinge`` (SLiC): ``max(0, 1 − βh)``.
    """
    _same_shape(pc=log_pi_chosen, pr=log_pi_rejected, rc=log_ref_chosen, rr=log_ref_rejected)
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {DPO_LOSS_TYPES}, got {loss_type!r}")
    if kl_coef <= 0:
        raise ValueError(f"kl_coef (β, or τ for ipo) must be > 0, got {kl_coef}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    h = (log_pi_chosen - log_pi_rejected) - (log_ref_chosen.detach() - log_ref_rejected.detach()).to(log_pi_chosen.dtype)
    if loss_type == "sigmoid":
        terms = (1 - label_smoothing) * F.softplus(-kl_coef * h) + label_smoothing * F.softplus(kl_coef * h)
    elif loss_type == "ipo":
        terms = (h - 1.0 / (2.0 * kl_coef)) ** 2
    else:
        terms = torch.relu(1.0 - kl_coef * h)
    return reduce_terms(terms, reduction)


def pmle_loss(log_pi_chosen: Tensor, log_pi_rejected: Tensor, gamma: float, reduction: str = "mean") -> Tensor:
    """Preference maximum likelihood (Yun et al. 2025, arXiv:2506.01523, eq. 4): ``−ln σ(γ·Δ_π)``.

    The LM itself is the preference model ``σ(γ ln π(w)/π(l))``: no reference inside the
    sigmoid. The regulariser β·KL(π‖π0) is a separate term, estimated on samples from π
    (the method adds it). With β = 0 and labels drawn from π* with the same γ, the
    population optimum is π* (checked exactly on the toy space: tests/test_preference_toy.py).
    """
    _same_shape(chosen=log_pi_chosen, rejected=log_pi_rejected)
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    return reduce_terms(F.softplus(-gamma * (log_pi_chosen - log_pi_rejected)), reduction)


def bernoulli_kl(p: Tensor, logit_q: Tensor) -> Tensor:
    """``KL(Bern(p) ‖ Bern(σ(logit_q)))`` elementwise (0·ln 0 = 0), differentiable in ``logit_q``."""
    p = p.to(logit_q.dtype)
    ent = torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p)  # −H(p)
    return ent + p * F.softplus(-logit_q) + (1 - p) * F.softplus(logit_q)


def preference_distillation_loss(
    log_pi_a: Tensor,
    log_pi_b: Tensor,
    soft_label: Tensor,
    gamma: float,
    reduction: str = "mean",
) -> Tensor:
    """Preference distillation (Yun et al. 2025, arXiv:2506.01523, eq. 11): ``KL(Bern(p̂) ‖ Bern(σ(γ·Δ_π(a, b))))``.

    ``p̂ = σ(R̂(a) − R̂(b))`` is the reward model's probability that a ≻ b (detached). The
    value is the Bernoulli KL itself (0 when the LM's preference matches p̂); its gradient
    equals that of the cross-entropy ``−p̂ ln σ(γΔ) − (1−p̂) ln σ(−γΔ)``. With an exact reward
    model ``R̂ = γ ln π* + c`` the population optimum is π* (tests/test_preference_toy.py).
    """
    _same_shape(a=log_pi_a, b=log_pi_b, label=soft_label)
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    p = soft_label.detach()
    if ((p < 0) | (p > 1)).any():
        raise ValueError("soft_label must hold probabilities in [0, 1]")
    return reduce_terms(bernoulli_kl(p, gamma * (log_pi_a - log_pi_b)), reduction)
