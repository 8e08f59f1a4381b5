"""Loss functions, one per objective, as pure functions of tensors.

Each takes per-sample sequence log-probabilities ``log_pi`` of the policy (with grad) and
detached quantities (target log-scores, proposal log-probs, rewards), and returns the
mean loss, or per-sample terms with ``reduction="none"``. Their *gradients* are the
estimators of the papers; loss *values* are surrogates unless a docstring says otherwise.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["dpg_loss", "reinforce_loss", "kl_shaped_reward", "rl_kl_loss"]


def _reduce(terms: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return terms.mean()
    if reduction == "sum":
        return terms.sum()
    if reduction == "none":
        return terms
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def dpg_loss(
    log_pi: Tensor,
    log_P: Tensor,
    log_q: Tensor,
    log_z: Tensor | float,
    baseline: bool = True,
    normalize: bool = True,
    reduction: str = "mean",
) -> Tensor:
    """Distributional policy gradient (DPG / GDC / GDC++), methods.md §1.2 and §3.2.

    ``loss = −mean( (P/(Ẑq) − [π/q]) · log π )``, samples x ~ q; the bracket is the
    baseline (GDC++), which keeps the estimator unbiased because E_q[π/q ∇log π] = 0.
    Its expected gradient is ∇KL(p‖π) = −E_p[∇ log π].

    On-policy, pass ``log_q = log_pi.detach()`` (then π/q = 1). With
    ``normalize=False`` the GDC code's unnormalised form ``(P/q − Ẑ·π/q)`` is used, whose
    gradient is Ẑ times larger (Z acts as a learning-rate scale).
    """
    log_pi_d = log_pi.detach().to(torch.float64)
    log_q = log_q.detach().to(torch.float64)
    log_z = torch.as_tensor(log_z, dtype=torch.float64, device=log_pi.device)
    log_w = log_P.detach().to(torch.float64) - log_q
    coef = torch.exp(log_w - log_z)  # P / (Ẑ q); 0 where P = 0
    if baseline:
        coef = coef - torch.exp(log_pi_d - log_q)
    if not normalize:
        coef = coef * torch.exp(log_z)
    terms = -coef.to(log_pi.dtype) * log_pi
    return _reduce(terms, reduction)


def reinforce_loss(
    log_pi: Tensor,
    reward: Tensor,
    baseline: Tensor | float = 0.0,
    reduction: str = "mean",
) -> Tensor:
    """REINFORCE: ``loss = −mean((R − b) · log π)`` on π's own samples (Williams 1992).

    Its gradient is an unbiased estimate of −∇E_π[R] for any baseline b that does not
    depend on the sample.
    """
    adv = (reward.detach().to(torch.float64) - torch.as_tensor(baseline, dtype=torch.float64))
    terms = -adv.to(log_pi.dtype) * log_pi
    return _reduce(terms, reduction)


def kl_shaped_reward(reward: Tensor, log_pi: Tensor, log_a: Tensor, beta: float) -> Tensor:
    """``R̃ = R − β·(log π − log a)``: the reward with the k1 estimate of KL(π‖a) (§2, §7).

    Its mean over π's samples is an unbiased estimate of the KL-regularised objective
    ``J_KL = E_π[R] − β·KL(π‖a)`` (the ELBO times β).
    """
    return reward.detach().double() - beta * (log_pi.detach().double() - log_a.detach().double())


def rl_kl_loss(
    log_pi: Tensor,
    reward: Tensor,
    log_a: Tensor,
    beta: float,
    baseline: Tensor | float = 0.0,
    reduction: str = "mean",
) -> Tensor:
    """RL with a KL penalty (KL-control): ``loss = −mean((R̃ − b) · log π)``, ``R̃`` detached.

    Value vs gradient: the loss *value* is a surrogate (not −J_KL). Its *gradient* is
    unbiased for −∇J_KL, because ∇J_KL = E_π[(R − β log(π/a)) ∇log π] − β E_π[∇ log π]
    and the last term is zero. The optimum of J_KL is a·exp(R/β)/Z (Korbak et al. 2022).
    """
    shaped = kl_shaped_reward(reward, log_pi, log_a, beta)
    return reinforce_loss(log_pi, shaped, baseline, reduction)
