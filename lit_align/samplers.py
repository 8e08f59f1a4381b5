"""Sampling from a target EBM without training: the "inference" half of the Bayesian view
of alignment (Korbak et al. 2022, arXiv:2205.11275), with the sampler diagnostics of QRS.

Pure functions of per-sample log quantities for samples ``x_i ~ q``: ``log_P`` (the
unnormalised target, may be ``-inf``) and ``log_q`` (the proposal that produced them).

- **importance resampling** (SIR): draw from the sample with probabilities ∝ P/q; exact only
  as the sample grows, every resampled x is one of the proposals.
- **rejection sampling**: accept x with probability ``P/(M·q)``, exact when ``P ≤ M·q``
  everywhere. For a pointwise target with q = a, ``P/q = b ∈ {0, 1}`` and M = 1: keep the
  samples that satisfy the constraint.
- **quasi-rejection sampling** (QRS, Eikema et al., arXiv:2112.05702; disco, arXiv:2303.05431): accept with probability
  ``min(1, P/(β·q))``. The accepted samples follow ``p_β ∝ min(P, β·q)`` exactly, which
  tends to p as β grows (fidelity) while the acceptance rate ``E_q[min(P/q, β)]/β`` falls.

Everything is in float64 and log space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lit_align.estimators import log_importance_weights

__all__ = [
    "log_weights",
    "importance_resample",
    "rejection_accept",
    "qrs_log_acceptance",
    "qrs_accept",
    "QRSEstimates",
    "qrs_estimates",
    "qrs_log_beta_for_acceptance",
]


log_weights = log_importance_weights  # ``log P − log q`` (``-inf`` where P = 0)


def importance_resample(
    log_P: Tensor, log_q: Tensor, n: int, generator: torch.Generator | None = None, replacement: bool = True
) -> Tensor:
    """Indices of ``n`` samples drawn with probabilities ∝ P/q (sampling-importance-resampling)."""
    log_w = log_weights(log_P, log_q)
    if torch.isneginf(log_w).all():
        raise ValueError("importance resampling: every importance weight is 0 (no sample has P > 0)")
    probs = torch.softmax(log_w, 0)
    return torch.multinomial(probs.cpu(), n, replacement=replacement, generator=generator).to(log_w.device)


def rejection_accept(
    log_P: Tensor, log_q: Tensor, log_bound: float = 0.0, generator: torch.Generator | None = None
) -> Tensor:
    """Boolean accept mask of rejection sampling with ``P ≤ M·q`` (``log_bound = log M``).

    Raises if some sample has ``P/q > M``: the bound is wrong and the output would not be p.
    The default M = 1 is the pointwise target with q = a (``P/q = b``).
    """
    log_ratio = log_weights(log_P, log_q) - log_bound
    if (log_ratio > 1e-6).any():
        worst = float(log_ratio.max())
        raise ValueError(
            f"rejection sampling: P/q exceeds the bound M = exp({log_bound}) by a factor exp({worst:.3g}); "
            "it is only exact when P ≤ M·q everywhere (for a pointwise target, sample from the base a "
            "with M = 1), otherwise use QRS"
        )
    u = torch.rand(log_ratio.shape, generator=generator, dtype=torch.float64).to(log_ratio.device)
    return torch.log(u) < log_ratio


def qrs_log_acceptance(log_P: Tensor, log_q: Tensor, log_beta: float) -> Tensor:
    """``log min(1, P/(β·q))``."""
    return torch.clamp(log_weights(log_P, log_q) - log_beta, max=0.0)


def qrs_accept(log_P: Tensor, log_q: Tensor, log_beta: float, generator: torch.Generator | None = None) -> Tensor:
    """Boolean accept mask of QRS: accept x_i with probability ``min(1, P_i/(β·q_i))``."""
    log_acc = qrs_log_acceptance(log_P, log_q, log_beta)
    u = torch.rand(log_acc.shape, generator=generator, dtype=torch.float64).to(log_acc.device)
    return torch.log(u) < log_acc


@dataclass
class QRSEstimates:
    """IS estimates from samples of q (disco ``QuasiRejectionSamplerEstimator``).

    acceptance_rate: ``E_q[min(P/q, β)]/β``.
    log_z: ``log Ẑ``, Ẑ = E_q[P/q]; log_z_beta: ``log E_q[min(P/q, β)]``, the normaliser of p_β.
    kl_target_qrs: KL(p‖p_β) = log(Z_β/Z) + E_p[max(0, log(P/(βq)))] (0 when β ≥ max P/q).
    tv_target_qrs: TV(p, p_β) = ½ E_q[|P/(Zq) − min(P/q, β)/Z_β|].
    """

    acceptance_rate: float
    log_z: float
    log_z_beta: float
    kl_target_qrs: float
    tv_target_qrs: float

    def metrics(self) -> dict[str, float]:
        return {"qrs/acceptance_rate": self.acceptance_rate, "z": math.exp(self.log_z),
                "qrs/kl_target_qrs": self.kl_target_qrs, "qrs/tv_target_qrs": self.tv_target_qrs}


def qrs_estimates(log_P: Tensor, log_q: Tensor, log_beta: float) -> QRSEstimates:
    log_w = log_weights(log_P, log_q)
    n = log_w.numel()
    if torch.isneginf(log_w).all():
        raise ValueError("QRS estimates: every importance weight is 0 (no sample has P > 0)")
    log_min = torch.clamp(log_w, max=log_beta)  # log min(P/q, β)
    log_z = float(torch.logsumexp(log_w, 0) - math.log(n))
    log_z_beta = float(torch.logsumexp(log_min, 0) - math.log(n))
    acceptance = math.exp(log_z_beta - log_beta)
    p_over_q = torch.exp(log_w - log_z)  # P/(Ẑq): the IS weights of p
    excess = torch.clamp(log_w - log_beta, min=0.0)
    kl = (log_z_beta - log_z) + float(torch.where(p_over_q > 0, p_over_q * excess, torch.zeros_like(excess)).mean())
    tv = 0.5 * float((p_over_q - torch.exp(log_min - log_z_beta)).abs().mean())
    return QRSEstimates(acceptance, log_z, log_z_beta, max(kl, 0.0), tv)


def qrs_log_beta_for_acceptance(log_P: Tensor, log_q: Tensor, rate: float, iterations: int = 100) -> float:
    """The log β whose estimated acceptance rate ``E_q[min(P/q, β)]/β`` is ``rate`` (bisection).

    The rate decreases in β from 1 (β ≤ min P/q) to ``Ẑ/β`` (β ≥ max P/q), so a lower
    rate buys fidelity.
    """
    if not 0 < rate <= 1:
        raise ValueError(f"acceptance rate must be in (0, 1], got {rate}")
    log_w = log_weights(log_P, log_q)
    finite = log_w[torch.isfinite(log_w)]
    if finite.numel() == 0:
        raise ValueError("QRS: every importance weight is 0 (no sample has P > 0)")
    n = log_w.numel()

    def log_rate(lb: float) -> float:
        return float(torch.logsumexp(torch.clamp(log_w, max=lb), 0) - math.log(n)) - lb

    lo, hi = float(finite.min()) - 1.0, float(finite.max()) + 50.0
    target = math.log(rate)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if log_rate(mid) > target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)
