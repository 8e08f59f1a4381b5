"""Importance-sampling estimators, as pure functions of tensors.

The partition function Ẑ and the divergences KL(p‖π), TV(p, π) that GDC logs and uses to
update its proposal (Khalifa et al. 2021, arXiv:2012.11635), JS(p, π) (Go et al. 2023,
arXiv:2302.08215), the forgetting KL(π‖a) (Korbak et al. 2022, arXiv:2206.00761) and the
per-context Ẑ_c of CDPG (Korbak et al. 2022, arXiv:2112.00791).

Every function takes per-sample log quantities for samples ``x_i ~ q``:

- ``log_P``: log of the unnormalised target ``P(x) = a(x)·b(x)`` (may be ``-inf``),
- ``log_q``: log-probability under the proposal that actually produced the samples,
- ``log_pi``: log-probability under the policy being trained,
- ``log_a``: log-probability under the base (prior) LM.

All arithmetic is done in float64 and in log space: sequence log-probs of 40–200 tokens
make ``P/q`` span many orders of magnitude. Samples with ``P = 0`` contribute 0 to the
target-weighted sums (never NaN).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "log_importance_weights",
    "log_z_hat",
    "kl_target_policy",
    "tv_target_policy",
    "js_target_policy",
    "kl_policy_base",
    "policy_moments",
    "effective_sample_size",
]


def _f64(x: Tensor) -> Tensor:
    return x.detach().to(torch.float64)


def log_importance_weights(log_P: Tensor, log_q: Tensor) -> Tensor:
    """``log w_i = log P(x_i) − log q(x_i)`` (float64; ``-inf`` where P = 0)."""
    return _f64(log_P) - _f64(log_q)


def log_z_hat(log_P: Tensor, log_q: Tensor) -> Tensor:
    """``log Ẑ`` with ``Ẑ = (1/N) Σ_i P(x_i)/q(x_i)`` — unbiased for Z (Khalifa et al. 2021, arXiv:2012.11635)."""
    log_w = log_importance_weights(log_P, log_q)
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.numel())


def _target_coefficients(log_P: Tensor, log_q: Tensor, log_z: Tensor | float) -> Tensor:
    """``c_i = P_i / (N·Ẑ·q_i)``, the self-normalised weight of sample i under p."""
    log_w = log_importance_weights(log_P, log_q)
    log_z = torch.as_tensor(log_z, dtype=torch.float64, device=log_w.device)
    return torch.exp(log_w - log_z - math.log(log_w.numel()))


def kl_target_policy(
    log_P: Tensor, log_q: Tensor, log_pi: Tensor, log_z: Tensor | float | None = None
) -> Tensor:
    """KL(p‖π) ≈ Σ_i P_i/(N Ẑ q_i) · (log P_i − log Ẑ − log π_i).

    With ``log_z`` left to None, Ẑ is estimated from the same samples, and the formula
    reduces to the GDC/disco form ``−log Ẑ + 1/(NẐ) Σ (P_i/q_i)(log P_i − log π_i)``.
    Pass a running ``log_z`` to use a lower-variance estimate of Z. KL(p‖q) is
    ``kl_target_policy(log_P, log_q, log_q)``.
    """
    if log_z is None:
        log_z = log_z_hat(log_P, log_q)
    log_z = torch.as_tensor(log_z, dtype=torch.float64)
    c = _target_coefficients(log_P, log_q, log_z)
    log_ratio = _f64(log_P) - log_z.to(c.device) - _f64(log_pi)
    terms = torch.where(c > 0, c * log_ratio, torch.zeros_like(c))
    return terms.sum()


def tv_target_policy(
    log_P: Tensor, log_q: Tensor, log_pi: Tensor, log_z: Tensor | float | None = None
) -> Tensor:
    """TV(p, π) ≈ (1/2N) Σ_i |π_i/q_i − P_i/(Ẑ q_i)|. TV(p, q) passes ``log_pi = log_q``."""
    if log_z is None:
        log_z = log_z_hat(log_P, log_q)
    n = log_q.numel()
    pi_over_q = torch.exp(_f64(log_pi) - _f64(log_q))
    p_over_q = _target_coefficients(log_P, log_q, log_z) * n
    return 0.5 * (pi_over_q - p_over_q).abs().mean()


def js_target_policy(
    log_P: Tensor, log_q: Tensor, log_pi: Tensor, log_z: Tensor | float | None = None
) -> Tensor:
    """JS(p, π) = ½KL(p‖m) + ½KL(π‖m), m = (p+π)/2, each term IS-weighted by q (nats)."""
    if log_z is None:
        log_z = log_z_hat(log_P, log_q)
    log_z = torch.as_tensor(log_z, dtype=torch.float64)
    log_p = _f64(log_P) - log_z.to(log_P.device)
    log_pi = _f64(log_pi)
    log_q = _f64(log_q)
    log_m = torch.logaddexp(log_p, log_pi) - math.log(2.0)
    p_over_q = torch.exp(log_p - log_q)
    pi_over_q = torch.exp(log_pi - log_q)
    kl_pm = torch.where(p_over_q > 0, p_over_q * (log_p - log_m), torch.zeros_like(p_over_q))
    kl_pim = torch.where(pi_over_q > 0, pi_over_q * (log_pi - log_m), torch.zeros_like(pi_over_q))
    return 0.5 * kl_pm.mean() + 0.5 * kl_pim.mean()


def kl_policy_base(log_pi: Tensor, log_a: Tensor, log_q: Tensor | None = None) -> Tensor:
    """KL(π‖a): ``mean(log π − log a)`` on π's samples; ``mean((π/q)(log π − log a))`` on q's."""
    diff = _f64(log_pi) - _f64(log_a)
    if log_q is None:
        return diff.mean()
    return (torch.exp(_f64(log_pi) - _f64(log_q)) * diff).mean()


def policy_moments(values: Tensor, log_pi: Tensor | None = None, log_q: Tensor | None = None) -> Tensor:
    """E_π[φ]: plain mean on π's samples, or ``mean((π/q)·φ)`` on q's. ``values``: (N,) or (N, k)."""
    values = _f64(values)
    if log_q is None or log_pi is None:
        return values.mean(0)
    ratio = torch.exp(_f64(log_pi) - _f64(log_q))
    if values.dim() > 1:
        ratio = ratio.unsqueeze(-1)
    return (ratio * values).mean(0)


def effective_sample_size(log_w: Tensor) -> Tensor:
    """Normalised ESS ``(Σw)²/Σw² ÷ N`` in [1/N, 1]; 0 when every weight is 0."""
    log_w = _f64(log_w)
    n = log_w.numel()
    if torch.isneginf(log_w).all():
        return torch.zeros((), dtype=torch.float64)
    return torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)) / n


# ---------------------------------------------------------------- per-context (CDPG, arXiv:2112.00791)
__all__ += ["log_z_per_context", "per_context"]


def log_z_per_context(log_P: Tensor, log_q: Tensor, context_index: Tensor, n_contexts: int | None = None) -> Tensor:
    """``log Ẑ_c`` for each context c: ``Ẑ_c = (1/M_c) Σ_{j: c_j = c} P_j/q_j`` (CDPG, arXiv:2112.00791).

    ``context_index`` (N,) says which context each sample belongs to; the result has one
    entry per context (``n_contexts``, default ``max + 1``), ``-inf`` where no sample of c
    has P > 0, ``nan`` for a context with no sample at all.
    """
    log_w = log_importance_weights(log_P, log_q)
    idx = context_index.to(log_w.device).long()
    c = int(idx.max()) + 1 if n_contexts is None else n_contexts
    out = torch.full((c,), -math.inf, dtype=torch.float64, device=log_w.device)
    out = out.scatter_reduce(0, idx, log_w, reduce="amax", include_self=True)
    shift = torch.where(torch.isfinite(out), out, torch.zeros_like(out))
    sums = torch.zeros_like(out).index_add(0, idx, torch.exp(log_w - shift[idx]))
    counts = torch.zeros_like(out).index_add(0, idx, torch.ones_like(log_w))
    return torch.log(sums) + shift - torch.log(counts)


def per_context(fn, context_index: Tensor, log_z_c: Tensor, *tensors: Tensor) -> Tensor:
    """``fn(*tensors_of_c, log_z_c[c])`` for every context c (``nan`` where Ẑ_c is 0 or undefined).

    E.g. ``per_context(kl_target_policy, idx, log_z_c, log_P, log_q, log_pi)`` gives the
    per-context KL(p_c‖π_c) that CDPG averages over contexts (Korbak et al. 2022, arXiv:2112.00791).
    """
    out = torch.full((log_z_c.numel(),), math.nan, dtype=torch.float64)
    idx = context_index.long().cpu()
    for c in range(log_z_c.numel()):
        rows = (idx == c).nonzero().squeeze(-1)
        if rows.numel() and torch.isfinite(log_z_c[c]):
            out[c] = fn(*(t.detach().cpu()[rows] for t in tensors), log_z_c[c].detach().cpu())
    return out
