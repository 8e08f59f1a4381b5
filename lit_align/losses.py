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


def kl_shaped_reward(reward: Tensor, log_pi: Tensor, log_a: Tensor, beta: float, entropy_coef: float = 0.0) -> Tensor:
    """``R̃ = R − β·(log π − log a) − γ·log π``: the reward with the k1 estimates of KL(π‖a)
    and, with ``entropy_coef`` γ > 0, of the entropy H(π) (§2, §6.2, §7).

    Its mean over π's samples is an unbiased estimate of ``E_π[R] − β·KL(π‖a) + γ·H(π)``
    (γ = 0: the KL-regularised objective J_KL, the ELBO times β). With γ > 0 it is Yun et
    al.'s reverse-KL objective (eq. 15), whose optimum is ``a^{β/(β+γ)}·exp(R/(β+γ))/Z``.
    """
    log_pi = log_pi.detach().double()
    shaped = reward.detach().double() - beta * (log_pi - log_a.detach().double())
    return shaped - entropy_coef * log_pi if entropy_coef else shaped


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


# ----------------------------------------------------------------- PPO (per-token, clipped)
__all__ += ["ppo_policy_loss", "ppo_value_loss", "masked_entropy_bonus"]


def ppo_policy_loss(
    log_pi: Tensor,
    log_pi_old: Tensor,
    advantages: Tensor,
    mask: Tensor | None = None,
    clip: float = 0.2,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's clipped surrogate (Schulman et al. 2017), per token (methods.md §3.2, §7).

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
    """PPO's clipped value loss (methods.md §3.2, §7):

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
    """Entropy bonus as a loss term: ``−c_H·mean_t H(π(·|y_<t))`` over the masked tokens (§7)."""
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
    """Conditional DPG (CDPG), methods.md §4.1–4.2: DPG with a per-sample ``log Ẑ_c``.

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


# ------------------------------------------------------------------ f-DPG (methods.md §7, §9.4)
__all__ += ["F_DIVERGENCES", "FDPG_DEFAULT_EPSILON", "fdpg_log_ratio", "fdpg_pseudo_reward", "fdpg_loss", "leave_one_out_baseline"]

_LOG2 = 0.6931471805599453


def _f_prime(divergence: str, log_t: Tensor) -> Tensor:
    """``f'(t)`` as a function of ``log t`` (float64), t = π/p (the table of methods.md §7)."""
    if divergence == "kl":  # forward KL(p‖π): f(t) = −log t
        return -torch.exp(-log_t)
    if divergence == "rkl":  # reverse KL(π‖p): f(t) = t log t
        return log_t + 1.0
    if divergence == "tv":  # TV(π, p): f(t) = |t − 1|/2
        return 0.5 * torch.sign(log_t)
    if divergence == "js":  # f(t) = t log t − (1+t) log((1+t)/2): D_f = KL(π‖m) + KL(p‖m) = 2·JS
        return _LOG2 - torch.nn.functional.softplus(-log_t)
    if divergence == "chi2":  # χ²(p‖π) = Σ (p−π)²/π: f(t) = t + 1/t − 2
        return 1.0 - torch.exp(-2.0 * log_t)
    if divergence == "rchi2":  # χ²(π‖p) = Σ (π−p)²/p: f(t) = (t − 1)²
        return 2.0 * torch.expm1(log_t)
    raise ValueError(f"divergence must be one of {F_DIVERGENCES}, got {divergence!r}")


F_DIVERGENCES = ("kl", "rkl", "js", "tv", "chi2", "rchi2")
_UNBOUNDED_AT_ZERO = ("rkl", "rchi2")  # f'(π/p) → +∞ where p = 0
# default smoothing b + ε of hard pointwise targets for those (DPG's ``pointwise_epsilon``):
# CDPG's 1e-4 for reverse KL (reward log(p/π) − 1 ~ log ε); reverse χ²'s reward −2(π/p − 1)
# grows like 1/ε on violating samples, and with 1e-4 sampled training stalls (tests/test_fdpg.py)
FDPG_DEFAULT_EPSILON = {"rkl": 1e-4, "rchi2": 1e-2}


def fdpg_log_ratio(log_pi: Tensor, log_P: Tensor, log_z: Tensor | float) -> Tensor:
    """``log t = log π − log p = log π − (log P − log Ẑ)`` (float64, detached; +inf where P = 0)."""
    log_z = torch.as_tensor(log_z, dtype=torch.float64, device=log_pi.device)
    return log_pi.detach().to(torch.float64) - (log_P.detach().to(torch.float64) - log_z)


def fdpg_pseudo_reward(log_pi: Tensor, log_P: Tensor, log_z: Tensor | float, divergence: str = "js") -> Tensor:
    """The f-DPG pseudo-reward ``R = −f'(π/p)`` of each sample (float64, detached).

    Forward KL gives ``p/π`` (DPG's), reverse KL ``log(p/π) − 1`` (RLHF's shaped reward when
    ``p ∝ a·e^{r/β}``). Where the target is 0 (a violated hard pointwise constraint),
    reverse KL and reverse χ² have R = −∞: they raise ``ValueError`` (smooth the target,
    ``Pointwise(scorer, epsilon=ε)`` with ε from ``FDPG_DEFAULT_EPSILON``, methods.md §7
    pitfall); the others stay finite.
    """
    if divergence not in F_DIVERGENCES:
        raise ValueError(f"divergence must be one of {F_DIVERGENCES}, got {divergence!r}")
    log_t = fdpg_log_ratio(log_pi, log_P, log_z)
    if divergence in _UNBOUNDED_AT_ZERO and torch.isposinf(log_t).any():
        raise ValueError(
            f"f-DPG with divergence {divergence!r}: {int(torch.isposinf(log_t).sum())} samples have target "
            "probability 0 (a hard pointwise constraint), so the pseudo-reward −f'(π/p) is −∞. Use a smoothed "
            f"target b + ε, e.g. Pointwise(scorer, epsilon={FDPG_DEFAULT_EPSILON[divergence]:g}) (methods.md §7; "
            "DPG does this itself, see its `pointwise_epsilon`)."
        )
    return -_f_prime(divergence, log_t)


def fdpg_loss(
    log_pi: Tensor,
    log_P: Tensor,
    log_q: Tensor,
    log_z: Tensor | float,
    divergence: str = "js",
    baseline: Tensor | float = 0.0,
    reduction: str = "mean",
) -> Tensor:
    """f-DPG (Go et al. 2023; disco ``FDivergenceLoss``), methods.md §7 and §9.4.

    ``loss = −mean( (π/q) · (R − B) · log π )`` with the pseudo-reward ``R = −f'(π/p)``,
    ``p = P/Ẑ``, samples x ~ q, ``π/q`` and ``R`` detached. Its expected gradient is
    ``E_π[f'(π/p) ∇log π] = ∇_θ D_f(π‖p)`` for any baseline B that does not depend on the
    sample (``E_π[∇ log π] = 0``); B may be a per-sample tensor (e.g. leave-one-out).

    ``divergence``: ``kl`` (forward KL(p‖π), DPG: with B = 1 this is ``dpg_loss``), ``rkl``
    (KL(π‖p)), ``js`` (f = t log t − (1+t) log((1+t)/2), i.e. 2·JS(π, p)), ``tv``,
    ``chi2`` (χ²(p‖π)), ``rchi2`` (χ²(π‖p)). On-policy, pass ``log_q = log_pi.detach()``.
    """
    reward = fdpg_pseudo_reward(log_pi, log_P, log_z, divergence)
    ratio = torch.exp(log_pi.detach().to(torch.float64) - log_q.detach().to(torch.float64))
    base = torch.as_tensor(baseline, dtype=torch.float64, device=log_pi.device)
    coef = ratio * (reward - base.detach())
    terms = -coef.to(log_pi.dtype) * log_pi
    return reduce_terms(terms, reduction)


def leave_one_out_baseline(reward: Tensor, weight: Tensor | None = None) -> Tensor:
    """Per-sample baseline ``B_i = Σ_{j≠i} w_j R_j / Σ_{j≠i} w_j`` (w = π/q; 1 on-policy).

    It estimates E_π[R] without sample i, so it does not depend on x_i and the policy
    gradient stays unbiased. With one sample (or no other weight) B = 0.
    """
    r = reward.detach().to(torch.float64)
    w = torch.ones_like(r) if weight is None else weight.detach().to(torch.float64)
    num = (w * r).sum() - w * r
    den = w.sum() - w
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(r))
