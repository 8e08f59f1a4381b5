"""Loss functions, one per objective, as pure functions of tensors.

Each takes per-sample sequence log-probabilities ``log_pi`` of the policy (with grad) and
detached quantities (target log-scores, proposal log-probs, rewards), and returns the
mean loss, or per-sample terms with ``reduction="none"``. Their *gradients* are the
estimators of the papers; loss *values* are surrogates unless a docstring says otherwise.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_align.masked import masked_mean

__all__ = ["dpg_loss", "reinforce_loss", "kl_shaped_reward", "rl_kl_loss"]


def reduce_terms(terms: Tensor, reduction: str) -> Tensor:
    """Reduce per-sample loss terms: ``mean``, ``sum`` or ``none`` (the terms themselves)."""
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
    """Distributional policy gradient: DPG (Parshakova et al. 2019, arXiv:1912.08517), GDC
    (Khalifa et al. 2021, arXiv:2012.11635) and its baseline, GDC++ (Korbak et al. 2022,
    arXiv:2206.00761).

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
    return reduce_terms(terms, reduction)


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
    return reduce_terms(terms, reduction)


def kl_shaped_reward(reward: Tensor, log_pi: Tensor, log_a: Tensor, kl_coef: float, entropy_coef: float = 0.0) -> Tensor:
    """``R̃ = R − β·(log π − log a) − γ·log π`` (β = ``kl_coef``): the reward with the k1
    estimates of KL(π‖a) and, with ``entropy_coef`` γ > 0, of the entropy H(π).

    Its mean over π's samples is an unbiased estimate of ``E_π[R] − β·KL(π‖a) + γ·H(π)``
    (γ = 0: the KL-regularised objective J_KL, the ELBO times β; Korbak et al. 2022,
    arXiv:2205.11275). With γ > 0 it is the reverse-KL objective of Yun et al. 2025
    (arXiv:2506.01523, eq. 15), whose optimum is ``a^{β/(β+γ)}·exp(R/(β+γ))/Z``.
    """
    log_pi = log_pi.detach().double()
    shaped = reward.detach().double() - kl_coef * (log_pi - log_a.detach().double())
    return shaped - entropy_coef * log_pi if entropy_coef else shaped


def rl_kl_loss(
    log_pi: Tensor,
    reward: Tensor,
    log_a: Tensor,
    kl_coef: float,
    baseline: Tensor | float = 0.0,
    reduction: str = "mean",
) -> Tensor:
    """RL with a KL penalty (KL-control): ``loss = −mean((R̃ − b) · log π)``, ``R̃`` detached.

    Value vs gradient: the loss *value* is a surrogate (not −J_KL). Its *gradient* is
    unbiased for −∇J_KL, because ∇J_KL = E_π[(R − β log(π/a)) ∇log π] − β E_π[∇ log π]
    (β = ``kl_coef``) and the last term is zero. The optimum of J_KL is a·exp(R/β)/Z
    (Korbak et al. 2022, arXiv:2205.11275).
    """
    shaped = kl_shaped_reward(reward, log_pi, log_a, kl_coef)
    return reinforce_loss(log_pi, shaped, baseline, reduction)


# ----------------------------------------------------------------- PPO (per-token, clipped)
__all__ += ["ppo_policy_loss", "ppo_value_loss", "masked_entropy_bonus"]


def ppo_policy_loss(
    log_pi: Tensor,
    log_pi_old: Tensor,
    advantages: Tensor,
    mask: Tensor | None = None,
    clip: float = 0.2,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's clipped surrogate (Schulman et al. 2017, arXiv:1707.06347), per token.

    ``ρ_t = exp(log π(y_t|·) − log π_old(y_t|·))`` and
    ``L = mean_t max(−A_t·ρ_t, −A_t·clip(ρ_t, 1−ε, 1+ε))`` over the masked tokens.
    Also returns (detached) ``clip_fraction = mean 1[clipped term > unclipped term]`` and
    ``approx_kl = ½·mean (log π − log π_old)²`` (the Ziegler/TRL diagnostics).
    """
    adv = advantages.detach().to(torch.float64)
    log_ratio = log_pi.to(torch.float64) - log_pi_old.detach().to(torch.float64)
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    stats = {
        "clip_fraction": masked_mean((clipped > unclipped).to(torch.float64), mask).detach(),
        "approx_kl": masked_mean(0.5 * log_ratio.detach() ** 2, mask),
    }
    return loss.to(log_pi.dtype), stats


def ppo_value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor | None = None,
    clip: float = 0.2,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's clipped value loss (as in Ziegler et al. 2019, arXiv:1909.08593):

    ``L_v = ½·mean_t max((V_t − R_t)², (V_old,t + clip(V_t − V_old,t, −ε_v, ε_v) − R_t)²)``
    over the masked tokens, ``R_t`` the GAE returns. Also returns (detached)
    ``value_error = mean (V − R)²`` and ``value_clip_fraction``.
    """
    v = values.to(torch.float64)
    v_old = old_values.detach().to(torch.float64)
    ret = returns.detach().to(torch.float64)
    v_clipped = v_old + torch.clamp(v - v_old, -clip, clip)
    err, err_clipped = (v - ret) ** 2, (v_clipped - ret) ** 2
    loss = 0.5 * masked_mean(torch.maximum(err, err_clipped), mask)
    stats = {
        "value_error": masked_mean(err.detach(), mask),
        "value_clip_fraction": masked_mean((err_clipped > err).to(torch.float64).detach(), mask),
    }
    return loss.to(values.dtype), stats


def masked_entropy_bonus(entropy: Tensor, mask: Tensor | None = None, coef: float = 0.0) -> Tensor:
    """Entropy bonus as a loss term: ``−c_H·mean_t H(π(·|y_<t))`` over the masked tokens."""
    return -coef * masked_mean(entropy, mask)


__all__ += ["cdpg_loss"]


def cdpg_loss(
    log_pi: Tensor,
    log_P: Tensor,
    log_q: Tensor,
    log_z_c: Tensor,
    baseline: bool = False,
    detach_advantage: bool = True,
    reduction: str = "mean",
) -> Tensor:
    """Conditional DPG (Korbak et al. 2022, arXiv:2112.00791): DPG with a per-sample ``log Ẑ_c``.

    ``loss = −mean( (P_c/(Ẑ_c q) − [π/q]) · log π(x|c) )``, samples x ~ q(·|c); ``log_z_c``
    holds each sample's own context's estimate. Its expected gradient is
    ``E_c ∇KL(p_c‖π_c)``. Rows whose context has ``Ẑ_c = 0`` (no satisfying sample) give 0.

    ``detach_advantage=False`` (on-policy only) reproduces the released gdc/cdpg code, which
    differentiates through ``A = exp(log P − log π − log Ẑ_c)`` as well: its per-sample
    gradient is ``−A·(1 − log π)·∇log π`` rather than the paper's ``−A·∇log π``.
    """
    log_z_c = torch.as_tensor(log_z_c, dtype=torch.float64, device=log_pi.device).expand(log_pi.shape)
    signal = torch.isfinite(log_z_c)
    safe_z = torch.where(signal, log_z_c, torch.zeros_like(log_z_c))
    if detach_advantage:
        terms = dpg_loss(log_pi, log_P, log_q, safe_z, baseline, True, reduction="none")
    else:
        adv = torch.exp(log_P.detach().to(torch.float64) - log_pi.to(torch.float64) - safe_z)
        if baseline:
            adv = adv - 1.0
        terms = -(adv * log_pi.to(torch.float64)).to(log_pi.dtype)
    terms = torch.where(signal, terms, torch.zeros_like(terms))
    return reduce_terms(terms, reduction)

