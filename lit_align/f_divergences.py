"""f-DPG: distribution matching toward a target EBM under any f-divergence.

Go et al. 2023, "Aligning Language Models with Preferences through f-divergence Minimization"
(arXiv:2302.08215); the loss follows disco's ``FDivergenceLoss`` (Kruszewski et al. 2023,
arXiv:2303.05431). Pure functions of tensors, like :mod:`lit_align.losses`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_align.losses import reduce_terms

__all__ = ["F_DIVERGENCES", "FDPG_DEFAULT_EPSILON", "fdpg_log_ratio", "fdpg_pseudo_reward", "fdpg_loss", "leave_one_out_baseline"]

_LOG2 = 0.6931471805599453


def _f_prime(divergence: str, log_t: Tensor) -> Tensor:
    """``f'(t)`` as a function of ``log t`` (float64), t = π/p (Go et al. 2023, arXiv:2302.08215)."""
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
    ``Pointwise(scorer, epsilon=ε)`` with ε from ``FDPG_DEFAULT_EPSILON``); the others stay
    finite.
    """
    if divergence not in F_DIVERGENCES:
        raise ValueError(f"divergence must be one of {F_DIVERGENCES}, got {divergence!r}")
    log_t = fdpg_log_ratio(log_pi, log_P, log_z)
    if divergence in _UNBOUNDED_AT_ZERO and torch.isposinf(log_t).any():
        raise ValueError(
            f"f-DPG with divergence {divergence!r}: {int(torch.isposinf(log_t).sum())} samples have target "
            "probability 0 (a hard pointwise constraint), so the pseudo-reward −f'(π/p) is −∞. Use a smoothed "
            f"target b + ε, e.g. Pointwise(scorer, epsilon={FDPG_DEFAULT_EPSILON[divergence]:g}) ("
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
    """f-DPG (Go et al. 2023, arXiv:2302.08215; disco's ``FDivergenceLoss``, arXiv:2303.05431).

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
